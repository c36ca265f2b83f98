"""Trace exemplars for checkout waits, at zero cost when OpenTelemetry is not in use.

``trace_labels()`` looks at ``sys.modules`` first: if the application never imported
``opentelemetry.trace`` there can be no active span, and the check costs one dict lookup.
Only sampled spans give exemplars (an exemplar pointing at a trace nobody kept is noise).
"""

from __future__ import annotations

import sys
from typing import Any

_modules = sys.modules


def trace_labels() -> dict[str, str] | None:
    """``{"trace_id": ..., "span_id": ...}`` of the active sampled span, else None."""
    trace: Any = _modules.get("opentelemetry.trace")
    if trace is None:
        return None
    try:
        ctx = trace.get_current_span().get_span_context()
        if not ctx.is_valid or not ctx.trace_flags.sampled:
            return None
        return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}
    except Exception:
        return None
