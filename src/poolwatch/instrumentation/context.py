"""The current request's route, for leak reports (set by :class:`poolwatch.asgi.RouteMiddleware`).

The middleware stores the ASGI ``scope`` in a context variable before the router runs;
Starlette/FastAPI's router later writes the matched route into that same dict, so at
checkout time we can name the route *template* (``/items/{item_id}``), never the raw path.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

current_scope: ContextVar[MutableMapping[str, Any] | None] = ContextVar(
    "poolwatch_current_scope", default=None
)


class RouteTracking:
    """Whether any RouteMiddleware exists in this process: until one does, checkouts skip
    the context-variable read (~700 instructions, a twentieth of their bookkeeping)."""

    enabled = False


def current_route() -> str | None:
    """``"METHOD /template"`` of the request being served, or None outside a request."""
    return route_of(current_scope.get())


def route_of(scope: MutableMapping[str, Any] | None) -> str | None:
    """``"METHOD /template"`` of an ASGI ``scope`` the router has matched, else None.

    Leak detection keeps the scope itself at checkout (one context-variable read) and
    names the route only when it reports a leak.
    """
    if scope is None:
        return None
    path = getattr(scope.get("route"), "path", None)
    if not isinstance(path, str):
        return None
    method = scope.get("method")
    return f"{method} {path}" if method else path
