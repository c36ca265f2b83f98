"""deploy/kubernetes/: the core objects against Kubernetes' own schemas (kubernetes-validate),
the security and probe settings every exporter container must have, selectors and port
names that actually connect the objects, the exporter flags and probe config they pass
(parsed by the exporter's own parsers), and the PrometheusRule: the generator's output,
holding exactly the groups of alerts/*.rules.yml, checked by the real promtool."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from poolwatch.exporter.auth_modules import parse_probe_config
from poolwatch.exporter.settings import parse_settings
from prom_support import REPO, RULE_FILES, load_generator
from support import require_tool, skip_or_fail

K8S = REPO / "deploy" / "kubernetes"
CORE_KINDS = {"Deployment", "StatefulSet", "Service", "ConfigMap", "Secret"}
OPERATOR_KINDS = {"ServiceMonitor", "PodMonitor", "Probe", "PrometheusRule"}
KUBERNETES_VERSION = "1.30.0"  # an old enough API level that current clusters all serve


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path, doc))
    return out


def by_kind(kind: str) -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p, d in manifests() if d["kind"] == kind]


def pod_specs() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p, d in manifests() if d["kind"] in ("Deployment", "StatefulSet")]


def exporter_containers() -> list[tuple[Path, dict[str, Any], dict[str, Any]]]:
    out = []
    for path, doc in pod_specs():
        spec = doc["spec"]["template"]["spec"]
        for container in spec["containers"]:
            if container["image"].startswith("poolwatch-exporter"):
                out.append((path, spec, container))
    return out


def test_every_manifest_is_a_known_kind_and_kustomizations_list_them() -> None:
    docs = manifests()
    assert {d["kind"] for _, d in docs} == CORE_KINDS | OPERATOR_KINDS
    for kustomization in K8S.rglob("kustomization.yaml"):
        listed = yaml.safe_load(kustomization.read_text())["resources"]
        folder = kustomization.parent
        for entry in listed:
            assert (folder / entry).exists(), f"{kustomization}: {entry} does not exist"
        files = {p.name for p in folder.glob("*.yaml")} - {"kustomization.yaml"}
        examples = {n for n in files if n.endswith(".example.yaml")}
        assert files - examples == {e for e in listed if e.endswith(".yaml")}, kustomization
        assert not examples & set(listed), "example Secrets are created by the user"


def validator() -> Any:
    try:
        import kubernetes_validate
    except ImportError:
        skip_or_fail("kubernetes-validate is not installed (pip install -e '.[dev]')")
    return kubernetes_validate


def test_core_objects_validate_against_the_kubernetes_schemas() -> None:
    kubernetes_validate = validator()
    checked = 0
    for path, doc in manifests():
        if doc["kind"] not in CORE_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.relative_to(REPO)} {doc['kind']}: {exc.message}")
        checked += 1
    assert checked >= 10


def test_a_broken_manifest_is_caught() -> None:
    kubernetes_validate = validator()
    _, deployment = by_kind("Deployment")[0]
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFS"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_exporter_containers_are_locked_down_and_probed_on_healthz() -> None:
    found = exporter_containers()
    assert len(found) == 3  # one per server, sidecar, /probe
    for path, spec, container in found:
        where = f"{path.relative_to(REPO)}"
        pod_sc, sc = spec.get("securityContext", {}), container["securityContext"]
        assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
        assert sc.get("runAsUser", pod_sc.get("runAsUser")) == 10001, where
        assert sc["readOnlyRootFilesystem"] is True, where
        assert sc["allowPrivilegeEscalation"] is False, where
        assert sc["capabilities"]["drop"] == ["ALL"], where
        assert spec["automountServiceAccountToken"] is False, where
        assert container["resources"]["requests"]["memory"], where
        assert container["resources"]["limits"]["memory"], where
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe in ("livenessProbe", "readinessProbe"):
            http = container[probe]["httpGet"]
            assert http["path"] == "/healthz" and http["port"] == "metrics", (where, probe)
        settings = parse_settings(container["args"], environ={})
        assert settings.listen_port == ports["metrics"] == 19187, where
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        secrets = {v["name"]: v for v in spec["volumes"] if "secret" in v}
        if settings.dsn_file:
            assert settings.dsn is None, f"{where}: the DSN comes from a file, not a flag"
            volume = mounts[str(Path(settings.dsn_file).parent)]
            assert volume in secrets, f"{where}: --dsn-file is not on a Secret volume"
        else:
            assert settings.config_file, f"{where}: neither --dsn-file nor --config.file"
        assert not any("password" in str(e).lower() for e in container.get("env", [])), where


def test_the_probe_config_map_is_a_valid_config_file(tmp_path: Path) -> None:
    ((_, config_map),) = by_kind("ConfigMap")
    _, _, container = next(c for c in exporter_containers() if "probe" in str(c[0]))
    settings = parse_settings(container["args"], environ={})
    name = Path(str(settings.config_file)).name
    data = yaml.safe_load(config_map["data"][name])
    # the Secret's file, where the pod mounts it, stands here in tmp_path
    module = data["auth_modules"]["monitor"]["userpass"]
    secret_file = Path(module["password_file"])
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert str(secret_file.parent) in mounts
    (tmp_path / secret_file.name).write_text("from-the-secret\n")
    module["password_file"] = secret_file.name
    config = parse_probe_config(data, tmp_path)
    assert config.auth_modules["monitor"].password == "from-the-secret"
    assert config.allowed and config.default_auth_module == "monitor"
    ((_, probe),) = by_kind("Probe")
    assert probe["spec"]["prober"]["path"] == "/probe"
    assert probe["spec"]["module"] in config.auth_modules
    from poolwatch.exporter.probe_address import parse_address

    for target in probe["spec"]["targets"]["staticConfig"]["static"]:
        address = parse_address(target)
        assert any(p.matches(address) for p in config.allowed), target


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_selectors_and_port_names_connect_the_objects() -> None:
    services = by_kind("Service")
    workloads = pod_specs()
    for path, service in services:
        pods = [
            d
            for _, d in workloads
            if _labels_match(
                service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"]
            )
        ]
        assert len(pods) == 1, f"{path}: the Service selects {len(pods)} workloads"
        ports = {
            p["name"] for c in pods[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, path
    for _, workload in workloads:
        assert _labels_match(
            workload["spec"]["selector"]["matchLabels"],
            workload["spec"]["template"]["metadata"]["labels"],
        )
    for path, monitor in by_kind("ServiceMonitor"):
        matched = [
            s
            for _, s in services
            if _labels_match(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        assert len(matched) == 1, f"{path}: selects {len(matched)} Services"
        names = {p["name"] for p in matched[0]["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= names, path
    for path, monitor in by_kind("PodMonitor"):
        matched = [
            w
            for _, w in workloads
            if _labels_match(
                monitor["spec"]["selector"]["matchLabels"],
                w["spec"]["template"]["metadata"]["labels"],
            )
        ]
        assert len(matched) == 1, f"{path}: selects {len(matched)} workloads"
        ports = {
            p["name"]
            for c in matched[0]["spec"]["template"]["spec"]["containers"]
            for p in c["ports"]
        }
        assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} <= ports, path


def test_the_instrumented_app_writes_multiprocess_files_to_an_empty_dir() -> None:
    ((_, app),) = [(p, d) for p, d in pod_specs() if p.parent.name == "app"]
    spec = app["spec"]["template"]["spec"]
    container = spec["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    directory = env["PROMETHEUS_MULTIPROC_DIR"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volume = next(v for v in spec["volumes"] if v["name"] == mounts[directory])
    assert "emptyDir" in volume
    assert 'rm -rf "${PROMETHEUS_MULTIPROC_DIR:?}"/*' in " ".join(container["args"])
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_prometheusrule_is_the_generators_output_and_holds_every_rule_group() -> None:
    path = K8S / "rules" / "prometheusrule.yaml"
    generated = load_generator().generated_files()
    assert path.read_text() == generated[path], (
        "deploy/kubernetes/rules/prometheusrule.yaml differs from dashboards/generate.py: "
        "run it and commit"
    )
    rule = yaml.safe_load(path.read_text())
    expected = [g for f in sorted(RULE_FILES) for g in yaml.safe_load(f.read_text())["groups"]]
    assert rule["spec"]["groups"] == expected
    assert len(expected) >= 6


def test_prometheusrule_groups_pass_promtool(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    rule = yaml.safe_load((K8S / "rules" / "prometheusrule.yaml").read_text())
    extracted = tmp_path / "from-prometheusrule.yml"
    extracted.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    result = subprocess.run(
        [promtool, "check", "rules", str(extracted)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    alerts = sum("alert" in r for g in rule["spec"]["groups"] for r in g["rules"])
    assert (
        f"{alerts + sum('record' in r for g in rule['spec']['groups'] for r in g['rules'])} rules found"
        in result.stdout
    )
