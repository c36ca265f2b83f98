"""Log output in logfmt (the Prometheus exporters' default) or JSON, secrets redacted.

Every record passes through :class:`RedactingFilter`, so a password can reach no log line
even when it hides inside a driver's exception message. Extra fields given with
``logger.info("msg", extra={"fields": {...}})`` are appended as key/value pairs.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from .dsn import scrub

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}
FORMATS = ("logfmt", "json")
LOGGER = "poolwatch.exporter"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return dict(fields) if isinstance(fields, dict) else {}


def _timestamp(record: logging.LogRecord) -> str:
    millis = int(record.msecs)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{millis:03d}Z"


def _level(record: logging.LogRecord) -> str:
    return "warn" if record.levelno == logging.WARNING else record.levelname.lower()


def _logfmt_value(value: object) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' ="\\\n\t'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def _record_pairs(record: logging.LogRecord) -> dict[str, object]:
    """The keys every log line carries, in order (exceptions as one ``err`` field)."""
    pairs: dict[str, object] = {
        "ts": _timestamp(record),
        "level": _level(record),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    pairs.update(_fields(record))
    if record.exc_info and record.exc_info[1] is not None:
        pairs["err"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
    return pairs


class LogfmtFormatter(logging.Formatter):
    """``ts=... level=info logger=... msg="..." key=value`` (exceptions as one field)."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _record_pairs(record).items())


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the same keys as the logfmt output."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_record_pairs(record), default=str)


class RedactingFilter(logging.Filter):
    """Rewrites each record so that no DSN password or known secret survives formatting."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub(record.getMessage(), self.secrets)
        record.args = None
        fields = _fields(record)
        if fields:
            record.fields = {k: scrub(str(v), self.secrets) for k, v in fields.items()}
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            clean = scrub(f"{exc}", self.secrets)
            record.exc_info = None
            record.exc_text = None
            record.fields = {**_fields(record), "err": f"{type(exc).__name__}: {clean}"}
        return True


def setup_logging(level: str, fmt: str, secrets: tuple[str, ...] = ()) -> None:
    """Send all log output (asyncio's included) to stderr in ``fmt`` at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    # asyncio is chatty at debug; keep it at our level or above info.
    logging.getLogger("asyncio").setLevel(max(LEVELS[level], logging.INFO))
