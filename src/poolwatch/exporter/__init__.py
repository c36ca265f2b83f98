"""``poolwatch-exporter``: a Prometheus exporter for PostgreSQL connection-slot pressure
and PgBouncer's pools (``--pgbouncer.dsn``; one process watches either or both).

It keeps one read-only connection to the server, answers each scrape of ``/metrics`` from
a single query over ``pg_stat_activity`` (+ ``pg_blocking_pids`` and settings), and folds
label values beyond the top N into ``other``. Run ``poolwatch-exporter --help``; the SRE
guide is ``docs/exporter.md``.

Targets. A target is a :class:`~.target.Source` that takes a typed snapshot over its
own single connection plus the :class:`~.target.Collector` objects that read it; one
:class:`~.scraper.Scraper` serves one target. A PgBouncer target is a source running its
``SHOW`` commands over one admin-console connection (simple query protocol) and returning
its own snapshot type, with collectors that read it and ``up=pgbouncer_up``; a ``/probe``
handler makes one Scraper per target on demand. Neither touches the PostgreSQL
collectors.

Module map (one job each):

- ``settings``: command-line flags with environment fallbacks -> :class:`Settings`
- ``dsn``: reading the DSN and redacting its password everywhere
- ``logs``: logfmt / JSON log output with secret redaction
- ``webconfig``: exporter-toolkit style ``--web.config.file`` (TLS, basic auth)
- ``database``: the one reused connection (timeouts, read-only, reconnect with backoff)
- ``target``: the seam: ``Source`` (snapshot over its own connection), ``Collector``,
  ``Target`` and the ``CollectorRunner`` that isolates each collector's failure
- ``collectors``: the PostgreSQL collectors, one module per metric group (SQL fragment +
  collector class), the registry, the one statement and ``PgSnapshot``
- ``postgres``: the PostgreSQL target: its source, with the degraded fallback for locked
  catalogs
- ``pgbouncer``: the PgBouncer target: one admin-console connection (``source``), the SHOW
  commands' rows (``snapshot``) and one collector per SHOW command (``collectors``)
- ``backoff``: the reconnect backoff (0.5 s doubling to 8 s)
- ``scraper``: one snapshot per scrape of a target, single-flight, minimum interval, cache
- ``web``: the ASGI application (``/``, ``/healthz``, ``/metrics``)
- ``basicauth``: password checks (cached, one bcrypt at a time, bounded queue)
- ``httpserver``: the HTTP/1.1 server and its limits (header size and time, idle, cap)
- ``server``: building that server from the settings, and the ``--healthcheck`` client
"""

from __future__ import annotations

DEFAULT_PORT = 19187
APPLICATION_NAME = "poolwatch-exporter"

__all__ = ["APPLICATION_NAME", "DEFAULT_PORT"]
