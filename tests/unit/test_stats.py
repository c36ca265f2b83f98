"""``poolwatch.instrumentation.stats``: the histogram and the per-pool snapshot, on plain numbers."""

from __future__ import annotations

import threading

from poolwatch.instrumentation.stats import Histogram, PoolStats
from poolwatch.metric_names import DURATION_BUCKETS


def test_observations_land_in_the_first_bucket_whose_bound_holds_them() -> None:
    hist = Histogram((0.1, 1.0, 10.0))
    assert hist.observe(0.05) == 0
    assert hist.observe(0.1) == 0  # le is inclusive, as in Prometheus
    assert hist.observe(0.5) == 1
    assert hist.observe(10.0) == 2
    assert hist.observe(11.0) == 3  # +Inf
    assert hist.counts == [2, 1, 1, 1]
    assert hist.sum == 0.05 + 0.1 + 0.5 + 10.0 + 11.0


def test_cumulative_counts_end_with_inf_and_use_prometheus_bounds() -> None:
    hist = Histogram((0.1, 1.0, 10.0))
    for value in (0.05, 0.5, 0.7, 20.0):
        hist.observe(value)
    assert hist.cumulative() == [("0.1", 1), ("1.0", 3), ("10.0", 3), ("+Inf", 4)]
    default = Histogram()
    assert [le for le, _ in default.cumulative()][:-1] == [repr(float(b)) for b in DURATION_BUCKETS]


def test_a_copy_is_independent_of_later_observations() -> None:
    hist = Histogram((1.0,))
    hist.observe(0.5)
    hist.exemplars[0] = ({"trace_id": "ab"}, 0.5, 1.0)
    copy = hist.copy()
    hist.observe(0.5)
    hist.exemplars[0] = None
    assert copy.counts == [1, 0] and copy.sum == 0.5
    assert copy.exemplars[0] == ({"trace_id": "ab"}, 0.5, 1.0)
    assert hist.counts == [2, 0]


def test_snapshot_counts_successful_checkouts_and_checkins_from_the_histograms() -> None:
    stats = PoolStats(name="p")
    for waited in (0.001, 0.002, 0.5):  # three checkout attempts, one of which failed
        stats.checkout_duration.observe(waited)
    stats.failed_checkouts = 1
    stats.timeouts = 1
    stats.hold_duration.observe(0.01)  # one checkin
    stats.active = {"record-a": 100.0, "record-b": 104.0}  # two out, since t=100 and t=104
    stats.count_invalidation("disconnect")
    stats.count_invalidation("disconnect")
    stats.count_invalidation("pre_ping")
    snap = stats.snapshot(now=110.0)
    assert (snap.checkouts, snap.checkins, snap.timeouts) == (2, 1, 1)
    assert snap.oldest_checkout_age == 10.0
    assert snap.invalidations == {"disconnect": 2, "pre_ping": 1}
    # the snapshot is a copy: later activity does not change it
    stats.hold_duration.observe(0.01)
    stats.count_invalidation("pre_ping")
    assert snap.checkins == 1 and sum(snap.hold_duration.counts) == 1
    assert snap.invalidations["pre_ping"] == 1


def test_an_idle_pool_has_no_oldest_checkout_and_a_clock_step_never_goes_negative() -> None:
    stats = PoolStats(name="idle")
    assert stats.snapshot(now=5.0).oldest_checkout_age == 0.0
    stats.active = {"r": 10.0}
    assert stats.snapshot(now=9.0).oldest_checkout_age == 0.0


def test_invalidations_from_many_threads_are_all_counted() -> None:
    stats = PoolStats(name="threads")

    def count() -> None:
        for _ in range(1000):
            stats.count_invalidation("error")

    threads = [threading.Thread(target=count) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stats.snapshot(now=0.0).invalidations == {"error": 4000}
