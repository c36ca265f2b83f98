"""``--web.config.file``: TLS and basic auth in the format of Prometheus' exporter-toolkit.

Example file::

    tls_server_config:
      cert_file: /etc/poolwatch/tls.crt
      key_file: /etc/poolwatch/tls.key
    basic_auth_users:
      prometheus: $2b$12$...   # htpasswd -nBC 12 prometheus, or python -c 'import bcrypt; ...'

Supported keys: ``tls_server_config.{cert_file,key_file,client_ca_file,client_auth_type}``
and ``basic_auth_users``. Unknown keys are an error (as in exporter-toolkit), so a typo
never silently disables authentication. Relative paths are relative to the file. Each
password must be a complete bcrypt hash with a cost from 4 to 16 (cost 17 already takes
seconds per check; a cost-31 hash would make every first request time out). Checking
passwords is :mod:`.basicauth`'s job.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .basicauth import BasicAuth, Verdict, bcrypt_cost
from .config_files import read_yaml_file
from .settings import ConfigError

_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_TLS_KEYS = {"cert_file", "key_file", "client_ca_file", "client_auth_type"}
_BCRYPT = re.compile(r"^\$2[abxy]\$(\d\d)\$[./A-Za-z0-9]{53}$")
MIN_COST, MAX_COST = 4, 16


@dataclass(frozen=True)
class TlsConfig:
    """Certificate and key for HTTPS, optionally client-certificate verification."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None
    client_cert_reqs: int = ssl.CERT_NONE


@dataclass
class WebConfig:
    """What the web config file asks for; an empty one means plain HTTP, no auth."""

    tls: TlsConfig | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    _auth: BasicAuth | None = field(default=None, repr=False)

    @property
    def auth_required(self) -> bool:
        """True when basic_auth_users is non-empty."""
        return bool(self.users)

    @property
    def auth(self) -> BasicAuth | None:
        """The password checker (cache, bounded bcrypt queue), when users are configured."""
        if self.users and self._auth is None:
            self._auth = BasicAuth(self.users)
        return self._auth

    async def check_authorization(self, header: str | None) -> Verdict:
        """Whether ``header`` (an Authorization value) may see the protected pages."""
        auth = self.auth
        return Verdict.ALLOWED if auth is None else await auth.check(header)


def _file(base: Path, value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"web config: {what} must be a file path")
    path = Path(value) if Path(value).is_absolute() else base / value
    if not path.is_file():
        raise ConfigError(f"web config: {what} {path} does not exist or is not a file")
    try:
        path.open("rb").close()
    except OSError as exc:
        raise ConfigError(f"web config: cannot read {what} {path}: {exc.strerror}") from None
    return str(path)


def _tls(base: Path, raw: Any) -> TlsConfig | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError("web config: tls_server_config must be a mapping")
    unknown = set(raw) - _TLS_KEYS
    if unknown:
        raise ConfigError(
            f"web config: unsupported tls_server_config key(s): {', '.join(sorted(unknown))}"
        )
    if "cert_file" not in raw or "key_file" not in raw:
        raise ConfigError("web config: tls_server_config needs both cert_file and key_file")
    auth_type = raw.get("client_auth_type", "NoClientCert")
    if auth_type == "RequireAnyClientCert":
        # Python's ssl cannot require a certificate without verifying it; refusing is safer
        # than silently accepting clients without one.
        raise ConfigError(
            "web config: client_auth_type RequireAnyClientCert is not supported; "
            "use RequireAndVerifyClientCert with client_ca_file"
        )
    if auth_type not in _CLIENT_AUTH:
        raise ConfigError(f"web config: unknown client_auth_type {auth_type!r}")
    ca = raw.get("client_ca_file")
    if _CLIENT_AUTH[auth_type] != ssl.CERT_NONE and not ca:
        raise ConfigError(f"web config: client_auth_type {auth_type} needs client_ca_file")
    tls = TlsConfig(
        cert_file=_file(base, raw["cert_file"], "cert_file"),
        key_file=_file(base, raw["key_file"], "key_file"),
        client_ca_file=_file(base, ca, "client_ca_file") if ca else None,
        client_cert_reqs=_CLIENT_AUTH[auth_type],
    )
    try:  # fail at start, with one line, rather than on the first HTTPS request
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"web config: cannot load the TLS certificate/key: {exc}") from None
    return tls


def _users(raw: Any) -> dict[str, bytes]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError("web config: basic_auth_users must map user names to bcrypt hashes")
    users: dict[str, bytes] = {}
    for user, hashed in raw.items():
        if not isinstance(hashed, str) or not _BCRYPT.match(hashed.strip()):
            raise ConfigError(
                f"web config: the password of user {user!r} is not a bcrypt hash "
                "($2b$, a two-digit cost, $ and 53 more characters; make one with "
                "htpasswd -nBC 12 '' or python's bcrypt.hashpw)"
            )
        hashed_bytes = hashed.strip().encode()
        cost = bcrypt_cost(hashed_bytes)
        if not MIN_COST <= cost <= MAX_COST:
            raise ConfigError(
                f"web config: the bcrypt hash of user {user!r} has cost {cost}; use a cost "
                f"from {MIN_COST} to {MAX_COST} (12 is a good choice; every cost step doubles "
                "the time of a check)"
            )
        users[str(user)] = hashed_bytes
    return users


def load_web_config(path: str | None) -> WebConfig:
    """Parse and validate ``path``; no path means plain HTTP without authentication."""
    if path is None:
        return WebConfig()
    raw = read_yaml_file(path, "--web.config.file", ConfigError) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"--web.config.file {path} must be a YAML mapping")
    unknown = set(raw) - {"tls_server_config", "basic_auth_users"}
    if unknown:
        names = ", ".join(sorted(map(str, unknown)))
        raise ConfigError(f"web config: unsupported key(s): {names}")
    base = Path(path).resolve().parent
    return WebConfig(
        tls=_tls(base, raw.get("tls_server_config")), users=_users(raw.get("basic_auth_users"))
    )
