"""A minimal client for PgBouncer's admin console (the ``pgbouncer`` pseudo-database).

The console speaks only the simple query protocol (asyncpg's extended-protocol ``fetch`` is
refused). psycopg 3 reads it, but costs the exporter +10.9 MB of RSS imported and +14.2 MB
connected, against +1.2 MB for this module (``bench/bench_console_rss.py``), and the
exporter's budget is 40 MB. So this is the wire protocol on asyncio streams: startup,
``trust`` / cleartext / md5 / SCRAM-SHA-256 authentication, and ``Query`` ->
``RowDescription`` / ``DataRow`` / ``CommandComplete`` / ``ErrorResponse`` /
``ReadyForQuery``. Every failure is a :class:`ConsoleError` with one line and no password.

Example::

    console = await AdminConsole.connect("postgresql://stats:pw@127.0.0.1:6432/pgbouncer")
    try:
        for row in await console.show("POOLS"):
            print(row["database"], row["cl_waiting"])
    finally:
        await console.close()
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from collections.abc import Awaitable, Sequence
from types import TracebackType
from typing import Any, TypeVar

from poolwatch.pgbouncer import tls
from poolwatch.pgbouncer.auth import SCRAM_MECHANISM, AuthError, ScramClient, md5_password
from poolwatch.pgbouncer.target import ConsoleError, Target, parse_target
from poolwatch.pgbouncer.wire import data_row, error_fields, row_description
from poolwatch.redaction import scrub

#: The SHOW commands :meth:`AdminConsole.show` accepts (stats_users may run all of them).
SHOW_COMMANDS = frozenset(
    {"POOLS", "STATS", "STATS_TOTALS", "STATS_AVERAGES", "DATABASES", "LISTS", "CONFIG",
     "VERSION", "USERS", "CLIENTS", "SERVERS", "MEM", "STATE"}
)  # fmt: skip
DEFAULT_TIMEOUT = 5.0
_PROTOCOL_3 = 196608
_AUTH_NAMES = {3: "plain", 5: "md5", 10: "scram-sha-256"}
_T = TypeVar("_T")


class Rows(list[dict[str, Any]]):
    """Rows of one SHOW command; ``columns`` holds the column names even when no row came."""

    columns: tuple[str, ...] = ()


class AdminConsole:
    """One connection to PgBouncer's admin console; queries run one at a time."""

    def __init__(
        self,
        target: Target,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        timeout: float,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.parameters: dict[str, str] = {}
        #: how the login went: trust, plain, md5 or scram-sha-256
        self.auth_method = "trust"
        #: whether the connection is encrypted (sslmode)
        self.tls = False
        self._reader = reader
        self._writer = writer
        self._lock = asyncio.Lock()
        self._broken = False

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        password: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        application_name: str = "poolwatch",
    ) -> AdminConsole:
        """Connect and authenticate, all within ``timeout`` seconds."""
        target = parse_target(dsn, password)

        async def open_and_login() -> AdminConsole:
            if target.host.startswith("/"):
                reader, writer = await asyncio.open_unix_connection(target.socket)
            else:
                reader, writer = await asyncio.open_connection(target.host, target.port)
            console = cls(target, reader, writer, timeout)
            try:
                if not target.host.startswith("/") and tls.wants_tls(target.sslmode):
                    console.tls = await tls.negotiate(
                        reader, writer, target.host, target.sslmode, target.sslrootcert
                    )
                await console._startup(application_name)
            except BaseException:
                console._abort()
                raise
            return console

        return await _bounded(open_and_login(), target, timeout, "connecting")

    @property
    def closed(self) -> bool:
        """True once closed, or after a failure that left the connection unusable."""
        return self._broken or self._writer.is_closing()

    async def show(self, what: str) -> Rows:
        """``SHOW <what>`` (e.g. ``"POOLS"``) as rows keyed by the columns PgBouncer sent.

        Numbers come back as ``int`` / ``float``, NULL as ``None``. Column sets differ
        between PgBouncer versions: look at ``rows.columns`` rather than assuming one.
        """
        name = what.strip().upper()
        if name.startswith("SHOW "):
            name = name[5:].strip()
        if name not in SHOW_COMMANDS:
            raise ConsoleError(
                f"unknown SHOW command {what!r}: one of {', '.join(sorted(SHOW_COMMANDS))}"
            )
        return await self.execute(f"SHOW {name}")

    async def show_many(self, whats: Sequence[str]) -> list[Rows | ConsoleError]:
        """Several ``SHOW`` commands pipelined: all sent at once, then read in order, so they
        cost one round trip and one ``timeout`` together. A command PgBouncer answers with
        an error gives its :class:`ConsoleError` in its place; the others still come."""
        names = [what.strip().upper().removeprefix("SHOW ").strip() for what in whats]
        unknown = [name for name in names if name not in SHOW_COMMANDS]
        if unknown:
            raise ConsoleError(f"unknown SHOW command {unknown[0]!r}")
        if self.closed:
            raise ConsoleError(f"the admin console connection to {self.target.where} is closed")
        async with self._lock:
            return await _bounded(self._pipeline(names), self.target, self.timeout, "SHOW", self)

    async def execute(self, command: str) -> Rows:
        """Run one console command (``PAUSE``, ``RESUME``, ``RELOAD`` need an admin_users role)."""
        if self.closed:
            raise ConsoleError(f"the admin console connection to {self.target.where} is closed")
        async with self._lock:
            return await _bounded(self._query(command), self.target, self.timeout, command, self)

    async def close(self) -> None:
        """Send Terminate and close the socket (never raises)."""
        if not self._writer.is_closing():
            try:
                self._writer.write(b"X\x00\x00\x00\x04")
                self._writer.close()
                await asyncio.wait_for(self._writer.wait_closed(), 1.0)
            except (OSError, asyncio.TimeoutError):
                pass
        self._broken = True

    async def __aenter__(self) -> AdminConsole:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- protocol -----------------------------------------------------------------------------

    def _abort(self) -> None:
        self._broken = True
        self._writer.close()

    def _send(self, kind: bytes, body: bytes) -> None:
        self._writer.write(kind + struct.pack("!i", len(body) + 4) + body)

    async def _receive(self) -> tuple[bytes, bytes]:
        head = await self._reader.readexactly(5)
        (length,) = struct.unpack("!i", head[1:])
        return head[:1], await self._reader.readexactly(length - 4)

    async def _startup(self, application_name: str) -> None:
        t = self.target
        params = {"user": t.user, "database": t.database, "application_name": application_name}
        body = struct.pack("!i", _PROTOCOL_3)
        body += b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items())
        self._writer.write(struct.pack("!i", len(body) + 5) + body + b"\0")
        scram: ScramClient | None = None
        while True:
            kind, payload = await self._receive()
            if kind == b"E":
                raise ConsoleError(_login_error(t, error_fields(payload)))
            if kind == b"R":
                (code,) = struct.unpack("!i", payload[:4])
                if code in (3, 5, 10) and not t.password:
                    raise ConsoleError(
                        f"PgBouncer at {t.where} wants a password for user {t.user}: put it in "
                        "the DSN, a DSN file or PGPASSWORD"
                    )
                self.auth_method = _AUTH_NAMES.get(code, self.auth_method)
                if code == 3:
                    self._send(b"p", t.password.encode() + b"\0")
                elif code == 5:
                    self._send(
                        b"p", md5_password(t.password, t.user, payload[4:8]).encode() + b"\0"
                    )
                elif code == 10:
                    mechanisms = payload[4:].split(b"\0")
                    if SCRAM_MECHANISM.encode() not in mechanisms:
                        raise ConsoleError(f"PgBouncer at {t.where} offers no SASL we speak")
                    scram = ScramClient(t.password)
                    first = scram.first_message()
                    self._send(
                        b"p",
                        SCRAM_MECHANISM.encode() + b"\0" + struct.pack("!i", len(first)) + first,
                    )
                elif code == 11 and scram is not None:
                    self._send(b"p", scram.final_message(payload[4:]))
                elif code == 12 and scram is not None:
                    scram.verify(payload[4:])
                elif code != 0:
                    raise ConsoleError(
                        f"PgBouncer at {t.where} asks for authentication method {code}, which "
                        "poolwatch does not speak (use auth_type md5, scram-sha-256 or plain)"
                    )
            elif kind == b"S":
                key, value, _ = payload.split(b"\0", 2)
                self.parameters[key.decode()] = value.decode()
            elif kind == b"Z":
                return

    async def _pipeline(self, names: list[str]) -> list[Rows | ConsoleError]:
        for name in names:
            self._send(b"Q", f"SHOW {name}".encode() + b"\0")
        results: list[Rows | ConsoleError] = []
        for name in names:
            try:
                results.append(await self._read_result(f"SHOW {name}"))
            except ConsoleError as exc:  # an ErrorResponse: the next answers still follow
                results.append(ConsoleError(scrub(str(exc), self.target.secrets)))
        return results

    async def _query(self, command: str) -> Rows:
        self._send(b"Q", command.encode() + b"\0")
        return await self._read_result(command)

    async def _read_result(self, command: str) -> Rows:
        rows = Rows()
        oids: list[int] = []
        error: dict[str, str] | None = None
        while True:
            kind, payload = await self._receive()
            if kind == b"T":
                rows.columns, oids = row_description(payload)
            elif kind == b"D":
                rows.append(dict(zip(rows.columns, data_row(payload, oids), strict=True)))
            elif kind == b"E":
                error = error_fields(payload)
            elif kind == b"Z":
                break
        if error is not None:
            raise ConsoleError(_query_error(self.target, command, error))
        return rows


async def run_command(dsn: str, command: str, timeout: float = DEFAULT_TIMEOUT) -> Rows:
    """Connect, run one console command, close: for scripts and tests."""
    console = await AdminConsole.connect(dsn, timeout=timeout)
    try:
        return await console.execute(command)
    finally:
        await console.close()


async def _bounded(
    coro: Awaitable[_T],
    target: Target,
    timeout: float,
    doing: str,
    console: AdminConsole | None = None,
) -> _T:
    """Await ``coro`` within ``timeout``; map every failure to one redacted ConsoleError."""
    try:
        return await asyncio.wait_for(coro, timeout)
    except ConsoleError as exc:  # an ErrorResponse: the connection itself is still fine
        raise ConsoleError(scrub(str(exc), target.secrets)) from None
    except asyncio.TimeoutError:
        message = f"PgBouncer at {target.where} did not answer {doing} within {timeout:g} s"
        if console is not None:
            console._abort()
        error = ConsoleError(scrub(message, target.secrets))
        error.timed_out = True
        raise error from None
    except ssl.SSLError as exc:
        message = f"TLS with PgBouncer at {target.where} failed: {exc.reason or exc}"
    except (OSError, asyncio.IncompleteReadError, EOFError) as exc:
        reason = (
            "it closed the connection"
            if isinstance(exc, asyncio.IncompleteReadError)
            else (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)
        )
        message = f"cannot reach PgBouncer at {target.where} ({doing}): {reason}"
    except (AuthError, ValueError, struct.error, UnicodeDecodeError) as exc:
        message = f"PgBouncer at {target.where} sent something unexpected ({doing}): {exc}"
    if console is not None:
        console._abort()
    raise ConsoleError(scrub(message, target.secrets)) from None


def _login_error(t: Target, error: dict[str, str]) -> str:
    message = error.get("M", "unknown error").splitlines()[0]
    lowered = message.lower()
    if "password authentication failed" in lowered or "sasl authentication failed" in lowered:
        return (
            f"PgBouncer at {t.where} refused the password for user {t.user} "
            "(check the password against PgBouncer's auth_file / auth_query)"
        )
    if "not allowed" in lowered or ("no such user" in lowered and t.database == "pgbouncer"):
        return (
            f"user {t.user} may not use PgBouncer's admin console at {t.where}: add it to "
            "stats_users (read-only SHOW commands) or admin_users in pgbouncer.ini "
            f"(PgBouncer said: {message})"
        )
    return f"PgBouncer at {t.where} refused the login of user {t.user}: {message}"


def _query_error(t: Target, command: str, error: dict[str, str]) -> str:
    message = error.get("M", "unknown error").splitlines()[0]
    if "admin access needed" in message.lower():
        return (
            f"{command} on PgBouncer at {t.where} needs an admin_users role; user {t.user} "
            f"is only allowed SHOW commands (PgBouncer said: {message})"
        )
    return f"{command} failed on PgBouncer at {t.where}: {message}"
