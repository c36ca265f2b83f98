"""Basic auth under attack, on a real exporter process: wrong passwords cannot queue a
scrape, unknown users answer as fast as known ones, bad hashes stop the start."""

from __future__ import annotations

import asyncio
import base64
import statistics
import time
from pathlib import Path

import bcrypt
import httpx
import pytest

from conftest import Scrape, run_cli
from poolwatch.exporter.basicauth import BasicAuth, Verdict
from support import PgTarget

pytestmark = pytest.mark.timeout(120)


def _web_config(tmp_path: Path, cost: int, password: bytes = b"scrape-pass") -> Path:
    hashed = bcrypt.hashpw(password, bcrypt.gensalt(rounds=cost)).decode()
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    return web


async def test_two_hundred_wrong_passwords_do_not_queue_a_legitimate_scrape(
    pg: PgTarget, spawn, tmp_path: Path
) -> None:
    web = _web_config(tmp_path, cost=12)  # ~0.25 s per check here: 200 checks are ~50 s
    sub = spawn("--dsn", pg.dsn, "--web.config.file", str(web), "--scrape.min-interval", "0")
    limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
    async with httpx.AsyncClient(base_url=sub.base_url, limits=limits, timeout=60) as client:
        first = await client.get("/metrics", auth=("prometheus", "scrape-pass"))
        assert first.status_code == 200  # Prometheus' credential, verified once

        async def wrong(i: int) -> tuple[int, float]:
            start = time.monotonic()
            response = await client.get("/metrics", auth=("prometheus", f"guess-{i}"))
            return response.status_code, time.monotonic() - start

        attack = [asyncio.ensure_future(wrong(i)) for i in range(200)]
        # under way: the first answers (429: the bcrypt queue is full) are back
        await asyncio.wait(attack, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        assert not all(task.done() for task in attack)
        legit = await client.get("/metrics", auth=("prometheus", "scrape-pass"))
        under_way = not all(task.done() for task in attack)
        results = await asyncio.gather(*attack)
        after = await client.get("/metrics", auth=("prometheus", "scrape-pass"))
    assert legit.status_code == 200 and Scrape.parse(legit.text).get("pg_up") == 1
    assert under_way, "the attack was over before the legitimate scrape was answered"
    codes = [code for code, _ in results]
    assert set(codes) <= {401, 429} and codes.count(401) >= 1, codes
    # The legitimate scrapes ran no bcrypt (their credential was verified once, the first
    # time): every bcrypt check is the first scrape's or a wrong password's, each a 401. A
    # scrape that queued for bcrypt behind the guesses would have added one more.
    checks = Scrape.parse(after.text).get("poolwatch_exporter_bcrypt_checks_total")
    assert checks == 1 + codes.count(401), (checks, codes.count(401))
    # one bcrypt at a time, a bounded queue: most guesses are turned away at once (429)
    # instead of queueing for 200 x 0.25 s of bcrypt
    assert codes.count(429) >= 100, codes
    assert "Traceback" not in sub.stop()


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"authorization": f"Basic {token}"}


@pytest.mark.parametrize("cost", [5, 10])  # 5: htpasswd -B's default
def test_unknown_users_answer_in_the_same_time_as_known_ones(
    pg: PgTarget, spawn, tmp_path: Path, cost: int
) -> None:
    sub = spawn("--dsn", pg.dsn, "--web.config.file", str(_web_config(tmp_path, cost)))
    known: list[float] = []
    unknown: list[float] = []
    with httpx.Client(base_url=sub.base_url) as client:
        client.get("/healthz")
        for i in range(12):  # interleaved, distinct passwords: every check is a real bcrypt
            for user, times in (("prometheus", known), ("nobody", unknown)):
                start = time.monotonic()
                response = client.get("/metrics", headers=_basic(user, f"wrong-{i}"))
                times.append(time.monotonic() - start)
                assert response.status_code == 401
    ratio = statistics.median(unknown) / statistics.median(known)
    # before: a fixed cost-12 dummy hash made unknown users 60x slower at cost 5, 4x at 10
    assert 0.5 < ratio < 2.0, (ratio, statistics.median(unknown), statistics.median(known))


async def test_each_credential_costs_one_bcrypt() -> None:
    hashed = bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=4))
    auth = BasicAuth({"prometheus": hashed})
    good = _basic("prometheus", "right")["authorization"]
    bad = _basic("prometheus", "wrong")["authorization"]
    stranger = _basic("nobody", "right")["authorization"]
    for _ in range(5):
        assert await auth.check(good) is Verdict.ALLOWED
        assert await auth.check(bad) is Verdict.DENIED
        assert await auth.check(stranger) is Verdict.DENIED
    assert await auth.check("Basic !!!") is Verdict.DENIED
    assert await auth.check(None) is Verdict.DENIED
    assert auth.bcrypt_checks == 3


async def test_a_full_bcrypt_queue_answers_busy_at_once() -> None:
    hashed = bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=12))
    auth = BasicAuth({"prometheus": hashed}, queue_wait=0.2, max_waiting=3)
    verdicts = await asyncio.gather(
        *(auth.check(_basic("prometheus", f"w{i}")["authorization"]) for i in range(10))
    )
    assert verdicts.count(Verdict.BUSY) >= 6, verdicts  # 3 may wait, 1 runs
    assert auth.bcrypt_checks <= 4


@pytest.mark.parametrize(
    ("hashed", "needle"),
    [
        (bcrypt.hashpw(b"x", bcrypt.gensalt(4)).decode()[:-8], "is not a bcrypt hash"),  # truncated
        ("$2b$31$" + bcrypt.hashpw(b"x", bcrypt.gensalt(4)).decode()[7:], "has cost 31"),
        ("$2b$03$" + bcrypt.hashpw(b"x", bcrypt.gensalt(4)).decode()[7:], "has cost 3"),
        ("$1$md5crypt$abcdefghijklmnopqrstuv", "is not a bcrypt hash"),
    ],
)
def test_bad_hashes_in_the_web_config_stop_the_start(
    tmp_path: Path, hashed: str, needle: str
) -> None:
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    result = run_cli("--dsn", "postgresql://u@h/d", "--web.config.file", str(web), timeout=20)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr
