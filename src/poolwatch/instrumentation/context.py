"""The current request's route, for leak reports (set by :class:`poolwatch.asgi.RouteMiddleware`).

The middleware puts the ASGI ``scope`` in a context variable before the router runs;
Starlette/FastAPI's router later writes the matched route into that same dict, so at
checkout time we can name the route *template* (``/items/{item_id}``), never the raw path.

The variable holds a :class:`RequestScope` that the middleware empties when the request
ends, not the scope itself: a callback or future created during the request (asyncpg makes
them) carries a copy of the context, and the driver's connection, reachable from the event
loop, keeps it. Through ``request.state`` the scope would then keep a connection the
application forgot from ever being garbage collected and given back to the pool.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any


class RequestScope:
    """The ASGI scope of the request being served, until it ends (then None)."""

    __slots__ = ("scope",)

    def __init__(self, scope: MutableMapping[str, Any]) -> None:
        self.scope: MutableMapping[str, Any] | None = scope


current_request: ContextVar[RequestScope | None] = ContextVar(
    "poolwatch_current_request", default=None
)


class RouteTracking:
    """Whether any RouteMiddleware exists in this process: until one does, checkouts skip
    naming the route (a context-variable read, ~700 instructions).

    One instance, :data:`route_tracking`: an instance attribute with ``__slots__`` is the
    cheapest flag the hot path can read (a class attribute is not specialised before 3.12).
    """

    __slots__ = ("enabled",)

    def __init__(self) -> None:
        self.enabled = False


route_tracking = RouteTracking()


def current_route() -> str | None:
    """``"METHOD /template"`` of the request being served, or None outside a request."""
    request = current_request.get()
    return None if request is None else route_of(request.scope)


def route_of(scope: MutableMapping[str, Any] | None) -> str | None:
    """``"METHOD /template"`` of an ASGI ``scope`` the router has matched, else None."""
    if scope is None:
        return None
    path = getattr(scope.get("route"), "path", None)
    if not isinstance(path, str):
        return None
    method = scope.get("method")
    return f"{method} {path}" if method else path
