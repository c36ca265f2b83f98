"""Fast encoders for the Prometheus text format (0.0.4) and OpenMetrics 1.0.0, for the gauge
and counter families the exporter makes.

``prometheus_client``'s encoders validate and escape every label name of every sample,
which at a few hundred series costs more than the database query (its OpenMetrics encoder,
the format Prometheus asks for first, about eight times what :func:`render` takes). The
families here are built from the metric contract (label names known valid), so only
values need escaping; and the exporter's own :class:`Family` keeps label values as tuples
(label names once per family) instead of a ``Sample`` with a dict per series. The output
is byte-for-byte what ``prometheus_client`` produces for the same families, a test checks
both formats.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

_number: Callable[[Any], str] = floatToGoString  # Go's float formatting, as Prometheus parses it

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_EOF = b"# EOF\n"  # ends an OpenMetrics exposition, once, after every family


class Family:
    """A gauge or counter family: label names once, then (label values, value) points.

    Reads like a ``prometheus_client`` metric family (``name``, ``documentation``,
    ``type``, ``unit``, ``samples``), so a registry or its encoders take it as one, while
    :func:`render` encodes it straight from the points.
    """

    __slots__ = ("documentation", "label_names", "name", "points", "type")
    unit = ""

    def __init__(
        self,
        name: str,
        documentation: str,
        type_: str,
        label_names: Sequence[str] = (),
        points: Iterable[tuple[tuple[str, ...], float]] | None = None,
    ) -> None:
        # like prometheus_client: a counter family is named without its ``_total``
        self.name = name.removesuffix("_total") if type_ == "counter" else name
        self.documentation = documentation
        self.type = type_
        self.label_names = tuple(label_names)
        self.points: list[tuple[tuple[str, ...], float]] = (
            [] if points is None else [(values, float(value)) for values, value in points]
        )

    def add_metric(self, labels: Sequence[str], value: float) -> None:
        """One more series: its label values (in ``label_names`` order) and value."""
        self.points.append((tuple(labels), float(value)))

    @property
    def sample_name(self) -> str:
        """The name its series carry (a counter's ends in ``_total``)."""
        return self.name + "_total" if self.type == "counter" else self.name

    @property
    def samples(self) -> list[Sample]:
        """The points as ``prometheus_client`` samples."""
        name, names = self.sample_name, self.label_names
        return [Sample(name, dict(zip(names, values, strict=True)), v) for values, v in self.points]


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _escape_value(text: str) -> str:
    if "\\" in text or '"' in text or "\n" in text:
        return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return text


def render(families: Iterable[Metric | Family], openmetrics: bool = False) -> bytes:
    """``families`` in the text format, or in OpenMetrics without the closing ``# EOF``.

    The two differ only in the family header: the text format names a counter family
    ``<name>_total`` and escapes ``"`` only in label values, OpenMetrics names it
    ``<name>`` and escapes ``"`` in HELP too.
    """
    out: list[str] = []
    help_escape = _escape_value if openmetrics else _escape_help
    for fam in families:
        name = fam.name + "_total" if fam.type == "counter" and not openmetrics else fam.name
        out.append(f"# HELP {name} {help_escape(fam.documentation)}\n# TYPE {name} {fam.type}\n")
        if isinstance(fam, Family):
            _render_points(fam, out)
            continue
        for sample in fam.samples:
            if sample.labels:
                labels = ",".join(
                    f'{key}="{_escape_value(value)}"'
                    for key, value in sorted(sample.labels.items())
                )
                out.append(f"{sample.name}{{{labels}}} {_number(sample.value)}\n")
            else:
                out.append(f"{sample.name} {_number(sample.value)}\n")
    return "".join(out).encode("utf-8")


def _render_points(fam: Family, out: list[str]) -> None:
    sample_name, names, points = fam.sample_name, fam.label_names, fam.points
    if not names:
        for _, value in points:
            out.append(f"{sample_name} {_format(value)}\n")
        return
    # One str.format template per family, labels sorted by name as prometheus_client
    # writes them: 'pg_sessions{application_name="{2}",datname="{0}",...} {n}\n'.
    labels = ",".join(
        f'{names[i]}="{{{i}}}"' for i in sorted(range(len(names)), key=names.__getitem__)
    )
    template = f"{sample_name}{{{{{labels}}}}} {{n}}\n"
    joined = "\0".join(["\0".join(values) for values, _ in points])
    if "\\" in joined or '"' in joined or "\n" in joined:
        for values, value in points:
            out.append(template.format(*map(_escape_value, values), n=_format(value)))
    else:  # the common case: no label value needs escaping
        for values, value in points:
            out.append(template.format(*values, n=_format(value)))


def _format(value: float) -> str:
    # repr is Go's formatting for every finite float below 1e6 (floatToGoString switches
    # to an exponent from there on, and spells infinities and NaN its own way)
    return repr(value) if -1e6 < value < 1e6 else _number(value)


def render_text(families: Iterable[Metric | Family]) -> bytes:
    """The text exposition (0.0.4) of ``families``."""
    return render(families)


def render_openmetrics(families: Iterable[Metric | Family]) -> bytes:
    """The complete OpenMetrics exposition of ``families`` (with ``# EOF``)."""
    return render(families, openmetrics=True) + OPENMETRICS_EOF
