"""The exporter's HTTP server against uvicorn (httptools, h11), side by side, serving the
same ``ExporterApp``'s ``/healthz`` (no database involved) under uvloop:

- per-request cost: sequential keep-alive ``/healthz`` requests (median, p99 in us);
- an endless header: MB the server read before cutting it off, and its RSS growth;
- 100 connections that send a partial header: how many are still open after 12 s;
- with RLIMIT_NOFILE 1024 (a container's default) and 1,100 idle connections: does a new
  ``/healthz`` get an answer, and how fast.

    .venv/bin/python bench/bench_http_server.py [--requests 2000]

Wall-clock numbers are noisy on a shared machine; compare the columns of one run.
"""

from __future__ import annotations

import argparse
import http.client
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("poolwatch", "uvicorn-httptools", "uvicorn-h11")


def serve(variant: str, port: int) -> None:
    """Child process: serve ExporterApp on ``port`` with ``variant``."""
    import uvloop

    from poolwatch.exporter.dsn import parse_dsn
    from poolwatch.exporter.httpserver import HttpServer
    from poolwatch.exporter.settings import parse_settings
    from poolwatch.exporter.web import ExporterApp
    from poolwatch.exporter.webconfig import WebConfig

    settings = parse_settings(["--dsn", "postgresql://nobody@127.0.0.1:1/x"], environ={})
    app = ExporterApp(settings, parse_dsn(settings.dsn or ""), WebConfig())
    if variant == "poolwatch":
        uvloop.run(HttpServer(app, "127.0.0.1", port).serve())
        return
    import uvicorn

    http = "httptools" if variant == "uvicorn-httptools" else "h11"
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, http=http, loop="uvloop", log_config=None,
        access_log=False, lifespan="off",
    )  # fmt: skip
    uvicorn.Server(config).run()


def start(variant: str, nofile: int | None = None) -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])

    def limit() -> None:
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", variant, str(port)],
        preexec_fn=limit,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{variant} did not start")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def per_request(port: int, n: int) -> tuple[float, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        conn.request("GET", "/healthz")
        conn.getresponse().read()
        times.append((time.perf_counter() - start) * 1e6)
    conn.close()
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99)]


def endless_header(pid: int, port: int, cap: int = 64 * 2**20) -> tuple[float, float]:
    before, sent = rss_mb(pid), 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(5)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        try:
            while sent < cap:
                sock.sendall(b"a" * 65536)
                sent += 65536
        except OSError:
            pass
        grown = rss_mb(pid) - before
    return sent / 2**20, grown


def partial_headers(port: int, wait: float = 12.0) -> int:
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]
    for sock in socks:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    time.sleep(wait)  # a measurement of how long the server keeps them, not a sync
    still = 0
    for sock in socks:
        sock.setblocking(False)
        try:
            still += sock.recv(1) != b""
        except BlockingIOError:
            still += 1
        except OSError:
            pass
        sock.close()
    return still


def idle_then_healthz(variant: str) -> str:
    proc, port = start(variant, nofile=1024)
    socks = []
    try:
        for _ in range(1100):
            try:
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            except OSError:
                break
        time.sleep(0.5)  # let the server accept what it can
        start_t = time.perf_counter()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/healthz")
            status = conn.getresponse().status
            return f"{status} in {(time.perf_counter() - start_t) * 1000:.0f} ms"
        except OSError as exc:
            return f"failed after {time.perf_counter() - start_t:.1f} s ({type(exc).__name__})"
    finally:
        for sock in socks:
            sock.close()
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--serve", nargs=2, metavar=("VARIANT", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    print(
        f"{'server':<20} {'median us':>9} {'p99 us':>7} {'header MB read':>14} "
        f"{'RSS +MB':>7} {'partial open':>12}  healthz with 1,100 idle (nofile 1024)"
    )
    for variant in VARIANTS:
        proc, port = start(variant)
        try:
            per_request(port, 200)  # warm up
            median, p99 = per_request(port, args.requests)
            read, grown = endless_header(proc.pid, port)
            still = partial_headers(port)
        finally:
            proc.kill()
            proc.wait()
        idle = idle_then_healthz(variant)
        print(
            f"{variant:<20} {median:>9.0f} {p99:>7.0f} {read:>14.1f} {grown:>7.1f} "
            f"{still:>12}  {idle}"
        )


if __name__ == "__main__":
    main()
