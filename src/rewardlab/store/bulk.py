"""Writing many rows fast inside a session's transaction: executemany on SQLite, COPY on
PostgreSQL (`bulk_insert`), and the backend's INSERT … ON CONFLICT (`conflict_insert`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, cast

from sqlalchemy import JSON, Table, insert
from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from rewardlab.store.schema import Base

__all__ = ["CHUNK", "IN_CHUNK", "chunks", "conflict_insert", "bulk_insert"]

# Rows per executemany: big enough to amortise round trips, small enough to bound memory.
CHUNK = 5_000
# Keys per IN (...) lookup: well under SQLite's bound-parameter limit.
IN_CHUNK = 500


def chunks(rows: list[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive slices of at most `size` rows."""
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


def conflict_insert(s: Session, model: type[Base]) -> PgInsert | SqliteInsert:
    """An INSERT on `model` with this backend's ON CONFLICT clauses (PostgreSQL's or SQLite's:
    both have DO NOTHING / DO UPDATE and RETURNING)."""
    if s.get_bind().dialect.name == "postgresql":
        return pg_insert(model)
    return sqlite_insert(model)


def bulk_insert(s: Session, model: type[Base], rows: list[dict[str, Any]]) -> None:
    """Insert many rows inside the session's transaction: COPY on PostgreSQL, else executemany.

    Core inserts on the table, not ORM ones: the ORM's per-row bookkeeping was a third of the
    ingest time. COPY is ~3x faster than batched INSERTs on PostgreSQL (160k flags: ~1 s vs ~4 s).
    """
    if not rows:
        return
    table = cast(Table, model.__table__)
    if s.get_bind().dialect.name == "postgresql":
        _copy_rows(s, table, rows)
        return
    for chunk in chunks(rows, CHUNK):
        s.execute(insert(table), chunk)


def _copy_rows(s: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """COPY … FROM STDIN through psycopg; JSON columns go in as their JSON text."""
    columns = list(rows[0])
    json_columns = {c for c in columns if isinstance(table.c[c].type, JSON)}
    names = ", ".join(f'"{c}"' for c in columns)
    # The raw psycopg connection is the session's own, so COPY joins its transaction.
    raw = s.connection().connection.driver_connection
    assert raw is not None  # a live session always has its DBAPI connection
    with raw.cursor() as cursor, cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
        for row in rows:
            copy.write_row([json.dumps(row[c]) if c in json_columns else row[c]
                            for c in columns])
