"""Serving the ASGI app with uvicorn (TLS from the web config), and the healthcheck client.

uvicorn is a small, widely deployed ASGI server with TLS support built on the standard
``ssl`` module; the exporter uses it with its own logging (no access log), without the
``Server`` header, and with the httptools parser when installed (the ``exporter`` extra
installs it: it halves the per-request cost compared with the pure-Python h11).
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request

import uvicorn

from .settings import Settings
from .web import ExporterApp

_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def build_server(app: ExporterApp) -> uvicorn.Server:
    """A uvicorn server for ``app`` on the configured address, with TLS if configured."""
    settings, tls = app.settings, app.web_config.tls
    config = uvicorn.Config(
        app,
        host=settings.listen_host,
        port=settings.listen_port,
        log_config=None,
        access_log=False,
        lifespan="on",
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=5,
        ssl_certfile=tls.cert_file if tls else None,
        ssl_keyfile=tls.key_file if tls else None,
        ssl_ca_certs=tls.client_ca_file if tls else None,
        ssl_cert_reqs=tls.client_cert_reqs if tls else ssl.CERT_NONE,
    )
    return uvicorn.Server(config)


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
