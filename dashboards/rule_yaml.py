"""Prometheus rule files as data (groups of recording and alert rules) and their YAML text.

Written by hand rather than with a YAML library so the files keep their comments and wrap
like the rest of the repository; ``tests/test_alert_rules.py`` loads them with PyYAML.
"""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass

from panels import RUNBOOK

from poolwatch.thresholds import Threshold

WRAP = 92  # wrap width of comments and descriptions in the generated files


@dataclass(frozen=True)
class Record:
    """A recording rule; ``comment`` goes above it."""

    record: str
    expr: str
    comment: str = ""


@dataclass(frozen=True)
class Alert:
    """An alerting rule: its threshold entry, PromQL and annotations."""

    threshold: Threshold
    expr: str
    summary: str
    description: str
    comment: str = ""


@dataclass(frozen=True)
class Group:
    """A rule group; ``comment`` goes above it."""

    name: str
    rules: tuple[Record | Alert, ...]
    comment: str = ""


@dataclass(frozen=True)
class RuleFile:
    """One ``alerts/*.rules.yml``: its header comment and groups."""

    filename: str
    header: str
    groups: tuple[Group, ...]


def lab(name: str) -> str:
    """A label value in an annotation template."""
    return "{{ $labels." + name + " }}"


def words(duration: str | int) -> str:
    """``"1m"`` -> ``"a minute"``, ``"15m"`` -> ``"15 minutes"``, ``600`` -> ``"10 minutes"``."""
    seconds = duration if isinstance(duration, int) else _seconds(duration)
    for unit, size in (("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds % size == 0:
            n = seconds // size
            return f"a {unit}" if n == 1 else f"{n} {unit}s"
    raise ValueError(f"cannot say {duration!r} in words")


def _seconds(duration: str) -> int:
    match = re.fullmatch(r"(\d+)([smh])", duration)
    if not match:
        raise ValueError(f"not a simple duration: {duration!r}")
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]


# Template actions ({{ ... }}) stay on one line when descriptions are wrapped.
_WORD = re.compile(r"(?:\{\{.*?\}\}|\S)+")


def _comment(text: str, indent: str) -> list[str]:
    if not text:
        return []
    width = WRAP - len(indent) - 2
    return [f"{indent}# {line}".rstrip() for line in textwrap.wrap(text, width)]


def _folded(text: str, indent: str) -> list[str]:
    """``text`` as the lines of a ``>-`` block scalar: words joined by single spaces."""
    lines: list[str] = []
    for word in _WORD.findall(text):
        if lines and len(indent) + len(lines[-1]) + 1 + len(word) <= WRAP:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return [indent + line for line in lines]


def _plain(text: str) -> str:
    """A one-line scalar, quoted when YAML would read it as something else."""
    if re.search(r": | #|^[\[\]{}>|*&!%@`'\"#,?:-]", text):
        return json.dumps(text)
    return text


def _alert_lines(alert: Alert) -> list[str]:
    th = alert.threshold
    out = [f"      - alert: {th.alert}", "        expr: |"]
    out += [f"          {line}" for line in alert.expr.splitlines()]
    out += [f"        for: {th.for_}", "        labels:", f"          severity: {th.severity}"]
    out += ["        annotations:", f"          summary: {_plain(alert.summary)}"]
    out += ["          description: >-", *_folded(alert.description, " " * 12)]
    out.append(f"          runbook_url: {RUNBOOK}#{th.alert.lower()}")
    return out


def _rule_lines(rule: Record | Alert) -> list[str]:
    out = _comment(rule.comment, " " * 6)
    if isinstance(rule, Alert):
        return out + _alert_lines(rule)
    out += [f"      - record: {rule.record}", "        expr: |"]
    return out + [f"          {line}" for line in rule.expr.splitlines()]


def render_rules(rule_file: RuleFile) -> str:
    """The text of one rule file, as committed."""
    out = [f"# {line}".rstrip() for line in rule_file.header.splitlines()]
    out.append("groups:")
    for i, group in enumerate(rule_file.groups):
        if i:
            out.append("")
        out += _comment(group.comment, "  ")
        out += [f"  - name: {group.name}", "    rules:"]
        for j, rule in enumerate(group.rules):
            if j and isinstance(rule, Alert):
                out.append("")
            out += _rule_lines(rule)
    return "\n".join(out) + "\n"
