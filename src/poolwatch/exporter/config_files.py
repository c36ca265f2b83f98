"""Reading the files the exporter is pointed at (``--dsn-file``, ``--web.config.file``,
``--config.file``) with errors that are one line and name the flag, never a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # (types-PyYAML not required)


def read_text_file(path: str, flag: str, error: type[ValueError]) -> str:
    """The UTF-8 text of the file given as ``flag path``; raises ``error`` (the caller's
    one-line error class) when it cannot be read or is not UTF-8."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"cannot read {flag} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise error(f"{flag} {path} is not UTF-8 text") from None


def read_yaml_file(path: str, flag: str, error: type[ValueError]) -> Any:
    """The parsed contents of the YAML file given as ``flag path``; raises ``error`` when
    it cannot be read, is not UTF-8 or is not YAML (with the line of the error)."""
    text = read_text_file(path, flag, error)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise error(f"{flag} {path} is not valid YAML{at}") from None
