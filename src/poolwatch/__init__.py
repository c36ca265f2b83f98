"""poolwatch: see SQLAlchemy connection-pool exhaustion before your users do.

Two lines at start-up::

    engine = create_async_engine(url, pool_size=10, max_overflow=5, pool_timeout=10)
    poolwatch.instrument(engine, name="primary")

and Prometheus sees checked-out / idle / overflow / waiting gauges, checkout-wait, hold and
connect-time histograms, timeouts, invalidations and leaks for that pool. Serve them with
``app.add_route("/metrics", poolwatch.metrics_app())``.

The names are imported on first use, so ``poolwatch-exporter`` (which lives in this package
too) never loads SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from poolwatch._version import __version__

if TYPE_CHECKING:
    from poolwatch.asgi import RouteMiddleware, metrics_app
    from poolwatch.instrumentation.api import PoolInstrumentation, instrument, uninstrument

__all__ = [
    "PoolInstrumentation",
    "RouteMiddleware",
    "__version__",
    "instrument",
    "metrics_app",
    "uninstrument",
]

_LAZY = {
    "PoolInstrumentation": "poolwatch.instrumentation.api",
    "instrument": "poolwatch.instrumentation.api",
    "uninstrument": "poolwatch.instrumentation.api",
    "RouteMiddleware": "poolwatch.asgi",
    "metrics_app": "poolwatch.asgi",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'poolwatch' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
