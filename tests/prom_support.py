"""Real Prometheus and Alertmanager processes for tests, on free loopback ports.

``start_prometheus(config, tmp)`` / ``start_alertmanager(config, tmp)`` run the Debian
binaries with a throw-away data directory, wait until they answer ``/-/ready`` and return a
handle with the base URL; ``stop()`` ends the process (and only that process).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from support import free_port, require_tool, until

READY_TIMEOUT_S = 60.0


def http_get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """GET ``url``: (status, body); HTTP errors are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class Process:
    """A server process started by a test, with its base URL and log file."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    workdir: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the process's combined stdout/stderr, for failure messages."""
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Block until ``/-/ready`` answers 200, or fail with the log."""

        def ready_status() -> int:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited ({self.proc.returncode}):\n{self.log_tail()}"
                )
            return http_get(self.url + "/-/ready", timeout=2)[0]

        try:
            until(
                ready_status,
                equals=200,
                timeout=timeout,
                interval=0.1,
                catch=(OSError,),
                what=f"{self.name} /-/ready",
            )
        except AssertionError as exc:
            raise RuntimeError(f"{exc}\n{self.log_tail()}") from None

    def stop(self) -> None:
        """Terminate this process (SIGTERM, then SIGKILL) and wait for it."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)


def _spawn(name: str, argv: list[str], url: str, workdir: Path) -> Process:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    handle = Process(name=name, url=url, proc=proc, log=log, workdir=workdir)
    try:
        handle.wait_ready()
    except BaseException:
        handle.stop()
        raise
    return handle


def _start_with_config(
    name: str, tool: str, config: dict[str, Any], workdir: Path, *flags: str
) -> Process:
    """Run ``tool`` with ``config`` written as ``<name>.yml``, data in ``workdir/data``, on a
    free loopback port, and wait until it is ready."""
    binary = require_tool(tool)
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / f"{name}.yml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    argv = [
        binary,
        f"--config.file={config_file}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=info",
        *(flag.replace("{data}", str(workdir / "data")) for flag in flags),
    ]
    return _spawn(name, argv, f"http://127.0.0.1:{port}", workdir)


def start_prometheus(config: dict[str, Any], workdir: Path) -> Process:
    """Run the real ``prometheus`` with ``config`` (a dict written as YAML) on loopback."""
    flags = ("--storage.tsdb.path={data}", "--web.enable-lifecycle")
    return _start_with_config("prometheus", "prometheus", config, workdir, *flags)


def start_alertmanager(config: dict[str, Any], workdir: Path) -> Process:
    """Run the real Alertmanager (Debian's ``prometheus-alertmanager``) on loopback."""
    flags = (
        "--storage.path={data}",
        "--cluster.listen-address=",  # no gossip port: a single, private instance
    )
    return _start_with_config("alertmanager", "prometheus-alertmanager", config, workdir, *flags)


def prom_api(base_url: str, path: str, **params: str) -> dict[str, Any]:
    """GET a Prometheus HTTP API endpoint; the decoded JSON whatever the status."""
    query = urllib.parse.urlencode(params)
    status, body = http_get(f"{base_url}/api/v1/{path}" + (f"?{query}" if query else ""))
    try:
        data: dict[str, Any] = json.loads(body)
    except ValueError:
        data = {"status": "error", "error": f"HTTP {status}: {body[:200]!r}"}
    data.setdefault("httpStatus", status)
    return data


def spawn_exporter(
    argv: list[str], log_path: Path, stop: contextlib.ExitStack
) -> subprocess.Popen[bytes]:
    """Run ``argv`` (a ``poolwatch-exporter`` command line) with its output in ``log_path``;
    stopped (SIGTERM, then SIGKILL) when ``stop`` closes."""
    log = log_path.open("wb")
    stop.callback(log.close)
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def end() -> None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)

    stop.callback(end)
    return proc


def wait_exporter_up(
    proc: subprocess.Popen[bytes], metrics_url: str, log_path: Path, *families: str
) -> None:
    """Wait until the exporter's ``/metrics`` reports each of ``families`` (``pg_up``...) at 1."""

    def not_up_yet() -> list[str]:
        assert proc.poll() is None, log_path.read_text()
        status, body = http_get(metrics_url, timeout=5)
        return [
            name
            for name in families
            if status != 200 or not re.search(rb"^%s 1(\.0)?$" % name.encode(), body, re.M)
        ]

    until(
        not_up_yet,
        equals=[],
        timeout=60,
        interval=0.5,
        catch=(OSError,),
        what="poolwatch-exporter to report " + ", ".join(f"{name} 1" for name in families),
    )


def fast_rules(directory: Path) -> str:
    """alerts/*.rules.yml copied into ``directory`` with every ``for:`` shortened to 1 s;
    the glob to put in ``rule_files``."""
    directory.mkdir()
    for path in RULE_FILES:
        text = re.sub(r"(?m)^(\s+for:\s*)\S+\s*$", r"\g<1>1s", path.read_text())
        (directory / path.name).write_text(text)
    return str(directory / "*.rules.yml")


def active_alerts(prometheus: Process) -> dict[str, list[dict[str, Any]]]:
    """Prometheus's pending and firing alerts, by alert name."""
    result = prom_api(prometheus.url, "alerts")
    assert result["status"] == "success", result
    out: dict[str, list[dict[str, Any]]] = {}
    for alert in result["data"]["alerts"]:
        out.setdefault(alert["labels"]["alertname"], []).append(alert)
    return out


def panels_without_data(
    prometheus: Process, filenames: Iterable[str], core: Mapping[str, Iterable[str]]
) -> list[str]:
    """Check that every query of these dashboards evaluates over the last minute, and return
    the core panels (titles by file name in ``core``) whose queries have no data now."""
    end = time.time()
    empty: list[str] = []
    for filename in filenames:
        dashboard = load_dashboards()[filename]
        for where, expr in dashboard_exprs(dashboard):
            query = substitute_variables(expr)
            window = {"start": str(end - 60), "end": str(end), "step": "1"}
            result = prom_api(prometheus.url, "query_range", query=query, **window)
            assert result["status"] == "success", f"{filename} {where}: {result.get('error')}"
        titles = set(core.get(filename, ()))
        for panel in dashboard_panels(dashboard):
            if panel["title"] not in titles:
                continue
            for target in panel["targets"]:
                # Grafana's $__rate_interval grows with the time range; 5m covers the run.
                query = substitute_variables(target["expr"], rate_interval="5m")
                result = prom_api(prometheus.url, "query", query=query, time=str(end))
                values = [r["value"][1] for r in result["data"]["result"]]
                if not [v for v in values if v != "NaN"]:
                    empty.append(f"{filename} {panel['title']!r} {target['refId']}: {query}")
    return empty


# --- PromQL and rule-file helpers (no parser in the Debian packages: a careful tokenizer) -----

REPO = Path(__file__).resolve().parent.parent
ALERTS_DIR = REPO / "alerts"
DASHBOARDS_DIR = REPO / "dashboards"
RULE_FILES = sorted(ALERTS_DIR.glob("*.rules.yml"))
RULE_TESTS = sorted((ALERTS_DIR / "tests").glob("*.test.yml"))
DASHBOARD_FILES = sorted(DASHBOARDS_DIR.glob("*.json"))


def load_generator() -> Any:
    """dashboards/generate.py as a module (it puts its sibling modules on sys.path)."""
    spec = importlib.util.spec_from_file_location("generate", DASHBOARDS_DIR / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Metrics Prometheus itself provides, which no poolwatch module registers.
PROMETHEUS_BUILTIN_METRICS = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})
_KEYWORDS = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
    }
)
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def _strip(expr: str) -> str:
    """``expr`` without strings, label matchers, ranges and grouping label lists."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"'(?:[^'\\]|\\.)*'", "''", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    return _GROUPING.sub(" ", expr)


def promql_selectors(expr: str) -> set[str]:
    """Metric (and recording rule) names an expression selects."""
    stripped = _strip(expr)
    names = set()
    for match in _IDENT.finditer(stripped):
        name = match.group(0)
        rest = stripped[match.end() :].lstrip()
        before = stripped[: match.start()]
        if rest.startswith("(") or name.lower() in _KEYWORDS:
            continue  # a function call or an operator keyword
        if before.endswith("$") or re.search(r"[0-9.]$", before):
            continue  # a template variable or part of a number (1e3)
        names.add(name)
    return names


def rate_arguments(expr: str) -> set[str]:
    """Names of the series inside every rate(), irate() and increase() of ``expr``."""
    cleaned = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    found = set()
    for match in re.finditer(r"\b(rate|irate|increase)\s*\(\s*([A-Za-z_:][A-Za-z0-9_:]*)", cleaned):
        found.add(match.group(2))
    return found


def histogram_base(name: str) -> str:
    """``x`` for ``x_bucket`` / ``x_sum`` / ``x_count``, else ``name``."""
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def load_rule_groups() -> list[tuple[Path, dict[str, Any]]]:
    """Every rule group of every alerts/*.rules.yml file, with its file."""
    out = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            out.append((path, group))
    return out


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule (dicts as in the YAML)."""
    return [r for _, g in load_rule_groups() for r in g["rules"] if "alert" in r]


def recording_rule_names() -> set[str]:
    """Names of every recording rule."""
    return {r["record"] for _, g in load_rule_groups() for r in g["rules"] if "record" in r}


def load_dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard JSON by file name."""
    return {p.name: json.loads(p.read_text()) for p in DASHBOARD_FILES}


def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    out = []
    for panel in dashboard_panels(dashboard):
        for tgt in panel.get("targets", []):
            out.append((f"panel {panel['id']} {panel['title']!r} {tgt['refId']}", tgt["expr"]))
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            match = re.fullmatch(r"\s*label_values\((.*),\s*([A-Za-z_]\w*)\s*\)\s*", query)
            assert match, f"variable {var['name']}: not a label_values() query: {query}"
            out.append((f"variable {var['name']}", match.group(1)))
    return out


def substitute_variables(expr: str, rate_interval: str = "1m") -> str:
    """A panel expression with Grafana's variables replaced by values Prometheus accepts
    (every dashboard variable by ``.*``, i.e. "All")."""
    expr = expr.replace("$__rate_interval", rate_interval).replace("$__interval", rate_interval)
    expr = expr.replace("${datasource}", "")
    return re.sub(r"\$\{?[A-Za-z_]\w*\}?", ".*", expr)
