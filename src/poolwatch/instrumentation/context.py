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

import weakref
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any


class RequestScope:
    """The ASGI scope of the request being served, until it ends (then None), and its
    ``"METHOD /template"`` once the router has matched it (cached: one formatting per
    request, not per checkout)."""

    __slots__ = ("route", "scope")

    def __init__(self, scope: MutableMapping[str, Any]) -> None:
        self.scope: MutableMapping[str, Any] | None = scope
        self.route: str | None = None

    def match(self) -> str | None:
        """The route template, remembered once the router has written it into the scope."""
        route = route_of(self.scope)
        if route is not None:
            self.route = route
        return route


current_request: ContextVar[RequestScope | None] = ContextVar(
    "poolwatch_current_request", default=None
)


class RouteTracking:
    """Whether any RouteMiddleware exists in this process: until one does, checkouts skip
    naming the route (a context-variable read and a dict lookup) and keep no per-route
    series.

    One instance, :data:`route_tracking`. The accounting reads ``enabled`` when it is
    built (accounting.specialise), so the path without the middleware pays a branch on a
    closure constant; :meth:`enable` rebuilds the accounting of every live pool, because
    Starlette builds its middleware at the first request, after ``instrument()``.
    """

    __slots__ = ("_watchers", "enabled")

    def __init__(self) -> None:
        self.enabled = False
        self._watchers: weakref.WeakSet[Any] = weakref.WeakSet()

    def watch(self, tracker: Any) -> None:
        """Call ``tracker.specialise()`` when route tracking is switched on (or off)."""
        self._watchers.add(tracker)

    def enable(self, enabled: bool = True) -> None:
        """Switch per-route accounting on (off: for tests) and rebuild every live pool's."""
        if self.enabled == enabled:
            return
        self.enabled = enabled
        for tracker in list(self._watchers):
            tracker.specialise()


route_tracking = RouteTracking()


def current_route() -> str | None:
    """``"METHOD /template"`` of the request being served, or None outside a request."""
    request = current_request.get()
    if request is None:
        return None
    return request.route if request.route is not None else request.match()


def route_of(scope: MutableMapping[str, Any] | None) -> str | None:
    """``"METHOD /template"`` of an ASGI ``scope`` the router has matched, else None.

    The whole template, prefixes included: FastAPI keeps ``include_router(prefix=...)``
    out of the matched route's ``path`` (it is in ``scope["fastapi"]``), and Starlette's
    ``mount("/v1", app)`` puts its prefix in ``root_path`` (beyond the ``app_root_path`` it
    started with). Without them, ``/v1/users/{id}`` and ``/v2/users/{id}`` would share one
    series.
    """
    if scope is None:
        return None
    path = None
    fastapi = scope.get("fastapi")
    if isinstance(fastapi, dict):
        path = getattr(fastapi.get("effective_route_context"), "path_format", None)
    if not isinstance(path, str):
        route = scope.get("route")
        # a Mount (or Host) whose app is no router: no template of its own to name
        if route is None or hasattr(route, "routes"):
            return None
        path = getattr(route, "path", None)
        if not isinstance(path, str):
            return None
    top = scope.get("app_root_path")
    root = scope.get("root_path")
    if isinstance(top, str) and isinstance(root, str) and root.startswith(top):
        path = root[len(top) :] + path
    method = scope.get("method")
    return f"{method} {path}" if method else path
