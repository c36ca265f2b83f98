"""TLS to PgBouncer, as libpq's ``sslmode`` describes it (``SSLRequest``, then the handshake).

``disable`` never asks; ``allow`` and ``prefer`` (the default, as in libpq) ask and go on in
plain text when PgBouncer says no; ``require`` insists but checks no certificate (unless
``sslrootcert`` is given, as libpq does); ``verify-ca`` checks the chain against
``sslrootcert`` (else the system's CAs); ``verify-full`` checks the host name too. Unix
sockets never use TLS.
"""

from __future__ import annotations

import asyncio
import ssl
import struct

SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_SSL_REQUEST = struct.pack("!ii", 8, 80877103)


class TlsRefused(ConnectionError):
    """PgBouncer answered the SSLRequest with "no" where TLS was required."""


def wants_tls(sslmode: str) -> bool:
    """Whether ``sslmode`` asks PgBouncer for TLS at all."""
    return sslmode in ("prefer", "require", "verify-ca", "verify-full")


def context(sslmode: str, sslrootcert: str | None) -> ssl.SSLContext:
    """The client context for ``sslmode`` (see the module docstring)."""
    verify = sslmode in ("verify-ca", "verify-full") or (sslmode == "require" and sslrootcert)
    if not verify:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx = ssl.create_default_context(cafile=sslrootcert)
    ctx.check_hostname = sslmode == "verify-full"
    return ctx


async def negotiate(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    host: str,
    sslmode: str,
    sslrootcert: str | None,
) -> bool:
    """Ask for TLS and upgrade ``writer`` in place; False when it went on in plain text."""
    writer.write(_SSL_REQUEST)
    await writer.drain()
    answer = await reader.readexactly(1)
    if answer != b"S":
        if sslmode in ("require", "verify-ca", "verify-full"):
            raise TlsRefused(f"it does not accept TLS (client_tls_sslmode), sslmode={sslmode}")
        return False
    if not hasattr(writer, "start_tls"):  # Python 3.10
        raise TlsRefused("TLS to PgBouncer needs Python 3.11 or newer (or sslmode=disable)")
    await writer.start_tls(context(sslmode, sslrootcert), server_hostname=host)
    return True
