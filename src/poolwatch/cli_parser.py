"""The argument parser both command-line programs (``poolwatch``, ``poolwatch-exporter``) use."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from poolwatch.redaction import redact_dsn

EXIT_USAGE = 2


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump) and exits 2, and a flag is
    never guessed from a prefix (``--max-conn`` is not silently ``--max-connections``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        # argparse quotes the offending argument, which may be a mistyped --dsn URL
        message = redact_dsn(message)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
