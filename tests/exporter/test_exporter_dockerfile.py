"""The exporter image: no Docker engine here, so parse the Dockerfile, then run its COPY,
pip install, ENTRYPOINT and HEALTHCHECK steps for real in a fresh virtualenv."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from conftest import Scrape
from poolwatch.exporter import DEFAULT_PORT
from support import PgTarget, free_port, skip_or_fail, until

ROOT = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines: list[str] = []
    buffer = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        lines.append(buffer + line)
        buffer = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def final_stage() -> list[tuple[str, str]]:
    ins = instructions()
    last_from = max(i for i, (op, _) in enumerate(ins) if op == "FROM")
    return ins[last_from:]


def test_dockerfile_is_a_slim_non_root_image_with_healthcheck() -> None:
    ins = instructions()
    froms = [arg for op, arg in ins if op == "FROM"]
    assert froms and all("-slim" in f for f in froms)
    final = dict(final_stage())
    user = final["USER"].split(":")[0]
    assert user not in ("root", "0")
    assert final["EXPOSE"] == str(DEFAULT_PORT)
    assert json.loads(final["ENTRYPOINT"]) == ["poolwatch-exporter"]
    health = final["HEALTHCHECK"]
    assert "--timeout=" in health and "--interval=" in health
    assert json.loads(health.split("CMD", 1)[1]) == ["poolwatch-exporter", "--healthcheck"]
    assert f":{DEFAULT_PORT}" in final["ENV"]
    runs = [arg for op, arg in ins if op == "RUN"]
    assert any('pip install ".[exporter]"' in r for r in runs)  # only the exporter's extra
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'poolwatch-exporter = "poolwatch.exporter.__main__:main"' in pyproject
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[0:1] == ["*"] or "*" in ignore


def test_dockerfile_install_and_entrypoint_steps_in_a_fresh_venv(
    pg: PgTarget, tmp_path: Path
) -> None:
    """COPY -> RUN (pip install) -> ENTRYPOINT -> HEALTHCHECK, with /opt/poolwatch and /src
    replaced by temporary directories. Needs the package index (or pip's cache)."""
    if os.environ.get("POOLWATCH_SKIP_NETWORK") == "1":
        pytest.skip("POOLWATCH_SKIP_NETWORK=1")
    src, prefix = tmp_path / "src", tmp_path / "opt-poolwatch"
    src.mkdir()
    ins = instructions()
    froms = [i for i, (op, _) in enumerate(ins) if op == "FROM"]
    assert len(froms) == 2, "expected a build stage and a runtime stage"
    build = ins[froms[0] : froms[1]]
    for op, arg in build:
        if op == "COPY" and not arg.startswith("--from"):
            *sources, dest = arg.split()
            for source in sources:
                origin = ROOT / source.rstrip("/")
                target = src / dest if dest not in ("./", ".") else src / origin.name
                if origin.is_dir():
                    shutil.copytree(
                        origin, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
                    )
                else:
                    shutil.copy2(origin, target)
    (run,) = [arg for op, arg in build if op == "RUN"]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIP_NO_CACHE", "POOLWATCH_EXPORTER_"))
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    for step in run.split("&&"):
        argv = [a.replace("/opt/poolwatch", str(prefix)) for a in shlex.split(step)]
        if argv[0] == "python":
            argv[0] = sys.executable
        done = subprocess.run(argv, cwd=src, env=env, capture_output=True, text=True, timeout=540)
        if done.returncode != 0:
            if "pip" in argv[0] and (
                "connection" in done.stderr.lower() or "network" in done.stderr.lower()
            ):
                skip_or_fail(f"pip could not reach the package index: {done.stderr[-300:]}")
            raise AssertionError(f"{step} failed:\n{done.stderr[-2000:]}")
    entry = prefix / "bin" / "poolwatch-exporter"
    assert entry.is_file()
    port = free_port()
    run_env = {
        **env,
        "PATH": f"{prefix / 'bin'}:{env.get('PATH', '')}",
        "POOLWATCH_EXPORTER_WEB_LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "POOLWATCH_EXPORTER_DSN": pg.dsn,
    }
    proc = subprocess.Popen(["poolwatch-exporter"], env=run_env, stderr=subprocess.PIPE, text=True)
    try:

        def healthcheck() -> subprocess.CompletedProcess[str]:
            assert proc.poll() is None, proc.communicate()[1]
            return subprocess.run(
                ["poolwatch-exporter", "--healthcheck"], env=run_env, capture_output=True, text=True
            )

        until(
            healthcheck,
            holds=lambda health: health.returncode == 0,
            interval=0.2,
            what="poolwatch-exporter --healthcheck to pass",
        )
        body = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert Scrape.parse(body).get("pg_up") == 1
    finally:
        proc.terminate()
        proc.communicate(timeout=15)
