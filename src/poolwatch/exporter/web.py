"""The exporter's HTTP surface as a plain ASGI application.

- ``/``: a small landing page (name, version, redacted target, links);
- ``/healthz``: ``ok`` while the process lives (never asks for credentials, never
  touches the database, so a container HEALTHCHECK can use it);
- the telemetry path (``/metrics``): the snapshot in the Prometheus text format, or
  OpenMetrics when asked, gzip when accepted; basic auth when the web config sets users;
- ``/probe?target=...&module=...`` with ``--config.file``: one of many targets
  (:mod:`poolwatch.exporter.probe`), behind the same web config. Without a DSN the
  exporter is probe-only and ``/metrics`` serves the prober's own metrics.
"""

from __future__ import annotations

import asyncio
import gzip
import html
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client.exposition import choose_encoder

from .. import __version__
from .auth_modules import ProbeConfig
from .basicauth import Verdict
from .database import Database
from .dsn import Dsn
from .exposition import OPENMETRICS_EOF, render
from .own_metrics import collect_auth, collect_own, collect_up, merge_health
from .pgbouncer import pgbouncer_target
from .postgres import postgres_target
from .probe import Prober
from .scraper import Scraper
from .settings import Settings
from .webconfig import WebConfig

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("poolwatch.exporter.web")

LANDING = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>poolwatch-exporter</title></head>
<body>
<h1>poolwatch-exporter {version}</h1>
<p>Prometheus exporter for PostgreSQL connection-slot pressure (sessions, lock waits,
blocking, idle-in-transaction and transaction ages) and PgBouncer's pools.</p>
<p>Target: <code>{target}</code></p>
<ul>
<li><a href="{metrics}">{metrics}</a>: metrics</li>
<li><a href="/healthz">/healthz</a>: liveness</li>
</ul>
</body></html>
"""


_CHALLENGE = (b"www-authenticate", b'Basic realm="poolwatch-exporter"')
_RETRY = (b"retry-after", b"1")


def accepts_gzip(accept_encoding: str) -> bool:
    """True when an ``Accept-Encoding`` value accepts gzip with a q-value above 0.

    >>> accepts_gzip("gzip, deflate"), accepts_gzip("gzip;q=0"), accepts_gzip("*;q=0.5")
    (True, False, True)
    """
    explicit: float | None = None
    wildcard: float | None = None
    for item in accept_encoding.split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        coding = coding.lower()
        if coding in ("gzip", "x-gzip"):
            explicit = q if explicit is None else max(explicit, q)
        elif coding == "*":
            wildcard = q
    chosen = explicit if explicit is not None else wildcard
    return chosen is not None and chosen > 0


class ExporterApp:
    """ASGI app wiring settings, the targets' scrapers and the web config together.

    Watches PostgreSQL (``dsn``), PgBouncer (``pgbouncer``) or both; each target has its
    own source (one connection) and :class:`Scraper`.
    """

    def __init__(
        self,
        settings: Settings,
        dsn: Dsn | None,
        web_config: WebConfig,
        pgbouncer: Dsn | None = None,
        probe: ProbeConfig | None = None,
    ) -> None:
        self.settings = settings
        self.prober = Prober(probe, settings) if probe is not None else None
        self.dsn = dsn
        self.pgbouncer_dsn = pgbouncer
        self.web_config = web_config
        self.scrapers: list[Scraper] = []
        self.database: Database | None = None
        self.scraper: Scraper | None = None
        self.pgbouncer: Scraper | None = None
        if dsn is not None:
            self.database = Database(
                dsn, query_timeout=settings.query_timeout, lock_timeout=settings.lock_timeout
            )
            target = postgres_target(
                self.database, top_n=settings.top_n, stale_threshold=settings.stale_threshold
            )
            self.scraper = Scraper(target, min_interval=settings.min_interval)
            self.scrapers.append(self.scraper)
        if pgbouncer is not None:
            bouncer = pgbouncer_target(
                pgbouncer, timeout=settings.query_timeout, top_n=settings.top_n
            )
            self.pgbouncer = Scraper(bouncer, min_interval=settings.min_interval)
            self.scrapers.append(self.pgbouncer)
        if not self.scrapers and self.prober is None:
            raise ValueError("ExporterApp needs a PostgreSQL or a PgBouncer DSN, or --config.file")

    @property
    def targets_redacted(self) -> str:
        """The watched targets' URLs, passwords masked, for logs and the landing page."""
        shown = ", ".join(d.redacted for d in (self.dsn, self.pgbouncer_dsn) if d is not None)
        return shown or "none (probe-only: /probe)"

    async def close(self) -> None:
        """Close every target's connection (the probed targets' too)."""
        if self.prober is not None:
            await self.prober.close()
        for scraper in self.scrapers:
            await scraper.target.source.close()

    async def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """Scrape (or reuse the snapshot) and encode it; returns (body, content type)."""
        # prometheus_client decides the format (and its content type); the encoding is ours
        _, content_type = choose_encoder(accept or "")
        openmetrics = content_type.startswith("application/openmetrics-text")
        # the exporter's own families that do not depend on a target: /probe's and auth's
        extra = render(self.prober.collect(), openmetrics) if self.prober else b""
        if self.web_config.auth is not None:
            extra += render([collect_auth(self.web_config.auth)], openmetrics)
        if not self.scrapers:  # probe-only
            return (extra + OPENMETRICS_EOF if openmetrics else extra), content_type
        if len(self.scrapers) == 1:
            snaps = [await self.scrapers[0].snapshot()]
        else:  # both targets at once: the slower one bounds the scrape, not their sum
            snaps = list(await asyncio.gather(*(s.snapshot() for s in self.scrapers)))
        own = list(collect_own(self.scrapers[0], snaps[0]))
        own += [collect_up(s, snap) for s, snap in zip(self.scrapers[1:], snaps[1:], strict=True)]
        body = render([*own, *merge_health(snaps)], openmetrics)
        body += b"".join(snap.encoded(openmetrics) for snap in snaps) + extra
        return (body + OPENMETRICS_EOF if openmetrics else body), content_type

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if method not in ("GET", "HEAD"):
            await _respond(send, 405, b"method not allowed\n", extra=[(b"allow", b"GET, HEAD")])
            return
        if path == "/healthz":
            await _respond(send, 200, b"ok\n", head=method == "HEAD")
            return
        probe = path == "/probe" and self.prober is not None
        if path not in ("/", self.settings.telemetry_path) and not probe:
            await _respond(send, 404, b"not found\n")
            return
        verdict = await self.web_config.check_authorization(headers.get("authorization"))
        if verdict is Verdict.BUSY:
            await _respond(send, 429, b"too many password checks; retry\n", extra=[_RETRY])
            return
        if verdict is not Verdict.ALLOWED:
            await _respond(send, 401, b"unauthorized\n", extra=[_CHALLENGE])
            return
        if probe:
            assert self.prober is not None
            query = scope.get("query_string", b"").decode("latin-1")
            status, body, content_type = await self.prober.probe(query, headers.get("accept"))
            zipped: list[tuple[bytes, bytes]] = []
            if status == 200 and accepts_gzip(headers.get("accept-encoding", "")):
                body = gzip.compress(body, compresslevel=1)
                zipped.append((b"content-encoding", b"gzip"))
            await _respond(send, status, body, content_type, method == "HEAD", zipped)
            return
        if path == "/":
            page = LANDING.format(
                version=html.escape(__version__),
                target=html.escape(self.targets_redacted),
                metrics=html.escape(self.settings.telemetry_path),
            )
            await _respond(send, 200, page.encode(), "text/html; charset=utf-8", method == "HEAD")
            return
        body, content_type = await self.render(headers.get("accept"))
        extra: list[tuple[bytes, bytes]] = []
        if accepts_gzip(headers.get("accept-encoding", "")):
            body = gzip.compress(body, compresslevel=1)
            extra.append((b"content-encoding", b"gzip"))
        await _respond(send, 200, body, content_type, method == "HEAD", extra)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    head: bool = False,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})
