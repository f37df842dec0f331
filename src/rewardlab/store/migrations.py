"""Keeping a store's schema current: refuse a database that is not rewardlab's (or not this
version's), migrate an older rewardlab store in place, stamp the version. All of it runs inside
the transaction that opens the store (`engine.open_engine`), so a failure leaves it as it was.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    inspect,
    select,
)
from sqlalchemy.engine import Connection

from rewardlab.errors import StoreError
from rewardlab.store.schema import (
    RATED_TABLES,
    SCHEMA_VERSION,
    VERSION_TABLE,
    Base,
    Review,
    SchemaVersion,
)

__all__ = ["MIGRATED_REVIEWER", "check_existing_tables", "migrate_schema", "stamp_version"]


def _listed(names: list[str], most: int = 8) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def check_existing_tables(conn: Connection, shown: str) -> None:
    """Refuse a database that is not (only) rewardlab's before anything is written to it.

    Tables of another application: refused when rewardlab would have to add its own tables next
    to them (a store created there earlier, with every table present, still opens). A rewardlab
    table name with other columns (another app, or another rewardlab version): refused, naming
    the table and the columns. Tables missing from an older rewardlab store are simply added.
    """
    inspector = inspect(conn)
    ours = Base.metadata.tables
    # sqlite_sequence and the like are SQLite's own bookkeeping, not another application's
    existing = {t for t in inspector.get_table_names() if not t.startswith("sqlite_")}
    foreign = sorted(existing - set(ours))
    # the version table arrived after the first stores, some of which share a database
    if foreign and set(ours) - existing - {VERSION_TABLE}:
        raise StoreError(f"database {shown} holds tables that are not rewardlab's: "
                         f"{_listed(foreign)}; rewardlab adds its tables only to an empty "
                         "database or its own: use another database for the store")
    for table in sorted(existing & set(ours)):
        have = {c["name"] for c in inspector.get_columns(table)}
        want = set(ours[table].columns.keys())
        if have != want:
            raise StoreError(_column_mismatch(shown, table, sorted(want - have),
                                              sorted(have - want)))


def _stored_version(conn: Connection) -> int | None:
    """The store's schema version: its version row, 1 for a store from before versions, None for
    a database without rewardlab tables."""
    tables = set(inspect(conn).get_table_names())
    if VERSION_TABLE in tables:
        return conn.scalar(select(func.max(SchemaVersion.version))) or 1
    return 1 if tables & (set(Base.metadata.tables) - {VERSION_TABLE}) else None


def migrate_schema(conn: Connection, shown: str) -> None:
    """Bring an older rewardlab store up to SCHEMA_VERSION in place (inside the caller's
    transaction, so a failure leaves it as it was); refuse a store written by a newer rewardlab."""
    version = _stored_version(conn)
    if version is None or version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise StoreError(f"database {shown} is a rewardlab store of schema version {version}, "
                         f"newer than this rewardlab reads ({SCHEMA_VERSION}): upgrade rewardlab "
                         "or use another database for the store")
    if version < 2:
        _migrate_reviews_v2(conn)
    # 2 → 3 and 3 → 4 add tables only: the caller's `create_all` creates them
    if version < 5:
        _migrate_examples_v5(conn)


# The v1 reviews table, to read the old rows typed (SQLite hands back datetimes as text).
_V1_REVIEWS = Table("reviews", MetaData(), Column("id", Integer), Column("example_id", Integer),
                    Column("detector", String(200)), Column("is_issue", Boolean),
                    Column("note", Text), Column("created_at", DateTime(timezone=True)))
MIGRATED_REVIEWER = "unknown"  # v1 reviews had no reviewer


def _migrate_reviews_v2(conn: Connection) -> None:
    """v1 → v2: is_issue becomes verdict tp/fp, reviewer "unknown"; v1 appended a row per call,
    so of several reviews of one example × detector the latest is kept (it was the last word)."""
    have = {c["name"] for c in inspect(conn).get_columns("reviews")} \
        if "reviews" in inspect(conn).get_table_names() else None
    if have != set(_V1_REVIEWS.columns.keys()):
        return  # no reviews table (created below) or not v1's: check_existing_tables names it
    latest: dict[tuple[int, str], Any] = {}
    for row in conn.execute(select(_V1_REVIEWS).order_by(_V1_REVIEWS.c.id)):
        latest[(row.example_id, row.detector)] = row
    # dropping the table drops its index too, so the new table can take the names
    _V1_REVIEWS.drop(conn)
    cast(Table, Review.__table__).create(conn)
    rows = [{"example_id": r.example_id, "detector": r.detector, "reviewer": MIGRATED_REVIEWER,
             "verdict": "tp" if r.is_issue else "fp", "note": r.note or "",
             "created_at": r.created_at, "updated_at": r.created_at}
            for r in sorted(latest.values(), key=lambda r: r.id)]
    if rows:
        conn.execute(insert(Review), rows)


# The columns v5 adds to `examples`: a derived pair's rated prompt and response positions.
_V5_EXAMPLE_COLUMNS = (
    ("rated_id", "INTEGER REFERENCES rated_prompts (id) ON DELETE CASCADE"),
    ("chosen_pos", "INTEGER"),
    ("rejected_pos", "INTEGER"),
)


def _migrate_examples_v5(conn: Connection) -> None:
    """v4 → v5: the rated tables, then three NULL columns on `examples` (every existing row is a
    plain pair: NULL is right for it). ADD COLUMN, on SQLite and PostgreSQL alike, keeps the
    rows, their ids and what points at them (flags, reviews); the rated tables come first
    because PostgreSQL checks a REFERENCES target when the column is added."""
    inspector = inspect(conn)
    if "examples" not in inspector.get_table_names():
        return  # created whole by the caller's `create_all`
    have = {c["name"] for c in inspector.get_columns("examples")}
    added = {column for column, _ in _V5_EXAMPLE_COLUMNS}
    if have != set(Base.metadata.tables["examples"].columns.keys()) - added:
        return  # not v4's examples table: check_existing_tables names what differs
    Base.metadata.create_all(conn, tables=[Base.metadata.tables[t] for t in RATED_TABLES])
    for column, ddl in _V5_EXAMPLE_COLUMNS:
        conn.exec_driver_sql(f"ALTER TABLE examples ADD COLUMN {column} {ddl}")


def stamp_version(conn: Connection) -> None:
    """Record SCHEMA_VERSION as the store's version (once it is created or migrated)."""
    if conn.scalar(select(func.max(SchemaVersion.version))) != SCHEMA_VERSION:
        conn.execute(delete(SchemaVersion))
        conn.execute(insert(SchemaVersion), [{"version": SCHEMA_VERSION}])


def _column_mismatch(shown: str, table: str, lacks: list[str], extra: list[str]) -> str:
    parts = ([f"lacks column(s) {_listed(lacks)}"] if lacks else []) + (
        [f"has column(s) {_listed(extra)} that rewardlab does not know"] if extra else [])
    return (f"database {shown} is not a rewardlab store of this version: table {table!r} "
            f"{' and '.join(parts)}; use another database for the store")
