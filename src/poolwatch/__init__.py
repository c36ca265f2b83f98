"""poolwatch: see SQLAlchemy connection-pool exhaustion before your users do.

Two lines at start-up::

    engine = create_async_engine(url, pool_size=10, max_overflow=5, pool_timeout=10)
    poolwatch.instrument(engine, name="primary")

and Prometheus sees checked-out / idle / overflow / waiting gauges, checkout-wait, hold and
connect-time histograms, timeouts, invalidations and leaks for that pool. Serve them with
``app.add_route("/metrics", poolwatch.metrics_app())``.
"""

from poolwatch._version import __version__
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
