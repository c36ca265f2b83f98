"""Say which application code holds a connection: cheaply by default, exactly on request.

Two modes, both used for leak reports:

* holder (default): at checkout only the current asyncio task (or thread) is remembered,
  one C call. When a leak is reported, the holder's *current* stack is walked, which
  shows the line it is stuck at while holding the connection (e.g. a slow HTTP call inside
  a transaction), or that it finished without returning the connection.
* exact checkout site (``leak_callsite="checkout"``): the file:line that checked the
  connection out is captured at every checkout. Walking the stack materialises frame
  objects at every checkout, which costs more than the rest of the bookkeeping.

Under an ``AsyncEngine`` the pool runs inside SQLAlchemy's greenlet, so the Python stack
seen from a pool hook ends at ``greenlet_spawn``; the application's coroutine frames live
on the *parent* greenlet (the one running the event loop), suspended at the switch. We
walk from there. Whether a code object belongs to a library is cached per code object, so
a walk is a handful of dict lookups.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import sysconfig
import threading
from types import CodeType, FrameType

import sqlalchemy

try:  # greenlet is what SQLAlchemy's asyncio layer runs on; sync-only installs may lack it
    from greenlet import getcurrent as _getcurrent  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - exercised only without greenlet
    _getcurrent = None

import poolwatch

_POOLWATCH_DIR = os.path.dirname(os.path.abspath(poolwatch.__file__ or ""))
_LIBRARY_DIRS: tuple[str, ...] = (
    *(
        os.path.dirname(os.path.abspath(m.__file__ or "")) + os.sep
        for m in (sqlalchemy, asyncio, contextlib, threading)
    ),
    # Only poolwatch's own plumbing: an application built on poolwatch (its demo, say)
    # is still application code.
    os.path.join(_POOLWATCH_DIR, "instrumentation") + os.sep,
    os.path.join(_POOLWATCH_DIR, "asgi.py"),
)
_STDLIB = sysconfig.get_paths().get("stdlib", "") + os.sep
_INTERNAL_PREFIXES: tuple[str, ...] = (*_LIBRARY_DIRS, "<frozen ")
# Web frameworks sit between the event loop and the handler; skip them as well.
_INTERNAL_PACKAGES = ("starlette", "fastapi", "anyio", "uvicorn", "greenlet")

_internal_cache: dict[CodeType, bool] = {}
_MAX_DEPTH = 64


def _is_internal(code: CodeType) -> bool:
    internal = _internal_cache.get(code)
    if internal is None:
        filename = code.co_filename
        in_stdlib = (
            filename.startswith(_STDLIB)
            and "site-packages" not in filename
            and "dist-packages" not in filename
        )
        internal = (
            in_stdlib
            or filename.startswith(_INTERNAL_PREFIXES)
            # code SQLAlchemy generates at import time, e.g. "<generated wrapper for ...>"
            or (filename.startswith("<") and "sqlalchemy" in filename)
            or any(f"{os.sep}{pkg}{os.sep}" in filename for pkg in _INTERNAL_PACKAGES)
        )
        _internal_cache[code] = internal
    return internal


def _first_user_frame(frame: FrameType | None) -> FrameType | None:
    cache = _internal_cache
    depth = 0
    while frame is not None and depth < _MAX_DEPTH:
        code = frame.f_code
        internal = cache.get(code)
        if internal is None:
            internal = _is_internal(code)
        if not internal:
            return frame
        frame = frame.f_back
        depth += 1
    return None


Callsite = tuple[CodeType, int]  # (code object, bytecode offset): resolved lazily


def capture_callsite() -> Callsite | None:
    """Where the innermost application frame is now, as ``(code, f_lasti)``.

    Resolving a line number costs a line-table decode, so it is left to
    :func:`format_callsite`, which only runs when a leak is reported.
    """
    frame: FrameType | None = None
    if _getcurrent is not None:
        current = _getcurrent()
        if getattr(current, "__sqlalchemy_greenlet_provider__", False):
            # Inside SQLAlchemy's asyncio greenlet: only SQLAlchemy runs here; the caller
            # is suspended on the parent greenlet.
            parent = current.parent
            if parent is not None:
                frame = _first_user_frame(parent.gr_frame)
            if frame is None:
                frame = _first_user_frame(sys._getframe(1))
        else:
            frame = _first_user_frame(sys._getframe(1))
    else:
        frame = _first_user_frame(sys._getframe(1))
    if frame is None:
        return None
    return (frame.f_code, frame.f_lasti)


def resolve_callsite(site: Callsite | None) -> tuple[str, int, str] | None:
    """``(file, line, function)`` for a captured callsite."""
    if site is None:
        return None
    code, lasti = site
    line = code.co_firstlineno
    for start, end, lineno in code.co_lines():
        if start <= lasti < end and lineno is not None:
            line = lineno
            break
    return (code.co_filename, line, code.co_name)


def format_callsite(site: Callsite | None) -> str:
    """``file:line in function`` (or ``unknown location``)."""
    resolved = resolve_callsite(site)
    if resolved is None:
        return "unknown location"
    return f"{resolved[0]}:{resolved[1]} in {resolved[2]}"


def capture_holder() -> object:
    """The asyncio task running now, else the current thread: one cheap call."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running event loop: a sync engine
        task = None
    return task if task is not None else threading.current_thread()


def _where(frame: FrameType | None) -> str:
    frame = _first_user_frame(frame)
    if frame is None:
        return "unknown location"
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


def describe_holder(holder: object) -> str:
    """Where the holder of a connection is now, e.g. ``held by task 'Task-7', now at ...``."""
    if isinstance(holder, tuple):
        return "checked out at " + format_callsite(holder)
    if isinstance(holder, asyncio.Task):
        name = holder.get_name()
        if holder.done():
            return (
                f"checked out by task {name!r}, which finished without returning it "
                "(a session or connection kept beyond its request?)"
            )
        stack = holder.get_stack()
        for frame in reversed(stack):
            if not _is_internal(frame.f_code):
                return f"held by task {name!r}, now at {_where(frame)}"
        return f"held by task {name!r}, now at {_where(stack[-1] if stack else None)}"
    if isinstance(holder, threading.Thread):
        current = sys._current_frames().get(holder.ident or -1)
        if current is None:
            return f"checked out by thread {holder.name!r}, which has exited"
        return f"held by thread {holder.name!r}, now at {_where(current)}"
    return "unknown location"
