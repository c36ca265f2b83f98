"""``poolwatch demo`` in a real 80x24 terminal (tmux): the live panel is redrawn in place.

An 80-column terminal wraps long lines; a redraw that miscounts them leaves stale copies of
the panel on the screen and in the scroll-back. Every capture of the pane (screen and
scroll-back) must hold at most one panel while the demo runs, and none once it has ended.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Iterator

import pytest
from test_cli_demo import demo_argv, require_embedded

from support import require_tool, until

PANEL_ROW = re.compile(r"app pool +checked out ")  # the second row of the panel: one per copy


@pytest.fixture
def tmux() -> Iterator[list[str]]:
    """``tmux`` on a server of its own (its own socket), killed at the end."""
    binary = require_tool("tmux")
    argv = [binary, "-L", f"poolwatch-test-{os.getpid()}", "-f", "/dev/null"]
    try:
        yield argv
    finally:
        subprocess.run([*argv, "kill-server"], capture_output=True, check=False)


@pytest.mark.timeout(150)
def test_live_panel_in_80x24_leaves_no_stale_copies(tmux: list[str]) -> None:
    require_embedded()
    command = shlex.join(demo_argv("--duration", "12")) + "; echo DEMO-EXIT=$?; sleep 300"
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TMUX")}
    env["TERM"] = "xterm-256color"
    subprocess.run(
        [*tmux, "new-session", "-d", "-s", "demo", "-x", "80", "-y", "24", command],
        env=env,
        check=True,
    )

    def pane() -> str:
        argv = [*tmux, "capture-pane", "-p", "-t", "demo", "-S", "-", "-E", "-"]
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout

    copies_seen: list[int] = []
    phases_with_panel: set[str] = set()

    def screen() -> str:
        """The pane now; every screen before the end shows the panel at most once."""
        text = pane()
        if "DEMO-EXIT=" not in text:
            copies = len(PANEL_ROW.findall(text))
            assert copies <= 1, f"{copies} copies of the panel:\n{text}"
            copies_seen.append(copies)
            for line in text.splitlines():
                if line.startswith("phase ") and copies:
                    phases_with_panel.add(line.split()[1])
        return text

    text = until(
        screen, holds=lambda t: "DEMO-EXIT=" in t, timeout=120, interval=0.2, what="the demo to end"
    )
    assert "DEMO-EXIT=0" in text, text
    assert 1 in copies_seen, "the panel was never on screen"
    assert len(phases_with_panel) >= 2, phases_with_panel  # redrawn across phases
    assert len(PANEL_ROW.findall(text)) == 0, text  # gone once the walk ended
    assert "\nsummary\n" in text and "cleaned up: stopped" in text
    assert "Traceback" not in text
