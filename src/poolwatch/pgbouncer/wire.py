"""Decoding the backend messages of the simple query protocol (text format only)."""

from __future__ import annotations

import struct
from typing import Any

# PostgreSQL type OIDs PgBouncer uses in its SHOW output
_INT_OIDS = frozenset({20, 21, 23, 26})
_FLOAT_OIDS = frozenset({700, 701, 1700})


def row_description(payload: bytes) -> tuple[tuple[str, ...], list[int]]:
    """RowDescription -> (column names, type OIDs)."""
    (count,) = struct.unpack("!h", payload[:2])
    names: list[str] = []
    oids: list[int] = []
    pos = 2
    for _ in range(count):
        end = payload.index(b"\0", pos)
        names.append(payload[pos:end].decode())
        (oid,) = struct.unpack("!i", payload[end + 7 : end + 11])
        oids.append(oid)
        pos = end + 19
    return tuple(names), oids


def data_row(payload: bytes, oids: list[int]) -> list[Any]:
    """DataRow -> values: int / float by type OID, None for NULL, else str."""
    (count,) = struct.unpack("!h", payload[:2])
    values: list[Any] = []
    pos = 2
    for i in range(count):
        (length,) = struct.unpack("!i", payload[pos : pos + 4])
        pos += 4
        if length < 0:
            values.append(None)
            continue
        text = payload[pos : pos + length].decode()
        pos += length
        oid = oids[i] if i < len(oids) else 25
        if oid in _INT_OIDS:
            values.append(int(text))
        elif oid in _FLOAT_OIDS:
            values.append(float(text))
        else:
            values.append(text)
    return values


def error_fields(payload: bytes) -> dict[str, str]:
    """ErrorResponse / NoticeResponse -> {field code: value} (M message, C SQLSTATE)."""
    fields: dict[str, str] = {}
    for part in payload.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return fields
