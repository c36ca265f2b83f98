"""A small HTTP/1.1 server for the exporter's few GET endpoints, with the limits a server on
a network it does not control needs.

What Go's ``net/http`` gives every Go exporter (``MaxHeaderBytes``, ``ReadHeaderTimeout``,
``IdleTimeout``), plus a connection cap that keeps the service up when it is hit:

- a request head (request line + headers) larger than ``max_header_bytes`` is answered 431
  and the connection closed, so an endless header costs at most about two buffers;
- the head must arrive within ``read_header_timeout`` of the connection being accepted (a
  TLS handshake has a timeout of the same length before that) or of its first byte on a
  kept-alive connection; an idle kept-alive connection is closed after ``idle_timeout``;
- at most ``max_connections`` connections are open; when a new one arrives at the cap the
  connection idle the longest (one that never sent a complete request first) is closed for
  it, so a newcomer with a request (Prometheus, ``/healthz``) is served while others hog
  sockets; a connection busy with a request is never closed for a newcomer. Hitting the cap
  is logged once per minute with the counts since the last line;
- requests with a body, malformed requests and ``Upgrade`` headers cost no WARNING line:
  they are answered (400/413/431/501 or normally, ignoring ``Upgrade``) and logged at DEBUG.

uvicorn was the server before: with httptools it has no header size limit and no header
timeout (one endless header grew the process from 37 to 328 MB), with h11 it bounds the
header size but not the time, and its ``limit_concurrency`` answers 503 to everyone once
idle connections fill it. The app is still a plain ASGI callable (``web.ExporterApp``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

log = logging.getLogger("poolwatch.exporter.http")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
CAP_LOG_INTERVAL = 60.0


@dataclass(frozen=True)
class HttpLimits:
    """The bounds a client can push against; see the module docstring."""

    max_connections: int = 256
    read_header_timeout: float = 10.0
    idle_timeout: float = 120.0
    write_timeout: float = 30.0
    max_header_bytes: int = 16384
    max_headers: int = 100
    shutdown_grace: float = 5.0


class BadRequest(Exception):
    """The request cannot be served; answered with ``status`` and the connection closed."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(eq=False)
class _Conn:
    writer: asyncio.StreamWriter
    since: float = field(default_factory=time.monotonic)
    served: bool = False
    busy: bool = False


@dataclass
class _CapLog:
    """Counts connections closed or refused at the cap; one log line per interval."""

    evicted: int = 0
    refused: int = 0
    last: float = float("-inf")

    def note(self, limit: int, *, refused: bool) -> None:
        if refused:
            self.refused += 1
        else:
            self.evicted += 1
        now = time.monotonic()
        if now - self.last < CAP_LOG_INTERVAL:
            return
        self.last = now
        log.warning(
            "HTTP connection limit reached: closing the longest-idle connections for new ones "
            "(raise --web.max-connections if these are legitimate clients)",
            extra={
                "fields": {
                    "max_connections": limit,
                    "closed_idle": self.evicted,
                    "refused_all_busy": self.refused,
                }
            },
        )
        self.evicted = self.refused = 0


def parse_head(head: bytes, max_headers: int) -> tuple[str, str, str, list[tuple[bytes, bytes]]]:
    """(method, target, version, headers) of a request head ending in CRLF CRLF.

    Raises :class:`BadRequest` for anything that is not a plain HTTP/1.x request.
    """
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].decode("latin-1").split(" ")
    if len(parts) != 3 or not parts[0] or not set(parts[0]) <= _TOKEN or not parts[1]:
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequest(505 if version.startswith("HTTP/") else 400, "unsupported HTTP version")
    if len(lines) - 1 > max_headers:
        raise BadRequest(431, "too many header fields")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or not set(name.decode("latin-1")) <= _TOKEN:
            raise BadRequest(400, "malformed header field")  # also obsolete line folding
        headers.append((name.lower(), value.strip(b" \t")))
    return method, target, version, headers


class HttpServer:
    """Serves an ASGI app over HTTP/1.1 (TLS when ``ssl_context`` is given) within ``limits``."""

    def __init__(
        self,
        app: AsgiApp,
        host: str,
        port: int,
        limits: HttpLimits | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.limits = limits or HttpLimits()
        self.ssl_context = ssl_context
        self.started = False
        self.captured_signal: int | None = None
        self._conns: dict[_Conn, None] = {}
        self._cap_log = _CapLog()
        self._stop = asyncio.Event()

    async def serve(self) -> None:
        """Listen until SIGTERM/SIGINT (or :meth:`stop`), then finish requests in flight."""
        loop = asyncio.get_running_loop()
        tls_kwargs: dict[str, Any] = {}
        if self.ssl_context is not None:
            # The handshake happens before _handle sees the connection (bounded by its own
            # timeout): StreamWriter.start_tls after accept would count it against the cap,
            # but under uvloop 0.23 every fourth such handshake hung.
            tls_kwargs = {
                "ssl": self.ssl_context,
                "ssl_handshake_timeout": self.limits.read_header_timeout,
            }
        server = await asyncio.start_server(
            self._handle,
            self.host or None,
            self.port,
            limit=self.limits.max_header_bytes,
            backlog=1024,
            **tls_kwargs,
        )
        handled = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._on_signal, sig)
                handled.append(sig)
        self.started = True
        try:
            await self._stop.wait()
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)
            server.close()
            await self._drain()

    def stop(self) -> None:
        """Ask :meth:`serve` to return."""
        self._stop.set()

    def _on_signal(self, sig: int) -> None:
        self.captured_signal = sig
        self._stop.set()

    async def _drain(self) -> None:
        for conn in list(self._conns):
            if not conn.busy:
                conn.writer.transport.abort()
        deadline = time.monotonic() + self.limits.shutdown_grace
        while any(c.busy for c in self._conns) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self._conns):
            conn.writer.transport.abort()

    def _admit(self, conn: _Conn) -> bool:
        """Make room for ``conn`` at the cap by closing the longest-idle connection."""
        limit = self.limits.max_connections
        if len(self._conns) >= limit:
            idle = [c for c in self._conns if not c.busy]
            if not idle:
                self._cap_log.note(limit, refused=True)
                return False
            victim = min(idle, key=lambda c: (c.served, c.since))
            del self._conns[victim]
            victim.writer.transport.abort()
            self._cap_log.note(limit, refused=False)
        self._conns[conn] = None
        return True

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(writer)
        if self._stop.is_set() or not self._admit(conn):
            writer.transport.abort()
            return
        try:
            await self._serve_connection(conn, reader)
        except (
            ConnectionError,
            OSError,
            asyncio.IncompleteReadError,
            asyncio.TimeoutError,  # not an OSError before Python 3.11: a client not reading
            ssl.SSLError,
        ) as exc:
            log.debug("HTTP connection ended", extra={"fields": {"err": exc}})
        except Exception:  # a bug must not take the server down; say what it was
            log.exception("HTTP connection failed unexpectedly")
        finally:
            self._conns.pop(conn, None)
            writer.transport.abort()

    async def _serve_connection(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        limits = self.limits
        deadline = conn.since + limits.read_header_timeout
        while not self._stop.is_set():
            if conn.served:  # kept alive: wait for the next request's first byte
                try:
                    first = await asyncio.wait_for(reader.readexactly(1), limits.idle_timeout)
                except (asyncio.TimeoutError, asyncio.IncompleteReadError):
                    return
                deadline = time.monotonic() + limits.read_header_timeout
            else:
                first = b""
            try:
                rest = await asyncio.wait_for(
                    reader.readuntil(b"\r\n\r\n"), max(0.0, deadline - time.monotonic())
                )
            except asyncio.TimeoutError:
                log.debug("HTTP request header not received in time; closing")
                return
            except asyncio.IncompleteReadError:
                return
            except asyncio.LimitOverrunError:
                await self._error(conn, BadRequest(431, "request header too large"))
                return
            conn.busy = True
            try:
                keep_alive = await self._request(conn, reader, first + rest)
            except BadRequest as exc:
                await self._error(conn, exc)
                return
            conn.busy, conn.served, conn.since = False, True, time.monotonic()
            if not keep_alive:
                return

    async def _request(self, conn: _Conn, reader: asyncio.StreamReader, head: bytes) -> bool:
        """Run one request through the app; True when the connection may be reused."""
        method, target, version, headers = parse_head(head, self.limits.max_headers)
        fields = dict(headers)
        if b"transfer-encoding" in fields:
            raise BadRequest(501, "request bodies are not supported")
        length = fields.get(b"content-length", b"0")
        if not length.isdigit():
            raise BadRequest(400, "malformed Content-Length")
        if int(length):
            raise BadRequest(413, "request bodies are not supported")
        tokens = {t.strip().lower() for t in fields.get(b"connection", b"").split(b",")}
        keep_alive = (
            b"close" not in tokens if version == "HTTP/1.1" else b"keep-alive" in tokens
        ) and not self._stop.is_set()
        path, _, query = target.partition("?")
        if not path.startswith("/"):
            raise BadRequest(400, "request target must be a path")
        peer = conn.writer.get_extra_info("peername")
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": version[5:],
            "method": method,
            "scheme": "https" if self.ssl_context else "http",
            "path": unquote(path),
            "raw_path": path.encode("latin-1"),
            "query_string": query.encode("latin-1"),
            "headers": headers,
            "client": tuple(peer[:2]) if isinstance(peer, tuple) else None,
            "server": (self.host, self.port),
        }
        response: dict[str, Any] = {}

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                response["status"] = message["status"]
                response["headers"] = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                response.setdefault("body", []).append(message.get("body", b""))

        await self.app(scope, receive, send)
        if "status" not in response:
            raise BadRequest(500, "the application sent no response")
        await self._write(
            conn,
            response["status"],
            response["headers"],
            b"".join(response.get("body", [])),
            keep_alive,
            version,
        )
        return keep_alive

    async def _error(self, conn: _Conn, exc: BadRequest) -> None:
        log.debug("bad HTTP request", extra={"fields": {"status": exc.status, "err": str(exc)}})
        body = f"{HTTPStatus(exc.status).phrase.lower()}: {exc}\n".encode()
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
        ]
        with contextlib.suppress(ConnectionError, OSError, asyncio.TimeoutError):
            await self._write(conn, exc.status, headers, body, False, "HTTP/1.1")

    async def _write(
        self,
        conn: _Conn,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        keep_alive: bool,
        version: str,
    ) -> None:
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
        out = [f"HTTP/1.1 {status} {phrase}\r\n".encode("latin-1")]
        out += [name + b": " + value + b"\r\n" for name, value in headers]
        if not keep_alive:
            out.append(b"connection: close\r\n")
        elif version == "HTTP/1.0":
            out.append(b"connection: keep-alive\r\n")
        out.append(b"\r\n")
        conn.writer.write(b"".join(out) + body)
        await asyncio.wait_for(conn.writer.drain(), self.limits.write_timeout)
