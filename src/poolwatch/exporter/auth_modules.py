"""``--config.file``: the auth modules and the target list behind ``/probe``.

The auth modules follow postgres_exporter's ``auth_modules`` format (``type: userpass``,
``userpass.username`` / ``userpass.password``, ``options`` added to the URL as libpq
parameters), plus ``password_file`` so that a Kubernetes Secret can be mounted as a file.
The ``probe`` section is poolwatch's: which targets may be probed at all, named targets,
and the limits. Example::

    auth_modules:
      monitor:
        type: userpass
        userpass:
          username: poolwatch
          password_file: /etc/poolwatch/monitor-password
        options:
          sslmode: require
    probe:
      default_auth_module: monitor
      allowed_targets:            # ?target=host:port/db must match one (glob per part)
        - "*.db.internal:5432/*"
      targets:                    # ?target=NAME
        orders:
          url: postgresql://orders.db.internal:5432/postgres
          auth_module: monitor
      max_targets: 100
      max_concurrent_scrapes: 8
      idle_timeout: 10m

Unknown keys are an error (a typo must not open or close the list silently). Relative
``password_file`` paths are relative to the config file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .config_files import read_yaml_file
from .probe_address import AddressPattern, TargetError, parse_pattern
from .settings import ConfigError, parse_duration

KINDS = ("postgres", "pgbouncer")  # the same as probe.KIND_BUILDERS
DEFAULT_MAX_TARGETS = 100
DEFAULT_MAX_CONCURRENT = 8
DEFAULT_IDLE_TIMEOUT = 600.0


@dataclass(frozen=True)
class AuthModule:
    """Credentials (and URL options) for the targets probed with ``module=<name>``."""

    name: str
    username: str
    password: str | None = field(default=None, repr=False)
    options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NamedTarget:
    """A target known by name: a ``postgresql://`` URL without credentials (Unix sockets
    too, ``?host=/run/postgresql``), its auth module and kind."""

    name: str
    url: str
    auth_module: str | None = None
    kind: str = "postgres"


@dataclass(frozen=True)
class ProbeConfig:
    """Everything ``/probe`` may do, validated."""

    auth_modules: Mapping[str, AuthModule]
    targets: Mapping[str, NamedTarget] = field(default_factory=dict)
    allowed: tuple[AddressPattern, ...] = ()
    default_auth_module: str | None = None
    max_targets: int = DEFAULT_MAX_TARGETS
    max_concurrent: int = DEFAULT_MAX_CONCURRENT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT


def _mapping(value: Any, where: str, keys: set[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping")
    unknown = sorted(str(k) for k in value if k not in keys)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(keys))})")
    return value


def _text(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
        raise ConfigError(f"{where} must be a non-empty string")
    return str(value).strip()


def _auth_module(name: str, raw: Any, base: Path) -> AuthModule:
    where = f"auth_modules.{name}"
    spec = _mapping(raw, where, {"type", "userpass", "options"})
    kind = spec.get("type", "userpass")
    if kind != "userpass":
        raise ConfigError(f"{where}.type must be userpass (got {kind!r})")
    userpass = _mapping(
        spec.get("userpass"), f"{where}.userpass", {"username", "password", "password_file"}
    )
    username = _text(userpass.get("username"), f"{where}.userpass.username")
    password: str | None = None
    if "password" in userpass and "password_file" in userpass:
        raise ConfigError(f"{where}.userpass: give password or password_file, not both")
    if "password" in userpass:
        password = str(userpass["password"])
    elif "password_file" in userpass:
        path = base / _text(userpass["password_file"], f"{where}.userpass.password_file")
        try:
            password = path.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise ConfigError(f"{where}.userpass.password_file {path}: {reason}") from None
    options_raw = spec.get("options") or {}
    if not isinstance(options_raw, dict):
        raise ConfigError(f"{where}.options must be a mapping of libpq parameters")
    options = {str(k): str(v) for k, v in options_raw.items()}
    if any(k.lower() in ("password", "sslpassword", "user") for k in options):
        raise ConfigError(f"{where}.options: put credentials under userpass, not options")
    return AuthModule(name=name, username=username, password=password, options=options)


def _named_target(name: str, raw: Any, modules: Mapping[str, AuthModule]) -> NamedTarget:
    where = f"probe.targets.{name}"
    spec = _mapping(raw, where, {"url", "auth_module", "kind"})
    url = _text(spec.get("url"), f"{where}.url")
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"{where}.url must be a postgresql:// URL")
    if "@" in parts.netloc or "password=" in parts.query.lower():
        raise ConfigError(f"{where}.url must not hold credentials: use an auth module")
    module = spec.get("auth_module")
    if module is not None and str(module) not in modules:
        raise ConfigError(f"{where}.auth_module {module!r} is not in auth_modules")
    kind = str(spec.get("kind", "postgres"))
    if kind not in KINDS:
        raise ConfigError(f"{where}.kind must be one of {', '.join(KINDS)} (got {kind!r})")
    return NamedTarget(
        name=name, url=url, auth_module=None if module is None else str(module), kind=kind
    )


def _positive_int(value: Any, where: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where} must be a whole number >= 1")
    return value


def parse_probe_config(data: Any, base: Path) -> ProbeConfig:
    """Validate the decoded YAML ``data``; raise :class:`ConfigError` (one line)."""
    top = _mapping(data, "the config file", {"auth_modules", "probe"})
    modules_raw = _mapping(
        top.get("auth_modules"), "auth_modules", set(top.get("auth_modules") or {})
    )
    modules = {str(n): _auth_module(str(n), spec, base) for n, spec in modules_raw.items()}
    probe = _mapping(
        top.get("probe"),
        "probe",
        {
            "allowed_targets",
            "targets",
            "default_auth_module",
            "max_targets",
            "max_concurrent_scrapes",
            "idle_timeout",
        },
    )
    default = probe.get("default_auth_module")
    if default is not None and str(default) not in modules:
        raise ConfigError(f"probe.default_auth_module {default!r} is not in auth_modules")
    targets_raw = probe.get("targets") or {}
    if not isinstance(targets_raw, dict):
        raise ConfigError("probe.targets must be a mapping of name -> {url, auth_module}")
    targets = {str(n): _named_target(str(n), spec, modules) for n, spec in targets_raw.items()}
    allowed_raw = probe.get("allowed_targets") or []
    if not isinstance(allowed_raw, list):
        raise ConfigError("probe.allowed_targets must be a list of host:port/database patterns")
    allowed: list[AddressPattern] = []
    for i, text in enumerate(allowed_raw):
        try:
            allowed.append(parse_pattern(_text(text, f"probe.allowed_targets[{i}]")))
        except TargetError as exc:
            raise ConfigError(f"probe.allowed_targets[{i}]: {exc}") from None
    if not targets and not allowed:
        raise ConfigError(
            "the config file allows no target: add probe.allowed_targets patterns "
            "(host:port/database) or probe.targets names"
        )
    if not modules:
        raise ConfigError("the config file has no auth_modules: /probe needs credentials")
    try:
        idle = parse_duration(str(probe.get("idle_timeout", DEFAULT_IDLE_TIMEOUT)))
    except ValueError as exc:
        raise ConfigError(f"probe.idle_timeout: {exc}") from None
    if idle <= 0:
        raise ConfigError("probe.idle_timeout must be > 0")
    return ProbeConfig(
        auth_modules=modules,
        targets=targets,
        allowed=tuple(allowed),
        default_auth_module=None if default is None else str(default),
        max_targets=_positive_int(
            probe.get("max_targets"), "probe.max_targets", DEFAULT_MAX_TARGETS
        ),
        max_concurrent=_positive_int(
            probe.get("max_concurrent_scrapes"),
            "probe.max_concurrent_scrapes",
            DEFAULT_MAX_CONCURRENT,
        ),
        idle_timeout=idle,
    )


def load_probe_config(path: str | None) -> ProbeConfig | None:
    """The config file at ``path`` (None when not given); one-line :class:`ConfigError`."""
    if not path:
        return None
    data = read_yaml_file(path, "--config.file", ConfigError)
    try:
        return parse_probe_config(data, Path(path).resolve().parent)
    except ConfigError as exc:
        raise ConfigError(f"--config.file {path}: {exc}") from None


__all__ = [
    "KINDS",
    "AuthModule",
    "NamedTarget",
    "ProbeConfig",
    "load_probe_config",
    "parse_probe_config",
]
