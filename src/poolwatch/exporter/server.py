"""Serving the ASGI app with :mod:`.httpserver` (TLS from the web config), the open-file
limit it needs, and the healthcheck client.
"""

from __future__ import annotations

import logging
import resource
import ssl
import urllib.error
import urllib.request

from .httpserver import HttpLimits, HttpServer
from .settings import Settings
from .web import ExporterApp

log = logging.getLogger("poolwatch.exporter.server")

_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
# file descriptors kept free for the database connection, the log, bcrypt's thread, imports
FD_RESERVE = 64


def raise_open_file_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard one (where allowed); the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # keep the soft limit; max_connections() fits the cap under it
    return int(soft) if soft != resource.RLIM_INFINITY else 1 << 20


def max_connections(wanted: int, open_files: int) -> int:
    """``wanted``, or fewer when the open-file limit cannot hold that many sockets."""
    room = max(1, open_files - FD_RESERVE)
    if wanted > room:
        log.warning(
            "--web.max-connections is above what the open-file limit allows; using the lower "
            "value (raise the limit with ulimit -n / the container's nofile setting)",
            extra={"fields": {"wanted": wanted, "using": room, "open_files_limit": open_files}},
        )
        return room
    return wanted


def tls_context(app: ExporterApp) -> ssl.SSLContext | None:
    """The server-side TLS context of the web config (TLS 1.2 or newer), or None."""
    tls = app.web_config.tls
    if tls is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # exporter-toolkit's default minimum
    context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.client_ca_file:
        context.load_verify_locations(tls.client_ca_file)
    context.verify_mode = ssl.VerifyMode(tls.client_cert_reqs)
    return context


def build_server(app: ExporterApp, open_files: int | None = None) -> HttpServer:
    """An HTTP server for ``app`` on the configured address, with TLS if configured."""
    settings = app.settings
    files = raise_open_file_limit() if open_files is None else open_files
    limits = HttpLimits(
        max_connections=max_connections(settings.max_connections, files),
        read_header_timeout=settings.read_header_timeout,
        idle_timeout=settings.idle_timeout,
    )
    return HttpServer(
        app, settings.listen_host, settings.listen_port, limits, ssl_context=tls_context(app)
    )


def healthcheck_url(settings: Settings, tls: bool) -> str:
    """Where a local healthcheck reaches the exporter's ``/healthz``."""
    host = _LOOPBACK.get(settings.listen_host, settings.listen_host)
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{settings.listen_port}/healthz"


def healthcheck(settings: Settings, tls: bool, timeout: float = 3.0) -> int:
    """0 when the local exporter answers ``/healthz`` with 200, else 1 (one line on stderr).

    Certificates are not verified: this talks to the exporter on the same host.
    """
    url = healthcheck_url(settings, tls)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            ok = response.status == 200
    except (urllib.error.URLError, OSError) as exc:
        print(f"poolwatch-exporter: unhealthy: {url}: {getattr(exc, 'reason', exc)}")
        return 1
    print(f"poolwatch-exporter: {'healthy' if ok else 'unhealthy'}: {url}")
    return 0 if ok else 1
