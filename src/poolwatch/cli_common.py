"""Shared pieces of the ``poolwatch`` sub-commands: exit codes, the one-line error, colour,
argparse types, and running the doctor's coroutines."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
from collections.abc import Callable
from typing import Any, TextIO

from poolwatch import doctor_facts as facts_mod
from poolwatch.cli_parser import EXIT_USAGE as EXIT_USAGE
from poolwatch.cli_parser import OneLineErrorParser as OneLineErrorParser

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """An expected failure: printed as one line, exit code 2."""


# --- output helpers --------------------------------------------------------------------------


class Style:
    """ANSI colour when writing to a terminal (and NO_COLOR is unset), plain text otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.enabled = (
            stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
        )

    def _wrap(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled else text

    def bold(self, text: str) -> str:
        """Bold."""
        return self._wrap("1", text)

    def dim(self, text: str) -> str:
        """Dim."""
        return self._wrap("2", text)

    def red(self, text: str) -> str:
        """Red (problems)."""
        return self._wrap("31;1", text)

    def green(self, text: str) -> str:
        """Green (fine)."""
        return self._wrap("32", text)

    def yellow(self, text: str) -> str:
        """Yellow (warnings)."""
        return self._wrap("33", text)

    def status(self, status: str) -> str:
        """OK / WARN / FAIL, coloured."""
        label = {"ok": "OK  ", "warn": "WARN", "fail": "FAIL"}.get(status, status.upper())
        if status == "fail":
            return self.red(label)
        if status == "warn":
            return self.yellow(label)
        return self.green(label)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def seconds(text: str) -> float:
    """argparse type: a finite number of seconds above 0."""
    value = _number(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text!r}")
    return value


def seconds_or_zero(text: str) -> float:
    """argparse type: a finite number of seconds, 0 or more."""
    value = _number(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, 0 or more, got {text!r}")
    return value


def recycle_seconds(text: str) -> float:
    """argparse type for --pool-recycle: -1 (off) or a finite number of seconds above 0."""
    value = _number(text)
    if value != -1 and (not math.isfinite(value) or value <= 0):
        raise argparse.ArgumentTypeError(
            f"expected -1 (off) or a number of seconds above 0, got {text!r}"
        )
    return value


HELP_FORMAT = argparse.RawDescriptionHelpFormatter

Command = Callable[[argparse.Namespace, TextIO], int]


def add_command(
    sub: Any, name: str, func: Command, *, summary: str, description: str, epilog: str
) -> argparse.ArgumentParser:
    """Register sub-command ``name`` on argparse's sub-parsers ``sub``: ``summary`` in the
    list of commands, the description and examples printed as written, run by ``func``."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=summary, description=description, epilog=epilog, formatter_class=HELP_FORMAT
    )
    parser.set_defaults(func=func)
    return parser


def add_workers_flag(parser: argparse.ArgumentParser) -> None:
    """``--workers``: the processes that each open their own pool."""
    parser.add_argument(
        "--workers", type=int, default=1, help="processes with their own pool (default 1)"
    )


def add_json_flag(
    parser: argparse.ArgumentParser, summary: str = "print one JSON document"
) -> None:
    """``--json``: machine-readable output instead of the text."""
    parser.add_argument("--json", action="store_true", help=summary)


def run_doctor(coro: Any) -> Any:
    """``asyncio.run(coro)``, a DoctorError (bad input, unreachable server) as a CliError."""
    try:
        return asyncio.run(coro)
    except facts_mod.DoctorError as exc:
        raise CliError(str(exc)) from exc


def wrap_doctor_error(fn: Any) -> Any:
    """``fn()``, a DoctorError as a CliError."""
    try:
        return fn()
    except facts_mod.DoctorError as exc:
        raise CliError(str(exc)) from exc
