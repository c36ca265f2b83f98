"""Scrape cost under worker churn: poolwatch vs plain prometheus_client multiprocess mode.

Multiprocess directories, each with ``--workers`` live worker processes (real forked
processes, each with ``--pools`` instrumented SQLAlchemy pools on SQLite files, a few
checkouts done and flushed: the same metrics in both). Workers are replaced one at a time
(SIGKILL, then a new fork), in both directories in the same loop, and every ``--scrape-every``
replacements each directory is scraped once, as Prometheus would during the churn:

  plain      ``mark_process_dead(pid)`` at every death (gunicorn's child_exit recipe), scrape
             with ``MultiProcessCollector`` + ``generate_latest``
  poolwatch  the scrape ``poolwatch.metrics_app()`` runs: dead pids' live gauges dropped,
             their counter/histogram files folded into the archive, locked read, render

Beside each churned directory runs a reference (``plain@0``, ``poolwatch@0``): the same
number of workers, never replaced, scraped the same way in the same measuring blocks. After
0 and each ``--checkpoints`` replacements it prints, per directory, the fastest wall time
and the median CPU time of ``--renders`` scrapes, the files in the directory (poolwatch's
lock file and staging area included), their allocated size and the values a scrape reads;
then each churned directory's CPU time relative to its reference at the same moment (so a
machine that gets busier or quieter during the run does not move the ratio).

    .venv/bin/python bench/bench_multiprocess_churn.py                 # 8 x 2, 0/100/500
    .venv/bin/python bench/bench_multiprocess_churn.py --checkpoints 50,200

Wall-clock: on a machine shared with other work the absolute times are noisy (a wall
median mostly measures the scheduler); CPU time, the reference ratios and the values read
(deterministic) are what to compare.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

CHURNED = {"plain", "poolwatch"}
REFERENCE = {"plain@0", "poolwatch@0"}

ROOT = Path(tempfile.mkdtemp(prefix="pw-churn-"))
# Churned directories, and references that keep their first workers (same code, same moment).
DIRS = {name: ROOT / name.replace("@", "-at-") for name in REFERENCE | CHURNED}
for _path in DIRS.values():
    _path.mkdir()
# prometheus_client picks multiprocess storage at import: set the variable first.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(DIRS["poolwatch"])

import sqlalchemy as sa  # noqa: E402
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.mmap_dict import MmapedDict  # noqa: E402
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead  # noqa: E402
from sqlalchemy.pool import QueuePool  # noqa: E402

import poolwatch  # noqa: E402
from poolwatch.asgi import render_metrics  # noqa: E402
from poolwatch.instrumentation.flusher import flusher  # noqa: E402


def worker(directory: str, pools: int, ready_fd: int) -> None:
    """The body of one forked worker: instrument, use the pools, flush, report, wait."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(DIRS[directory])
    engines = []
    for i in range(pools):
        engine = sa.create_engine(
            f"sqlite:///{ROOT / f'db{i}.sqlite'}", poolclass=QueuePool, pool_size=5,
            max_overflow=10,
        )  # fmt: skip
        poolwatch.instrument(engine, name=f"pool{i}")
        engines.append(engine)
    for engine in engines:
        for _ in range(5):
            with engine.connect() as conn:
                conn.execute(sa.text("select 1"))
    flusher.flush_now()
    os.write(ready_fd, b"r")
    while True:
        signal.pause()


def spawn(directory: str, pools: int) -> int:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            worker(directory, pools, write_fd)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(1)
    os.close(write_fd)
    if os.read(read_fd, 1) != b"r":
        raise SystemExit(f"a worker for {directory} failed to start")
    os.close(read_fd)
    return pid


def scrape(directory: str) -> bytes:
    """One scrape of ``directory`` the way its variant serves /metrics."""
    path = str(DIRS[directory])
    if directory.startswith("plain"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    body, _ = render_metrics(None, "", "")
    return body


def directory_size(path: Path) -> tuple[int, int, int]:
    """(files, allocated bytes, values a scrape reads) of a multiprocess directory; the
    first two count everything in it (poolwatch's lock file and staging area too)."""
    files = [p for p in path.rglob("*") if p.is_file()]
    values = sum(
        len(list(MmapedDict.read_all_values_from_file(str(p))))  # type: ignore[no-untyped-call]
        for p in path.glob("*.db")
    )
    return len(files), sum(p.stat().st_blocks * 512 for p in files), values


def measure(renders: int, block: int = 10) -> dict[str, tuple[float, float]]:
    """(fastest wall, median CPU) seconds of one scrape per directory.

    On a shared machine a wall-clock median mostly measures the scheduler (a 5 ms render
    waits for a core); the fastest wall time and this process's CPU time do not. Directories
    alternate in blocks of ``block`` renders (the first of each block discarded) with a
    garbage collection before each, so none pays for another's cache misses or garbage.
    """
    times: dict[str, list[tuple[float, float]]] = {d: [] for d in DIRS}
    while len(times["poolwatch"]) < renders:
        for directory in DIRS:
            for i in range(block + 1):
                gc.collect()
                t0, c0 = time.perf_counter(), time.process_time()
                scrape(directory)
                if i:
                    times[directory].append((time.perf_counter() - t0, time.process_time() - c0))
    return {d: (min(w for w, _ in t), statistics.median(c for _, c in t)) for d, t in times.items()}


def replace_one(live: dict[str, list[int]], pools: int) -> None:
    """SIGKILL the oldest worker of each churned directory and fork its replacement."""
    for directory in sorted(CHURNED):
        victim = live[directory].pop(0)
        os.kill(victim, signal.SIGKILL)
        os.waitpid(victim, 0)
        if directory == "plain":
            mark_process_dead(victim, str(DIRS["plain"]))  # type: ignore[no-untyped-call]
        live[directory].append(spawn(directory, pools))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--pools", type=int, default=2)
    parser.add_argument("--checkpoints", default="100,500", help="replacement counts")
    parser.add_argument("--renders", type=int, default=30, help="scrapes timed per point")
    parser.add_argument("--scrape-every", type=int, default=8, help="replacements per scrape")
    args = parser.parse_args()
    checkpoints = sorted({int(x) for x in args.checkpoints.split(",")})

    live = {d: [spawn(d, args.pools) for _ in range(args.workers)] for d in DIRS}
    lines = {d: scrape(d).count(b"\n") for d in DIRS}
    print(
        f"{args.workers} workers x {args.pools} pools per directory; exposition lines "
        + ", ".join(f"{d} {n}" for d, n in lines.items())
        + f"; {args.renders} renders per point; 'x@0': the same workers never replaced, "
        "measured in the same blocks (the ratio's reference)"
    )
    print(f"{'replacements':>12} {'directory':>12} | {'wall min ms':>11} {'CPU ms':>8} "
          f"{'files':>6} {'MiB':>6} {'values read':>11} | {'CPU / x@0':>9}")  # fmt: skip
    ratios: dict[int, dict[str, float]] = {}
    done = 0
    try:
        for point in [0, *checkpoints]:
            while done < point:
                replace_one(live, args.pools)
                done += 1
                if done % args.scrape_every == 0:
                    for directory in sorted(CHURNED):
                        scrape(directory)
            scrape("poolwatch")  # the scrape right after the last replacement folds
            result = measure(args.renders)
            ratios[point] = {}
            for directory in ("plain", "plain@0", "poolwatch", "poolwatch@0"):
                files, size, values = directory_size(DIRS[directory])
                wall, cpu = result[directory]
                ratio = ""
                if directory in CHURNED:
                    ratios[point][directory] = cpu / result[directory + "@0"][1]
                    ratio = f"{ratios[point][directory]:>8.2f}x"
                line = f"{point:>12} {directory:>12} | {wall * 1000:>11.2f} {cpu * 1000:>8.2f} "
                line += f"{files:>6} {size / 2**20:>6.1f} {values:>11} | {ratio:>9}"
                print(line, flush=True)
    finally:
        for pids in live.values():
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
    last = checkpoints[-1]
    for point in checkpoints:
        print(
            f"after {point} replacements, CPU time per scrape / the same workers unreplaced: "
            f"plain {ratios[point]['plain']:.2f}x, poolwatch {ratios[point]['poolwatch']:.2f}x"
        )
    ok = ratios[last]["poolwatch"] <= 1.2
    print(f"target poolwatch <= 1.2x after {last}: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        import shutil

        shutil.rmtree(ROOT, ignore_errors=True)
