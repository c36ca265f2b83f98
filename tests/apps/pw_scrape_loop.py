"""A scraper in another process, for tests/instrumentation/test_multiprocess_archive.py.

usage: python pw_scrape_loop.py <dir> <stop file>

Reads the directory as poolwatch's scrape does (LockedMultiProcessCollector) in a tight
loop until ``stop file`` exists, and prints one JSON line: scrapes, errors, the times the
counter ``churn_jobs_total`` or the histogram count went down, and their last values.
"""

from __future__ import annotations

import json
import os
import sys

from poolwatch.instrumentation.archive import LockedMultiProcessCollector

path, stop = sys.argv[1], sys.argv[2]
collector = LockedMultiProcessCollector(None, path)
result = {"scrapes": 0, "errors": [], "decreases": 0, "jobs": 0.0, "count": 0.0}
last_jobs = last_count = 0.0
while not os.path.exists(stop) or result["scrapes"] == 0:
    try:
        samples = {s.name: s.value for m in collector.collect() for s in m.samples}
    except Exception as exc:  # any failure of a scrape is what this counts
        result["errors"].append(repr(exc))
        continue
    result["scrapes"] += 1
    jobs = samples.get("churn_jobs_total", 0.0)
    count = samples.get("churn_job_seconds_count", 0.0)
    if jobs < last_jobs or count < last_count:
        result["decreases"] += 1
    last_jobs, last_count = jobs, count
result.update(jobs=last_jobs, count=last_count)
print(json.dumps(result), flush=True)
