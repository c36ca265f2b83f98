"""Every metric the exporter serves is in metric_names.EXPORTER_METRICS, documented in the
exporter section of docs/metrics.md, with the contract's type, HELP text and labels."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from conftest import Sessions
from poolwatch.metric_names import EXPORTER_METRICS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def exporter_section() -> str:
    text = DOCS.read_text()
    start = text.index("## Exporter metrics")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_every_exporter_metric_is_documented_in_its_section() -> None:
    section = exporter_section()
    for spec in EXPORTER_METRICS:
        assert f"`{spec.name}`" in section, spec.name
        for label in spec.labels:
            assert label in section


async def test_served_metrics_match_the_contract(exporter_factory, sessions: Sessions) -> None:
    locker, waiter = await sessions.open(2)
    await locker.execute("CREATE TABLE c (id int); INSERT INTO c VALUES (1)")
    await locker.execute("BEGIN; LOCK TABLE c")
    sessions.background(waiter.execute("SELECT * FROM c"))
    exp = exporter_factory()
    scrape = await exp.until(lambda s: s.total("pg_blocked_sessions") >= 1)
    specs = {spec.name: spec for spec in EXPORTER_METRICS}
    served = {}
    for fam in text_string_to_metric_families(scrape.text):
        served[fam.name] = fam
    counters = {s.name.removesuffix("_total") for s in EXPORTER_METRICS if s.type == "counter"}
    for name, fam in served.items():
        full = name + "_total" if name in counters else name
        assert full in specs, f"{full} is served but not in EXPORTER_METRICS"
        spec = specs[full]
        assert fam.type == spec.type, name
        assert fam.documentation == spec.help, name
        for sample in fam.samples:
            assert set(sample.labels) == set(spec.labels), (name, sample.labels)
    # With a lock wait in place, every metric of the contract is served.
    missing = {s.name for s in EXPORTER_METRICS} - {
        n + "_total" if n in counters else n for n in served
    }
    assert not missing
