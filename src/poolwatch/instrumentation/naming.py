"""The default ``pool`` label: ``driver://host:port/database``, never credentials."""

from __future__ import annotations

from sqlalchemy.engine import URL


def default_pool_name(url: URL) -> str:
    """``postgresql+asyncpg://db:5432/app`` for ``postgresql+asyncpg://u:secret@db:5432/app``.

    Query parameters are dropped (they may carry passwords), except a Unix-socket ``host``.
    """
    host = url.host or ""
    if not host:
        socket_host = url.query.get("host")
        if isinstance(socket_host, str):
            host = socket_host
    port = f":{url.port}" if url.port else ""
    return f"{url.drivername}://{host}{port}/{url.database or ''}"
