"""ASGI helpers: a ``/metrics`` endpoint that keeps exposition off the event loop, and a
middleware that tells leak reports which route held a connection.

Neither needs Starlette or FastAPI; both are plain ASGI, so they mount anywhere::

    app = FastAPI()
    app.add_route("/metrics", poolwatch.metrics_app())
    app.add_middleware(poolwatch.RouteMiddleware)
"""

from __future__ import annotations

import asyncio
import gzip
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder

from poolwatch.instrumentation.context import RequestScope, current_request, route_tracking
from poolwatch.instrumentation.multiprocess import ScrapeUnavailable

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _registry_for_scrape(registry: CollectorRegistry | None) -> CollectorRegistry:
    if registry is not None:
        return registry
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Multiprocess mode: every scrape aggregates all workers' files afresh (this worker's
        # pools flushed now, dead workers' gauges dropped and their other files archived).
        from poolwatch.instrumentation.multiprocess import scrape_registry

        return scrape_registry()
    return REGISTRY


def render_metrics(
    registry: CollectorRegistry | None,
    accept: str,
    accept_encoding: str,
    names: list[str] | None = None,
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """Body and headers of one scrape, using prometheus_client's own encoders."""
    target = _registry_for_scrape(registry)
    if names:
        target = target.restricted_registry(names)  # type: ignore[assignment]
    encoder, content_type = choose_encoder(accept)
    body = encoder(target)
    headers = [(b"content-type", content_type.encode())]
    if "gzip" in accept_encoding:
        body = gzip.compress(body, compresslevel=1)
        headers.append((b"content-encoding", b"gzip"))
    return body, headers


class MetricsApp:
    """ASGI app serving Prometheus metrics; build it with :func:`metrics_app`.

    A class (not a function) so Starlette/FastAPI's ``add_route`` treats it as an ASGI app
    and serves it at exactly ``/metrics``, with no redirect to ``/metrics/``.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope.get("method") not in ("GET", "HEAD"):
            await _respond(send, 405, b"method not allowed\n", [(b"allow", b"GET, HEAD")])
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        try:
            body, extra = await asyncio.get_running_loop().run_in_executor(
                None,
                render_metrics,
                self.registry,
                headers.get("accept", ""),
                headers.get("accept-encoding", ""),
                query.get("name[]"),
            )
        except ScrapeUnavailable as exc:  # one line with the fix, also in the app's log
            await _respond(send, 503, f"{exc}\n".encode(), [(b"content-type", b"text/plain")])
            return
        if scope.get("method") == "HEAD":
            body = b""
        await _respond(send, 200, body, extra)


def metrics_app(registry: CollectorRegistry | None = None) -> MetricsApp:
    """An ASGI app serving Prometheus metrics (text or OpenMetrics, gzip when asked).

    Exposition runs in a worker thread, so the event loop only waits for the GIL, never
    for the whole rendering. With ``registry=None`` it serves the global registry, or,
    when ``PROMETHEUS_MULTIPROC_DIR`` is set, every worker process's metrics aggregated.

    Example::

        app.add_route("/metrics", poolwatch.metrics_app())   # FastAPI / Starlette
    """
    return MetricsApp(registry)


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RouteMiddleware:
    """ASGI middleware: per-route pool metrics, and leak reports that name the route.

    With it, every instrumented pool of the process also exports, by route template
    (``route="GET /items/{item_id}"``, never the raw path), the checkout wait
    (``sqlalchemy_pool_route_checkout_duration_seconds``), the hold time
    (``sqlalchemy_pool_route_hold_duration_seconds``) and the connections held now
    (``sqlalchemy_pool_route_checked_out``). Routes are bounded (``instrument(route_limit=)``,
    later ones fold into ``route="other"``); a checkout outside any request is
    ``route="none"``, one in a request no route matched ``route="unmatched"``.

    It costs one context-variable set per request. When the request ends it lets go of the
    scope, so a connection the application forgot (parked on ``request.state``, say) can
    still be garbage collected and given back to the pool.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        route_tracking.enable()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = RequestScope(scope)
        token = current_request.set(request)
        try:
            await self.app(scope, receive, send)
        finally:
            request.scope = None  # copies of this context outlive the request (context.py)
            current_request.reset(token)
