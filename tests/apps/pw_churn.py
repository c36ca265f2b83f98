"""Worker churn at fork speed, for tests/instrumentation/test_multiprocess_archive.py.

usage: python pw_churn.py <replacements>   (PROMETHEUS_MULTIPROC_DIR set by the caller)

Forks ``replacements`` short-lived workers one after another; each adds 1 to a counter and
observes 0.5 in a histogram, then SIGKILLs itself. After each death this process folds
the dead files (as a scrape in a surviving worker would), skipping when a scrape holds the
directory. At the end it folds until nothing is left and prints ``folded <n>``.
"""

from __future__ import annotations

import os
import re
import signal
import sys

from prometheus_client import Counter, Histogram

from poolwatch.instrumentation.archive import fold_dead_processes

path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
replacements = int(sys.argv[1])
jobs = Counter("churn_jobs", "Jobs done.")
job_time = Histogram("churn_job_seconds", "Job time.", buckets=(0.25, 1.0))
folded = 0
for _ in range(replacements):
    pid = os.fork()
    if pid == 0:
        jobs.inc()
        job_time.observe(0.5)
        os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(pid, 0)
    folded += fold_dead_processes(path)


def dead_files_left() -> bool:
    own = f"_{os.getpid()}.db"
    return any(
        re.fullmatch(r"(counter|histogram|summary)_\d+\.db", name) and not name.endswith(own)
        for name in os.listdir(path)
    )


while dead_files_left():
    folded += fold_dead_processes(path)
print(f"folded {folded}", flush=True)
