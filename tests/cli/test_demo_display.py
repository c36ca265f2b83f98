"""The demo's display on a real pseudo-terminal and on a pipe, fed plain numbers (no server)."""

from __future__ import annotations

import io
import os
import re
import select
from collections.abc import Iterator

import pytest

from poolwatch.demo.display import Display, Phase, Progress
from poolwatch.demo.metrics import Samples, Snapshot

SGR = re.compile(r"\x1b\[[0-9;]*m")
COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-8]|9[0-7])[;m]")
PHASE = Phase("saturation", "slow external call", "explain", 0.3)
APP = """\
sqlalchemy_pool_size{pool="demo"} 5
sqlalchemy_pool_max_overflow{pool="demo"} 2
sqlalchemy_pool_checked_out{pool="demo"} 7
sqlalchemy_pool_waiting{pool="demo"} 4
"""


def snapshot(at: float) -> tuple[Snapshot, dict[str, object]]:
    snap = Snapshot(at, Samples.parse(APP), Samples(), 10, 3, 0)
    return snap, dict(snap.as_dict("db"))


@pytest.fixture
def terminal() -> Iterator[tuple[io.TextIOWrapper, int]]:
    """The writing end of a real pseudo-terminal, and the reading end's descriptor."""
    leader, follower = os.openpty()
    out = open(follower, "w", encoding="utf-8", closefd=True)  # noqa: SIM115
    try:
        yield out, leader
    finally:
        out.close()
        os.close(leader)


def drain(fd: int) -> str:
    chunks = []
    while select.select([fd], [], [], 0)[0]:
        chunks.append(os.read(fd, 65536))
    return b"".join(chunks).decode(errors="replace")


def test_a_pipe_gets_plain_lines_without_escape_codes() -> None:
    out = io.StringIO()
    display = Display(out, json_lines=False)
    display.phase(2, 4, PHASE)
    display.event("something", "alert")
    display.update(Progress(PHASE, 2, 4, 1.0, 6.0), *snapshot(10.0), alerts=[])
    # within 3 s of the last line: no new line
    display.update(Progress(PHASE, 2, 4, 2.0, 6.0), *snapshot(11.0), alerts=[])
    text = out.getvalue()
    assert "\x1b" not in text
    assert text.splitlines() == [
        "== phase 2/4: slow external call",
        "   explain",
        "   ALERT something",
        "   [saturation    1/6s] pool 7/7 waiting 4 timeouts 0 leaks 0 | pg idle-in-tx 0 "
        "(stale 0) lock-waiting 0 blocked 0 | alerts: none",
    ]


def test_a_terminal_gets_the_live_panel_in_colour(
    terminal: tuple[io.TextIOWrapper, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)
    out, leader = terminal
    display = Display(out, json_lines=False)
    assert display.tty
    display.update(Progress(PHASE, 2, 4, 1.0, 6.0), *snapshot(10.0), alerts=[])
    display.event("first timeout")
    display.update(Progress(PHASE, 2, 4, 2.0, 6.0), *snapshot(11.0), alerts=[])
    display.summary({"phases": []})
    text = drain(leader)
    assert COLOUR.search(text)
    assert "\x1b[?25l" in text and text.rindex("\x1b[?25h") > text.rindex("\x1b[?25l")
    plain = SGR.sub("", text)  # cursor hidden while live, shown again after
    assert "checked out 7/7" in plain and "first timeout" in plain
    assert plain.rstrip().endswith("summary")  # the panel is gone once the walk ends


def test_no_color_keeps_the_panel_without_colour(
    terminal: tuple[io.TextIOWrapper, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("NO_COLOR", "1")
    out, leader = terminal
    display = Display(out, json_lines=False)
    display.update(Progress(PHASE, 2, 4, 1.0, 6.0), *snapshot(10.0), alerts=[])
    display.cleanup({"processes": [], "left_behind": [], "removed": []})
    text = drain(leader)
    assert "checked out 7/7" in SGR.sub("", text)
    assert SGR.search(text)  # bold stays: NO_COLOR is about colour
    assert not COLOUR.search(text)


def test_a_dumb_terminal_gets_plain_lines(
    terminal: tuple[io.TextIOWrapper, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TERM", "dumb")
    out, leader = terminal
    display = Display(out, json_lines=False)
    assert not display.tty
    display.update(Progress(PHASE, 2, 4, 1.0, 6.0), *snapshot(10.0), alerts=[])
    out.flush()
    text = drain(leader)
    assert "\x1b" not in text
    assert "[saturation    1/6s] pool 7/7 waiting 4" in text
