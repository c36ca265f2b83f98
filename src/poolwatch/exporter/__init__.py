"""``poolwatch-exporter``: a Prometheus exporter for PostgreSQL connection-slot pressure.

It keeps one read-only connection to the server, answers each scrape of ``/metrics`` from
a single query over ``pg_stat_activity`` (+ ``pg_blocking_pids`` and settings), and folds
label values beyond the top N into ``other``. Run ``poolwatch-exporter --help``; the SRE
guide is ``docs/exporter.md``.

Module map (one job each):

- ``settings``: command-line flags with environment fallbacks -> :class:`Settings`
- ``dsn``: reading the DSN and redacting its password everywhere
- ``logs``: logfmt / JSON log output with secret redaction
- ``webconfig``: exporter-toolkit style ``--web.config.file`` (TLS, basic auth)
- ``database``: the one reused connection (timeouts, read-only, reconnect with backoff)
- ``collectors``: one module per metric group; SQL fragment + ``collect`` function
- ``scraper``: one query per scrape, single-flight, minimum interval, cached snapshot
- ``web``: the ASGI application (``/``, ``/healthz``, ``/metrics``)
- ``server``: running it under uvicorn, and the ``--healthcheck`` client
"""

from __future__ import annotations

DEFAULT_PORT = 19187
APPLICATION_NAME = "poolwatch-exporter"

__all__ = ["APPLICATION_NAME", "DEFAULT_PORT"]
