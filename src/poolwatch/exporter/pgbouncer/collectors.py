"""PgBouncer collectors, one per ``SHOW`` command, each reading the snapshot only.

Columns are detected, not assumed: a metric whose column this PgBouncer does not send is
left out (e.g. ``cl_active_cancel_req`` before 1.18), and newer columns are ignored. Times
PgBouncer reports in microseconds are exported in seconds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping

from ... import metric_names as m
from ...metric_names import OTHER_LABEL_VALUE, MetricSpec
from ..collectors.base import LabelFolder, add_max, add_sum, counter, family, gauge, text
from ..exposition import Family
from .snapshot import PgBouncerSnapshot, number

POOL_COLUMNS: tuple[tuple[str, MetricSpec], ...] = (
    ("cl_active", m.PGBOUNCER_POOLS_CLIENT_ACTIVE),
    ("cl_waiting", m.PGBOUNCER_POOLS_CLIENT_WAITING),
    ("cl_active_cancel_req", m.PGBOUNCER_POOLS_CLIENT_ACTIVE_CANCEL),
    ("cl_waiting_cancel_req", m.PGBOUNCER_POOLS_CLIENT_WAITING_CANCEL),
    ("sv_active", m.PGBOUNCER_POOLS_SERVER_ACTIVE),
    ("sv_idle", m.PGBOUNCER_POOLS_SERVER_IDLE),
    ("sv_used", m.PGBOUNCER_POOLS_SERVER_USED),
    ("sv_tested", m.PGBOUNCER_POOLS_SERVER_TESTING),
    ("sv_login", m.PGBOUNCER_POOLS_SERVER_LOGIN),
    ("sv_active_cancel", m.PGBOUNCER_POOLS_SERVER_ACTIVE_CANCEL),
    ("sv_being_canceled", m.PGBOUNCER_POOLS_SERVER_BEING_CANCELED),
)
# (column names newest first, metric): max_db_connections is the newer name of the column
DATABASE_COLUMNS: tuple[tuple[tuple[str, ...], MetricSpec], ...] = (
    (("pool_size",), m.PGBOUNCER_DATABASES_POOL_SIZE),
    (("reserve_pool_size", "reserve_pool"), m.PGBOUNCER_DATABASES_RESERVE_POOL),
    (("max_db_connections", "max_connections"), m.PGBOUNCER_DATABASES_MAX_CONNECTIONS),
    (("current_connections",), m.PGBOUNCER_DATABASES_CURRENT_CONNECTIONS),
    (("paused",), m.PGBOUNCER_DATABASES_PAUSED),
    (("disabled",), m.PGBOUNCER_DATABASES_DISABLED),
)
# (column, metric, scale): PgBouncer counts time in microseconds
STATS_COLUMNS: tuple[tuple[str, MetricSpec, float], ...] = (
    ("total_xact_count", m.PGBOUNCER_STATS_TRANSACTIONS, 1.0),
    ("total_query_count", m.PGBOUNCER_STATS_QUERIES, 1.0),
    ("total_wait_time", m.PGBOUNCER_STATS_CLIENT_WAIT, 1e-6),
    ("total_query_time", m.PGBOUNCER_STATS_QUERIES_DURATION, 1e-6),
    ("total_xact_time", m.PGBOUNCER_STATS_SERVER_IN_TRANSACTION, 1e-6),
    ("total_received", m.PGBOUNCER_STATS_RECEIVED_BYTES, 1.0),
    ("total_sent", m.PGBOUNCER_STATS_SENT_BYTES, 1.0),
)
LIST_ITEMS: tuple[tuple[str, MetricSpec], ...] = (
    ("databases", m.PGBOUNCER_DATABASES),
    ("users", m.PGBOUNCER_USERS),
    ("pools", m.PGBOUNCER_POOLS),
    ("free_clients", m.PGBOUNCER_FREE_CLIENTS),
    ("used_clients", m.PGBOUNCER_USED_CLIENTS),
    ("login_clients", m.PGBOUNCER_LOGIN_CLIENTS),
    ("free_servers", m.PGBOUNCER_FREE_SERVERS),
    ("used_servers", m.PGBOUNCER_USED_SERVERS),
)
CONFIG_KEYS: tuple[tuple[str, MetricSpec], ...] = (
    ("max_client_conn", m.PGBOUNCER_CONFIG_MAX_CLIENT_CONNECTIONS),
    ("max_user_connections", m.PGBOUNCER_CONFIG_MAX_USER_CONNECTIONS),
    ("max_db_connections", m.PGBOUNCER_CONFIG_MAX_DB_CONNECTIONS),
    ("default_pool_size", m.PGBOUNCER_CONFIG_DEFAULT_POOL_SIZE),
    ("reserve_pool_size", m.PGBOUNCER_CONFIG_RESERVE_POOL_SIZE),
    ("server_idle_timeout", m.PGBOUNCER_CONFIG_SERVER_IDLE_TIMEOUT),
    ("server_lifetime", m.PGBOUNCER_CONFIG_SERVER_LIFETIME),
    ("query_wait_timeout", m.PGBOUNCER_CONFIG_QUERY_WAIT_TIMEOUT),
    ("client_idle_timeout", m.PGBOUNCER_CONFIG_CLIENT_IDLE_TIMEOUT),
)
# SHOW CONFIG prints durations as seconds; tolerate a unit should a release add one
_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(us|ms|s|min|h)?\s*$")
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, None: 1.0}


class PoolsCollector:
    """SHOW POOLS: clients and server connections per pool, the longest wait, pool mode."""

    name = "pgbouncer_pools"

    def collect(self, snapshot: PgBouncerSnapshot, fold: LabelFolder) -> Iterator[Family]:
        """One family per column this PgBouncer sends, plus maxwait and pools_info."""
        rows = snapshot.rows("POOLS")
        present = [(col, spec) for col, spec in POOL_COLUMNS if col in rows.columns]
        values: dict[str, dict[tuple[str, ...], float]] = {col: {} for col, _ in present}
        maxwait: dict[tuple[str, ...], float] = {}
        info: dict[tuple[str, ...], float] = {}
        has_maxwait = "maxwait" in rows.columns
        for row in rows:
            key = snapshot.pool_key(row.get("database"), row.get("user"))
            for col, _ in present:
                add_sum(values[col], key, number(row[col]))
            if has_maxwait:
                # the peer drops maxwait_us: a sub-second queue would read 0
                wait = number(row["maxwait"]) + number(row.get("maxwait_us")) / 1e6
                add_max(maxwait, key, wait)
            if "pool_mode" in rows.columns:
                info[(*key, text(row["pool_mode"]))] = 1.0
        for col, spec in present:
            yield family(spec, values[col])
        if has_maxwait:
            yield family(m.PGBOUNCER_POOLS_CLIENT_MAXWAIT, maxwait)
        if "pool_mode" in rows.columns:
            yield family(m.PGBOUNCER_POOLS_INFO, info)


class DatabasesCollector:
    """SHOW DATABASES: pool size, reserve, limits, current connections, paused, disabled."""

    name = "pgbouncer_databases"

    def collect(self, snapshot: PgBouncerSnapshot, fold: LabelFolder) -> Iterator[Family]:
        """One family per column this PgBouncer sends (summed over folded databases)."""
        rows = snapshot.rows("DATABASES")
        present: list[tuple[str, MetricSpec]] = []
        for names, spec in DATABASE_COLUMNS:
            found = next((name for name in names if name in rows.columns), None)
            if found is not None:
                present.append((found, spec))
        values: dict[str, dict[tuple[str, ...], float]] = {col: {} for col, _ in present}
        for row in rows:
            name = fold("database", row.get("name"))
            if name == OTHER_LABEL_VALUE:
                key: tuple[str, ...] = (OTHER_LABEL_VALUE,) * 6
            else:
                key = (
                    name,
                    text(row.get("host")),
                    text(row.get("port")),
                    text(row.get("database")),
                    text(row.get("force_user")),
                    text(row.get("pool_mode")),
                )
            for col, _ in present:
                add_sum(values[col], key, number(row[col]))
        for col, spec in present:
            yield family(spec, values[col])


class StatsCollector:
    """SHOW STATS: per-database counters (transactions, queries, time, bytes)."""

    name = "pgbouncer_stats"

    def collect(self, snapshot: PgBouncerSnapshot, fold: LabelFolder) -> Iterator[Family]:
        """Counters in seconds and bytes, summed over folded databases."""
        rows = snapshot.rows("STATS")
        for col, spec, scale in STATS_COLUMNS:
            if col not in rows.columns:
                continue
            values: dict[tuple[str, ...], float] = {}
            for row in rows:
                add_sum(values, (fold("database", row.get("database")),), number(row[col]))
            metric = counter(spec)
            for key in sorted(values):
                metric.add_metric(key, values[key] * scale)
            yield metric


class ListsCollector:
    """SHOW LISTS: how many databases, users, pools, client and server slots."""

    name = "pgbouncer_lists"

    def collect(self, snapshot: PgBouncerSnapshot, fold: LabelFolder) -> Iterator[Family]:
        """One gauge per list item PgBouncer reports."""
        yield from _one_gauge_per_key(snapshot.rows("LISTS"), "list", "items", LIST_ITEMS, number)


class ConfigCollector:
    """SHOW CONFIG: the limits and timeouts that matter to a pool."""

    name = "pgbouncer_config"

    def collect(self, snapshot: PgBouncerSnapshot, fold: LabelFolder) -> Iterator[Family]:
        """One gauge per setting this PgBouncer shows (durations in seconds)."""
        rows = snapshot.rows("CONFIG")
        yield from _one_gauge_per_key(rows, "key", "value", CONFIG_KEYS, config_seconds)


class VersionCollector:
    """SHOW VERSION: ``pgbouncer_version_info{version}``."""

    name = "pgbouncer_version"

    def collect(self, snapshot: PgBouncerSnapshot, fold: LabelFolder) -> Iterator[Family]:
        """The version as a label (``1.18.0``, from ``PgBouncer 1.18.0``)."""
        rows = snapshot.rows("VERSION")
        if rows and rows.columns:
            shown = text(rows[0][rows.columns[0]]).strip()
            metric = gauge(m.PGBOUNCER_VERSION_INFO)
            metric.add_metric([version_label(shown)], 1.0)
            yield metric


def _one_gauge_per_key(
    rows: Iterable[Mapping[str, object]],
    key_column: str,
    value_column: str,
    wanted: Iterable[tuple[str, MetricSpec]],
    convert: Callable[[object], float | None],
) -> Iterator[Family]:
    """For a two-column SHOW (LISTS, CONFIG): an unlabelled gauge for each wanted key that
    this PgBouncer shows and whose value ``convert`` reads (None: left out)."""
    values = {text(row.get(key_column)): row.get(value_column) for row in rows}
    for key, spec in wanted:
        if key not in values:
            continue
        value = convert(values[key])
        if value is not None:
            metric = gauge(spec)
            metric.add_metric([], value)
            yield metric


def version_label(shown: str) -> str:
    """``1.18.0`` from ``PgBouncer 1.18.0`` (or the text as it is when it looks different)."""
    match = re.search(r"\d+\.\d+(?:\.\d+)?\S*", shown)
    return match[0] if match else shown


def config_seconds(value: object) -> float | None:
    """A SHOW CONFIG number (durations in seconds); None when it is not one."""
    if value is None:
        return None
    match = _DURATION.match(str(value))
    if not match:
        return None
    return float(match[1]) * _UNIT[match[2]]


COLLECTORS = (
    PoolsCollector(),
    DatabasesCollector(),
    StatsCollector(),
    ListsCollector(),
    ConfigCollector(),
    VersionCollector(),
)

__all__ = ["COLLECTORS", "config_seconds", "version_label"]
