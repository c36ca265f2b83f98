"""``instrument(engine, application_name=...)``: name the pool's server sessions.

Every new DBAPI connection of the engine gets ``application_name`` set in its startup
packet (no extra round trip), the way its driver takes it: asyncpg in ``server_settings``,
psycopg (3) / psycopg2 / pg8000 as the ``application_name`` connection keyword. A name the
user already chose wins: ``application_name`` in ``connect_args`` or the URL, in asyncpg's
``server_settings``, in libpq ``options`` (``-c application_name=...``), or ``PGAPPNAME`` in
the environment. The exporter's ``pg_sessions`` and ``pg_idle_in_transaction_sessions``
then carry the same name, so server sessions line up with pools.

The name is bounded as PostgreSQL stores it: printable ASCII (anything else becomes ``?``,
as the server would), at most 63 bytes, and the same in every worker process (no pid), so
the exporter's label set stays bounded.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

logger = logging.getLogger("poolwatch")

MAX_BYTES = 63  # NAMEDATALEN - 1: PostgreSQL truncates longer names
LIBPQ_STYLE = frozenset({"psycopg", "psycopg2", "psycopg2cffi", "pg8000"})


def bounded(name: str) -> str:
    """``name`` as PostgreSQL will show it: printable ASCII only, at most 63 bytes."""
    clean = "".join(c if " " <= c <= "~" else "?" for c in name)
    return clean[:MAX_BYTES]


def default_name(pool: str) -> str:
    """``<service>/<pool>`` with the service from ``OTEL_SERVICE_NAME``, else ``<pool>``."""
    service = os.environ.get("OTEL_SERVICE_NAME", "").strip()
    return bounded(f"{service}/{pool}" if service else pool)


def _user_chose(driver: str, cparams: dict[str, Any]) -> bool:
    if os.environ.get("PGAPPNAME") or cparams.get("application_name"):
        return True
    if driver == "asyncpg":
        return bool((cparams.get("server_settings") or {}).get("application_name"))
    return "application_name" in str(cparams.get("options") or "")


class ApplicationName:
    """The ``do_connect`` listener that sets ``application_name``; :meth:`close` removes it."""

    def __init__(self, engine: Engine, name: str) -> None:
        self.engine = engine
        self.name = bounded(name)
        self.driver = str(engine.dialect.driver)
        self._warned = False
        event.listen(engine, "do_connect", self._on_connect)
        if self.driver != "asyncpg" and self.driver not in LIBPQ_STYLE:
            logger.warning(
                "poolwatch: application_name is not set for driver %r (supported: asyncpg, "
                "psycopg, psycopg2, pg8000); set it in connect_args",
                self.driver,
            )

    def _on_connect(self, dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        try:
            if _user_chose(self.driver, cparams):
                return
            if self.driver == "asyncpg":
                settings = dict(cparams.get("server_settings") or {})
                settings["application_name"] = self.name
                cparams["server_settings"] = settings  # a copy: connect_args stays the user's
            elif self.driver in LIBPQ_STYLE:
                cparams["application_name"] = self.name
        except Exception:  # never break the application's connect
            if not self._warned:
                self._warned = True
                logger.warning("poolwatch: could not set application_name", exc_info=True)

    def close(self) -> None:
        """Stop naming new connections (existing ones keep their name)."""
        if event.contains(self.engine, "do_connect", self._on_connect):
            event.remove(self.engine, "do_connect", self._on_connect)
