"""How the demo shows itself: a live panel on a terminal, plain lines otherwise, or JSON lines.

* TTY: a compact panel redrawn in place (ANSI cursor movement) once a second, with a
  progress bar for the current phase; events scroll above it.
* Not a TTY (a pipe, a CI log): a header per phase, one status line every few seconds,
  and every event on its own line.
* ``--json``: one JSON object per line (``start``, ``phase``, ``event``, ``snapshot``,
  ``summary``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, TextIO

from poolwatch.demo.metrics import AlertRule, Snapshot

BAR_WIDTH = 24


@dataclass(frozen=True)
class Phase:
    """One step of the walk."""

    key: str
    title: str
    explain: str
    fraction: float


class Display:
    """Writes the demo's progress to ``out`` in the chosen form."""

    def __init__(self, out: TextIO, json_lines: bool) -> None:
        self.out = out
        self.json = json_lines
        self.tty = not json_lines and out.isatty() and os.environ.get("TERM") != "dumb"
        self.color = self.tty and "NO_COLOR" not in os.environ
        self._panel_lines = 0
        self._last_plain = -1e9

    # -- styling --------------------------------------------------------------------------

    def _c(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def _emit(self, event_type: str, **data: Any) -> None:
        self.out.write(json.dumps({"event": event_type, **data}, default=str) + "\n")
        self.out.flush()

    def _clear_panel(self) -> None:
        if self.tty and self._panel_lines:
            self.out.write(f"\x1b[{self._panel_lines}F\x1b[J")
            self._panel_lines = 0

    def line(self, text: str) -> None:
        """A line that stays (printed above the live panel)."""
        if self.json:
            return
        self._clear_panel()
        self.out.write(text + "\n")
        self.out.flush()

    # -- events ---------------------------------------------------------------------------

    def start(self, info: dict[str, Any]) -> None:
        """What is running and where its metrics are."""
        if self.json:
            self._emit("start", **info)
            return
        self.line(self._c("1", "poolwatch demo") + f"  ({info['duration']:g} s, Ctrl-C stops)")
        self.line(f"  PostgreSQL        {info['postgres']}")
        self.line(
            f"  app /metrics      {info['app_metrics_url']}   (FastAPI + poolwatch.instrument)"
        )
        exporter = info.get("exporter_metrics_url") or f"not running: {info.get('exporter_note')}"
        self.line(f"  exporter /metrics {exporter}")
        self.line(f"  pool 'demo'       {info['pool']}")
        self.line(f"  alerts            {info['alerts_source']}")
        self.line("")

    def phase(self, index: int, total: int, phase: Phase) -> None:
        """A new phase begins."""
        if self.json:
            self._emit("phase", index=index, total=total, key=phase.key, title=phase.title)
            return
        self.line(self._c("1;36", f"== phase {index}/{total}: {phase.title}"))
        self.line(f"   {phase.explain}")

    def event(self, text: str, kind: str = "info") -> None:
        """Something worth a line of its own (first timeout, a leak, an alert)."""
        if self.json:
            self._emit("event", kind=kind, text=text)
            return
        marker = {"alert": self._c("31;1", "ALERT"), "error": self._c("31", "error")}.get(
            kind, self._c("33", "  -->")
        )
        self.line(f"   {marker} {text}")

    # -- the live panel -------------------------------------------------------------------

    def update(
        self,
        phase: Phase,
        index: int,
        total: int,
        elapsed: float,
        length: float,
        snap: Snapshot,
        numbers: dict[str, Any],
        alerts: list[tuple[AlertRule, str]],
    ) -> None:
        """Show the latest numbers (redrawn in place on a TTY)."""
        names = [rule.name for rule, _ in alerts]
        if self.json:
            self._emit(
                "snapshot",
                phase=phase.key,
                elapsed=round(elapsed, 1),
                metrics=numbers,
                alerts=names,
            )
            return
        n = numbers
        if not self.tty:
            if snap.at - self._last_plain < 3.0:
                return
            self._last_plain = snap.at
            self.line(
                f"   [{phase.key} {elapsed:4.0f}/{length:.0f}s] pool {n['checked_out']:g}/"
                f"{n['pool_size'] + n['max_overflow']:g} waiting {n['waiting']:g} "
                f"timeouts {n['timeouts_total']:g} leaks {n['leaks_total']:g} | pg idle-in-tx "
                f"{n['pg_idle_in_transaction']:g} (stale {n['pg_idle_in_transaction_stale']:g}) "
                f"lock-waiting {n['pg_lock_waiting']:g} blocked {n['pg_blocked']:g} | "
                f"alerts: {', '.join(names) or 'none'}"
            )
            return
        done = min(int(BAR_WIDTH * elapsed / length), BAR_WIDTH) if length else BAR_WIDTH
        bar = "#" * done + "-" * (BAR_WIDTH - done)
        cap = n["pool_size"] + n["max_overflow"]
        busy = n["checked_out"] >= cap > 0
        used = f"{n['checked_out']:g}/{cap:g}"
        lines = [
            f"  {self._c('1', f'phase {index}/{total} {phase.key}')}  [{bar}] "
            f"{elapsed:4.1f}/{length:.0f} s",
            f"  app pool    checked out {self._c('31;1', used) if busy else used}"
            f"  idle {n['idle']:g}  overflow {n['overflow']:g}  waiting {n['waiting']:g}"
            f"  oldest {n['oldest_checkout_seconds']:.1f} s",
            f"              checkouts {n['checkouts_total']:g}  checkins {n['checkins_total']:g}"
            f"  timeouts {n['timeouts_total']:g}  leaks {n['leaks_total']:g}",
            f"  requests    ok {n['requests_ok']}  503 pool timeout {n['requests_timed_out']}"
            f"  other errors {n['requests_failed']}",
        ]
        if n["exporter_up"]:
            lines.append(
                f"  PostgreSQL  active {n['pg_active']:g}  idle {n['pg_idle']:g}  idle in tx "
                f"{n['pg_idle_in_transaction']:g} (stale {n['pg_idle_in_transaction_stale']:g})"
                f"  lock-waiting {n['pg_lock_waiting']:g}  blocked {n['pg_blocked']:g}"
                f"  max lock wait {n['pg_lock_wait_max_seconds']:.1f} s"
            )
        else:
            lines.append("  PostgreSQL  (exporter not running)")
        if alerts:
            for rule, why in alerts:
                lines.append(
                    f"  {self._c('31;1', 'would fire')} {rule.name} ({rule.severity}, "
                    f"for {rule.for_}): {why}"
                )
        else:
            lines.append(f"  {self._c('32', 'no alert would fire')}")
        self._clear_panel()
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()
        self._panel_lines = len(lines)

    def summary(self, data: dict[str, Any]) -> None:
        """The end: what fired in which phase, and what was cleaned up."""
        if self.json:
            self._emit("summary", **data)
            return
        self.line("")
        self.line(self._c("1", "summary"))
        for phase in data["phases"]:
            fired = ", ".join(phase["new_alerts"]) or "none"
            self.line(
                f"  {phase['key']:<12} max checked out {phase['max_checked_out']:g}, "
                f"max waiting {phase['max_waiting']:g}, timeouts {phase['timeouts']:g}, "
                f"leaks {phase['leaks']:g}, max idle in tx {phase['max_idle_in_transaction']:g}, "
                f"max lock-waiting {phase['max_lock_waiting']:g}; new alerts: {fired}"
            )
        for note in data.get("notes", []):
            self.line(f"  note: {note}")

    def cleanup(self, report: dict[str, Any]) -> None:
        """What was stopped and removed (and anything that could not be)."""
        if self.json:
            self._emit("cleanup", **report)
            return
        if not report["processes"] and not report["left_behind"]:
            return  # nothing was started (a failed start-up): the error line says it all
        stopped = ", ".join(
            f"{p['name']} (pid {p['pid']}{'' if p['stopped'] else ', STILL RUNNING'})"
            for p in report["processes"]
        )
        text = f"cleaned up: stopped {stopped or 'nothing'}; removed {', '.join(report['removed'])}"
        if report["left_behind"]:
            text += f"; LEFT BEHIND: {', '.join(report['left_behind'])}"
        self.line(text)
