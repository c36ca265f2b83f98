"""How the demo shows itself: a live panel on a terminal, plain lines otherwise, or JSON lines.

* Terminal: a compact panel (a ``rich`` table that ``rich.live.Live`` redraws in place at the
  terminal's width, long values wrapped inside their cell) once a second, with a progress
  bar for the current phase; events scroll above it. ``rich`` decides colour too
  (``NO_COLOR``, see https://no-color.org).
* Not a terminal (a pipe, a CI log) or ``TERM=dumb``: a header per phase, one status line
  every few seconds, and every event on its own line.
* ``--json``: one JSON object per line (``start``, ``phase``, ``event``, ``snapshot``,
  ``summary``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from poolwatch.demo.metrics import AlertRule, Snapshot

BAR_WIDTH = 24
ALERT = "bold red"


@dataclass(frozen=True)
class Phase:
    """One step of the walk."""

    key: str
    title: str
    explain: str
    fraction: float


@dataclass(frozen=True)
class Progress:
    """Where the walk is: ``phase`` (``index`` of ``total``), ``elapsed`` of ``length`` s."""

    phase: Phase
    index: int
    total: int
    elapsed: float
    length: float


class Display:
    """Writes the demo's progress to ``out`` in the chosen form."""

    def __init__(self, out: TextIO, json_lines: bool) -> None:
        self.out = out
        self.json = json_lines
        self.console = Console(file=out, highlight=False, markup=False, emoji=False)
        self.tty = not json_lines and self.console.is_terminal and not self.console.is_dumb_terminal
        self._live: Live | None = None
        self._last_plain = -1e9

    def _emit(self, event_type: str, **data: Any) -> None:
        self.out.write(json.dumps({"event": event_type, **data}, default=str) + "\n")
        self.out.flush()

    def _print(self, *parts: str | tuple[str, str]) -> None:
        """One line that stays: plain text, or (text, style) pieces on a terminal."""
        if self.tty:
            self.console.print(Text.assemble(*parts))  # above the live panel, if one is shown
        else:
            self.out.write("".join(p if isinstance(p, str) else p[0] for p in parts) + "\n")
            self.out.flush()

    def _stop_live(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def line(self, text: str) -> None:
        """A line that stays (printed above the live panel)."""
        if not self.json:
            self._print(text)

    # -- events ---------------------------------------------------------------------------

    def start(self, info: dict[str, Any]) -> None:
        """What is running and where its metrics are."""
        if self.json:
            self._emit("start", **info)
            return
        self._print(("poolwatch demo", "bold"), f"  ({info['duration']:g} s, Ctrl-C stops)")
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
        self._print((f"== phase {index}/{total}: {phase.title}", "bold cyan"))
        self.line(f"   {phase.explain}")

    def event(self, text: str, kind: str = "info") -> None:
        """Something worth a line of its own (first timeout, a leak, an alert)."""
        if self.json:
            self._emit("event", kind=kind, text=text)
            return
        marker = {"alert": ("ALERT", ALERT), "error": ("error", "red")}.get(
            kind, ("  -->", "yellow")
        )
        self._print("   ", marker, f" {text}")

    # -- the live panel -------------------------------------------------------------------

    def update(
        self,
        progress: Progress,
        snap: Snapshot,
        numbers: dict[str, Any],
        alerts: list[tuple[AlertRule, str]],
    ) -> None:
        """Show the latest numbers (redrawn in place on a terminal)."""
        names = [rule.name for rule, _ in alerts]
        phase, elapsed, length = progress.phase, progress.elapsed, progress.length
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
        panel = self._panel(progress, n, alerts)
        if self._live is None:
            # auto_refresh off: redrawn here only, so no thread writes while events print
            self._live = Live(panel, console=self.console, auto_refresh=False, transient=True)
            self._live.start(refresh=True)
        else:
            self._live.update(panel, refresh=True)

    def _panel(
        self, progress: Progress, n: dict[str, Any], alerts: list[tuple[AlertRule, str]]
    ) -> Table:
        phase, elapsed, length = progress.phase, progress.elapsed, progress.length
        done = min(int(BAR_WIDTH * elapsed / length), BAR_WIDTH) if length else BAR_WIDTH
        bar = "#" * done + "-" * (BAR_WIDTH - done)
        cap = n["pool_size"] + n["max_overflow"]
        busy = n["checked_out"] >= cap > 0
        grid = Table.grid(padding=(0, 2))
        grid.add_column(no_wrap=True, style="bold")
        grid.add_column(overflow="fold")  # long values wrap inside the cell, counted by rich
        grid.add_row(
            f"phase {progress.index}/{progress.total}",
            f"{phase.key}  [{bar}] {elapsed:4.1f}/{length:.0f} s",
        )
        grid.add_row(
            "app pool",
            Text.assemble(
                "checked out ",
                (f"{n['checked_out']:g}/{cap:g}", ALERT if busy else ""),
                f"  idle {n['idle']:g}  overflow {n['overflow']:g}  waiting {n['waiting']:g}"
                f"  oldest {n['oldest_checkout_seconds']:.1f} s",
            ),
        )
        grid.add_row(
            "",
            f"checkouts {n['checkouts_total']:g}  checkins {n['checkins_total']:g}"
            f"  timeouts {n['timeouts_total']:g}  leaks {n['leaks_total']:g}",
        )
        grid.add_row(
            "requests",
            f"ok {n['requests_ok']}  503 pool timeout {n['requests_timed_out']}"
            f"  other errors {n['requests_failed']}",
        )
        if n["exporter_up"]:
            pg = (
                f"active {n['pg_active']:g}  idle {n['pg_idle']:g}  idle in tx "
                f"{n['pg_idle_in_transaction']:g} (stale {n['pg_idle_in_transaction_stale']:g})"
                f"  lock-waiting {n['pg_lock_waiting']:g}  blocked {n['pg_blocked']:g}"
                f"  max lock wait {n['pg_lock_wait_max_seconds']:.1f} s"
            )
        else:
            pg = "(exporter not running)"
        grid.add_row("PostgreSQL", pg)
        if not alerts:
            grid.add_row("alerts", Text("no alert would fire", style="green"))
        for i, (rule, why) in enumerate(alerts):
            grid.add_row(
                "alerts" if i == 0 else "",
                Text.assemble(
                    ("would fire", ALERT), f" {rule.name} ({rule.severity}, for {rule.for_}): {why}"
                ),
            )
        return grid

    def summary(self, data: dict[str, Any]) -> None:
        """The end: what fired in which phase, and what was cleaned up."""
        self._stop_live()
        if self.json:
            self._emit("summary", **data)
            return
        self.line("")
        self._print(("summary", "bold"))
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
        self._stop_live()
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
