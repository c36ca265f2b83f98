"""/probe through a real ``poolwatch-exporter`` process: probe-only mode, the web config's
basic auth covering /probe, config-file errors as one line, and a real Prometheus scraping
several targets through the documented relabel config (deploy/prometheus/)."""

from __future__ import annotations

import asyncio
import base64
import copy
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import bcrypt
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conftest import Scrape, run_cli, socket_url, with_database
from fleet_support import SUPERUSER_PASSWORD, DebianPostgres, debian_postgres
from poolwatch.metric_names import EXPORTER_AUTH_METRICS, EXPORTER_PROBE_METRICS
from prom_support import REPO, prom_api, start_prometheus
from support import PgTarget, until

SCRAPE_CONFIG = REPO / "deploy" / "prometheus" / "probe-scrape-config.yml"


@pytest.fixture(scope="module")
def pg15() -> Iterator[DebianPostgres]:
    with debian_postgres(max_connections=41) as server:
        yield server


def write_config(path: Path, pg: PgTarget, pg15: DebianPostgres, named_db: str) -> Path:
    (path.parent / "pg15-password").write_text(SUPERUSER_PASSWORD + "\n")
    path.write_text(
        yaml.safe_dump(
            {
                "auth_modules": {
                    "pg15": {
                        "type": "userpass",
                        "userpass": {"username": "postgres", "password_file": "pg15-password"},
                    },
                    "local": {"type": "userpass", "userpass": {"username": "postgres"}},
                },
                "probe": {
                    "allowed_targets": [f"127.0.0.1:{pg15.port}/*"],
                    "targets": {
                        "pg18": {"url": socket_url(pg.dsn, named_db), "auth_module": "local"}
                    },
                },
            }
        )
    )
    return path


def get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def pending_connects(listener: socket.socket) -> int:
    """Connections waiting in ``listener``'s backlog (accepted and counted here)."""
    listener.setblocking(False)
    n = 0
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return n
        conn.close()
        n += 1


def create_db(dsn: str) -> str:
    name = "pw_probe_" + uuid.uuid4().hex[:8]

    async def go() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(go())
    return name


def test_probe_only_exporter_behind_basic_auth(
    pg: PgTarget, pg15: DebianPostgres, spawn: Any, tmp_path: Path
) -> None:
    named_db = create_db(pg.dsn)
    config = write_config(tmp_path / "poolwatch.yml", pg, pg15, named_db)
    hashed = bcrypt.hashpw(b"scrape-pass", bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    exporter = spawn("--config.file", str(config), "--web.config.file", str(web))
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        trap = f"127.0.0.1:{listener.getsockname()[1]}/postgres"
        auth = ("prometheus", "scrape-pass")
        query = urlencode({"target": f"127.0.0.1:{pg15.port}/postgres", "module": "pg15"})
        status, body = get(f"{exporter.base_url}/probe?{query}")
        assert status == 401, body
        status, body = get(f"{exporter.base_url}/probe?{urlencode({'target': trap})}")
        assert status == 401, body
        status, body = get(f"{exporter.base_url}/probe?{urlencode({'target': trap})}", auth)
        assert status == 403 and "not in probe.allowed_targets" in body, body
        assert pending_connects(listener) == 0
        status, body = get(f"{exporter.base_url}/probe?{query}", auth)
        assert status == 200, body
        scrape = Scrape.parse(body)
        assert scrape.get("pg_up") == 1.0 and scrape.get("pg_max_connections") == 41.0
        status, body = get(f"{exporter.base_url}/probe?target=pg18", auth)
        assert status == 200 and Scrape.parse(body).get("pg_up") == 1.0, body
        # probe-only: /metrics is the prober's own metrics, no database of its own
        status, body = get(f"{exporter.base_url}/metrics", auth)
        own = Scrape.parse(body)
        assert own.get("poolwatch_exporter_probe_targets") == 2.0
        assert own.get("poolwatch_exporter_probe_connections") == 2.0
        assert own.get("poolwatch_exporter_probe_refused_total", reason="not_allowed") == 1.0
        assert own.get("pg_up") is None
        # exactly the probe side's contract (and basic auth's): names, types, HELP, labels
        served = {f.name: f for f in text_string_to_metric_families(body)}
        contract = (*EXPORTER_PROBE_METRICS, *EXPORTER_AUTH_METRICS)
        assert set(served) == {s.name.removesuffix("_total") for s in contract}
        for spec in contract:
            fam = served[spec.name.removesuffix("_total")]
            assert (fam.type, fam.documentation) == (spec.type, spec.help), spec.name
            assert all(set(x.labels) == set(spec.labels) for x in fam.samples), spec.name
    finally:
        listener.close()
        err = exporter.stop()
    assert SUPERUSER_PASSWORD not in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("auth_modules: [\n", "is not valid YAML at line"),
        ("auth_modules: {a: {userpass: {username: u}}}\n", "allows no target"),
        (
            "auth_modules: {a: {userpass: {username: u}}}\nprobe: {allowed_target: [x]}\n",
            "unknown key 'allowed_target'",
        ),
        (
            "auth_modules: {a: {userpass: {username: u}}}\n"
            "probe: {targets: {x: {url: 'postgresql://u:hunter22@db/x'}}}\n",
            "must not hold credentials",
        ),
        (
            "auth_modules: {a: {userpass: {username: u}}}\n"
            "probe: {allowed_targets: ['db:*/x'], default_auth_module: b}\n",
            "probe.default_auth_module 'b' is not in auth_modules",
        ),
        (
            "auth_modules: {a: {userpass: {username: u, password_file: nope}}}\n"
            "probe: {allowed_targets: ['db']}\n",
            "password_file",
        ),
        (
            "auth_modules: {a: {userpass: {username: u}}}\nprobe: {allowed_targets: ['db/x y']}\n",
            "is not a host:port/database pattern",
        ),
        (
            "auth_modules: {a: {userpass: {username: u}}}\n"
            "probe: {allowed_targets: ['db'], idle_timeout: soon}\n",
            "probe.idle_timeout: not a duration",
        ),
    ],
)
def test_config_file_errors_are_one_line(tmp_path: Path, content: str, message: str) -> None:
    config = tmp_path / "poolwatch.yml"
    config.write_text(content)
    result = run_cli("--config.file", str(config))
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("poolwatch-exporter: error: --config.file")
    assert message in lines[0], lines[0]
    assert "hunter22" not in result.stderr and "Traceback" not in result.stderr


def test_prometheus_scrapes_targets_through_the_documented_relabel_config(
    pg: PgTarget, pg15: DebianPostgres, spawn: Any, tmp_path: Path
) -> None:
    named_db = create_db(pg.dsn)
    dbs = [create_db(pg15.socket_dsn) for _ in range(2)]
    config = write_config(tmp_path / "poolwatch.yml", pg, pg15, named_db)
    exporter = spawn("--config.file", str(config))
    held: list[Any] = []

    async def hold(dsn: str, n: int) -> None:
        for _ in range(n):
            held.append(await asyncpg.connect(dsn))

    loop = asyncio.new_event_loop()
    loop.run_until_complete(hold(with_database(pg15.socket_dsn, dbs[0]), 2))
    loop.run_until_complete(hold(with_database(pg15.socket_dsn, dbs[1]), 3))
    loop.run_until_complete(hold(with_database(pg.dsn, named_db), 4))
    documented = yaml.safe_load(SCRAPE_CONFIG.read_text())
    job15 = copy.deepcopy(documented["scrape_configs"][0])
    exporter_address = exporter.base_url.removeprefix("http://")
    job15["params"]["module"] = ["pg15"]
    job15["scrape_interval"], job15["scrape_timeout"] = "1s", "1s"
    job15["static_configs"] = [{"targets": [f"127.0.0.1:{pg15.port}/{db}" for db in dbs]}]
    job15["relabel_configs"][-1]["replacement"] = exporter_address
    job18 = copy.deepcopy(job15)
    job18["job_name"] = "poolwatch-probe-named"
    job18["params"] = {}  # the named target carries its auth module
    job18["static_configs"] = [{"targets": ["pg18"]}]
    prometheus = start_prometheus(
        {"global": {"scrape_interval": "1s"}, "scrape_configs": [job15, job18]},
        tmp_path / "prom",
    )
    try:
        expected = {
            f"127.0.0.1:{pg15.port}/{dbs[0]}": (dbs[0], 2.0, "127.0.0.1"),
            f"127.0.0.1:{pg15.port}/{dbs[1]}": (dbs[1], 3.0, "127.0.0.1"),
            "pg18": (named_db, 4.0, "pg18"),
        }

        def arrived() -> dict[str, Any] | None:
            up = prom_api(prometheus.url, "query", query="pg_up")["data"]["result"]
            got: dict[str, Any] = {}
            for sample in up:
                instance = sample["metric"]["instance"]
                sessions = prom_api(
                    prometheus.url,
                    "query",
                    query=f'sum(pg_sessions{{instance="{instance}",'
                    f'datname="{expected.get(instance, ("",))[0]}"}})',
                )["data"]["result"]
                got[instance] = (
                    float(sample["value"][1]),
                    float(sessions[0]["value"][1]) if sessions else None,
                    sample["metric"].get("pg_server"),
                )
            want = {i: (1.0, n, server) for i, (_, n, server) in expected.items()}
            return got if got == want else None

        until(
            arrived, timeout=60, interval=0.5, what="pg_up and pg_sessions of every probed target"
        )
    finally:
        prometheus.stop()
        for conn in held:
            conn.terminate()
        loop.close()
        exporter.stop()
