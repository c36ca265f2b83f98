"""Trace exemplars for checkout waits, at next to no cost when no span is active.

``trace_labels()`` looks at ``sys.modules`` first: if the application never imported
``opentelemetry.trace`` there can be no active span, and the check costs one dict lookup.
Only sampled spans give exemplars (an exemplar pointing at a trace nobody kept is noise).

Importing the trace API is not the same as tracing: FastAPI imports it whenever
opentelemetry-api is installed, and an app without a tracer provider runs with no span
(or OpenTelemetry's invalid one) in its context. So the active span is read straight from
OpenTelemetry's context variable when its default (contextvars) runtime context is in use,
a fraction of the public ``get_current_span()`` call chain; the public API is the fallback.
"""

from __future__ import annotations

import sys
from typing import Any

_modules = sys.modules

# (ContextVar holding the current OpenTelemetry Context, the key of the span in it, the
# invalid span), found once the trace API is loaded; False: use the public API.
_reader: tuple[Any, str, Any] | bool | None = None


def _find_reader(trace: Any) -> tuple[Any, str, Any] | bool:
    try:
        from contextvars import ContextVar

        from opentelemetry import context
        from opentelemetry.trace import propagation

        runtime = getattr(context, "_RUNTIME_CONTEXT", None)
        var = getattr(runtime, "_current_context", None)
        key = getattr(propagation, "_SPAN_KEY", None)
        if isinstance(var, ContextVar) and isinstance(key, str):
            return var, key, trace.INVALID_SPAN
    except Exception:
        pass
    return False


def trace_labels() -> dict[str, str] | None:
    """``{"trace_id": ..., "span_id": ...}`` of the active sampled span, else None."""
    global _reader
    trace: Any = _modules.get("opentelemetry.trace")
    if trace is None:
        return None
    try:
        reader = _reader
        if reader is None:
            reader = _reader = _find_reader(trace)
        if reader is False:
            span = trace.get_current_span()
        else:
            var, key, invalid = reader  # type: ignore[misc]
            span = var.get().get(key)
            if span is None or span is invalid:
                return None
        ctx = span.get_span_context()
        if not ctx.is_valid or not ctx.trace_flags.sampled:
            return None
        return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}
    except Exception:
        return None
