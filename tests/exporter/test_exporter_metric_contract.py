"""Every metric the exporter serves is in metric_names.EXPORTER_METRICS, documented in the
exporter section of docs/metrics.md, with the contract's type, HELP text and labels."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from conftest import Sessions
from poolwatch.metric_names import EXPORTER_AUTH_METRICS, EXPORTER_METRICS, EXPORTER_PROBE_METRICS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def exporter_section() -> str:
    text = DOCS.read_text()
    start = text.index("## Exporter metrics")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_every_exporter_metric_is_documented_in_its_section() -> None:
    section = exporter_section()
    for spec in (*EXPORTER_METRICS, *EXPORTER_PROBE_METRICS, *EXPORTER_AUTH_METRICS):
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


async def test_fast_encoders_match_prometheus_client(exporter_factory, sessions: Sessions) -> None:
    """The exporter's own encoders give byte-for-byte what prometheus_client's give, in the
    text format and in OpenMetrics (what Prometheus asks for first), also over HTTP."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.openmetrics.exposition import generate_latest as generate_om
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om

    from poolwatch.exporter.exposition import render_openmetrics, render_text
    from poolwatch.exporter.own_metrics import collect_own

    odd = await sessions.open(1, app='we"ird\\app')  # (PostgreSQL turns newlines into ?)
    await odd[0].execute("BEGIN; SELECT 1")
    exp = exporter_factory()
    snap = await exp.app.scraper.snapshot()
    families = [*collect_own(exp.app.scraper, snap), *snap.health, *snap.families]
    # prometheus_client's side gets its own family classes, rebuilt from the contract and
    # the points, so a naming slip in our Family cannot hide on both sides.
    specs = {spec.name.removesuffix("_total"): spec for spec in EXPORTER_METRICS}
    theirs = []
    for fam in families:
        spec = specs[fam.name]
        kind = CounterMetricFamily if spec.type == "counter" else GaugeMetricFamily
        rebuilt = kind(spec.name, spec.help, labels=list(spec.labels))
        for values, value in fam.points:
            rebuilt.add_metric(list(values), value)
        theirs.append(rebuilt)

    class Fixed:
        def collect(self):
            return theirs

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())
    assert render_text(families) == generate_latest(registry)
    assert 'application_name="we\\"ird\\\\app"' in render_text(families).decode()
    assert render_openmetrics(families) == generate_om(registry)

    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    body, content_type = await exp.app.render(accept)
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"\n# EOF\n") and body.count(b"# EOF") == 1
    # the strict OpenMetrics parser accepts it, with every family of the snapshot
    parsed = {fam.name for fam in parse_om(body.decode())}
    assert parsed == {fam.name for fam in families}


def test_documented_web_config_example_is_valid(tmp_path) -> None:
    import re

    from poolwatch.exporter.webconfig import load_web_config

    doc = (Path(__file__).resolve().parents[2] / "docs" / "exporter.md").read_text()
    example = re.search(r"```yaml\n(tls_server_config:.*?)```", doc, re.S).group(1)
    # Keep the users part (the TLS files are the reader's); the hash must be real bcrypt.
    users = example[example.index("basic_auth_users:") :]
    path = tmp_path / "web.yml"
    path.write_text(users)
    config = load_web_config(str(path))
    assert list(config.users) == ["prometheus"]
    import asyncio
    import base64

    header = "Basic " + base64.b64encode(b"prometheus:change-me").decode()
    assert asyncio.run(config.check_authorization(header))
