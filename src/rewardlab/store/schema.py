"""The store's tables and database plumbing: one SQLAlchemy 2 schema for SQLite and PostgreSQL.

Detector output is stored generically (score, flagged, reason per example and run), so a new
detector needs no schema change. Timestamps are UTC; SQLite drops the zone, `as_utc` puts it back.
`open_engine` turns a URL into an engine with the schema created (or one StoreError line), and
`bulk_insert` is the fast path for ingest and flags (executemany on SQLite, COPY on PostgreSQL).
`rewardlab.store.store.Store` is the API; nothing here is meant to be called from outside the store.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    insert,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from rewardlab.errors import StoreError

__all__ = [
    "Base",
    "Dataset",
    "Example",
    "DetectorRun",
    "Flag",
    "Review",
    "Experiment",
    "ExperimentRun",
    "utcnow",
    "as_utc",
    "CHUNK",
    "DB_ERRORS",
    "EXPECTED_URL",
    "bulk_insert",
    "chunks",
    "first_line",
    "mask_url",
    "open_engine",
]

EXPECTED_URL = "expected sqlite:///PATH.db or postgresql+psycopg://USER[:PASSWORD]@HOST[:PORT]/DB"
# Rows per executemany: big enough to amortise round trips, small enough to bound memory.
CHUNK = 5_000

try:  # COPY errors come straight from psycopg, not wrapped by SQLAlchemy
    from psycopg import Error as _PsycopgError
except ImportError:  # pragma: no cover - psycopg is a dependency; SQLite works without it
    class _PsycopgError(Exception):  # type: ignore[no-redef]
        pass

# What a failed statement can raise: rolled back and reported as one StoreError line.
DB_ERRORS = (SQLAlchemyError, _PsycopgError)


def utcnow() -> datetime:
    """Timezone-aware now, the default for every `created_at`."""
    return datetime.now(timezone.utc)


def as_utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes; they were written as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


def _owned_by(table: str, *, index: bool = False) -> Any:
    """A foreign key to `table.id` whose rows go when the owner goes (ON DELETE CASCADE)."""
    return mapped_column(ForeignKey(f"{table}.id", ondelete="CASCADE"), index=index)


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    source: Mapped[str] = mapped_column(Text)  # source spec(s) ingested, " + "-joined
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Example(Base):
    """One stored `PreferencePair`; column names match its fields."""

    __tablename__ = "examples"
    __table_args__ = (
        # Idempotent ingest: a pair is present once per dataset.
        UniqueConstraint("dataset_id", "content_hash", name="uq_examples_dataset_hash"),
        # load_pairs filters by split and orders by source_index; review lookup uses all three.
        Index("ix_examples_dataset_split", "dataset_id", "split", "source_index"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = _owned_by("datasets")
    split: Mapped[str] = mapped_column(String(16))
    source_index: Mapped[int] = mapped_column(Integer)
    subset: Mapped[str] = mapped_column(String(200), default="")
    context: Mapped[str] = mapped_column(Text, default="")
    prompt: Mapped[str] = mapped_column(Text)
    chosen: Mapped[str] = mapped_column(Text)
    rejected: Mapped[str] = mapped_column(Text)
    raw_chosen: Mapped[str | None] = mapped_column(Text)
    raw_rejected: Mapped[str | None] = mapped_column(Text)
    histories_differ: Mapped[bool] = mapped_column(Boolean, default=False)
    parse_issue: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    content_hash: Mapped[str] = mapped_column(String(64))


class DetectorRun(Base):
    __tablename__ = "detector_runs"
    __table_args__ = (Index("ix_detector_runs_dataset_detector", "dataset_id", "detector"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = _owned_by("datasets")
    detector: Mapped[str] = mapped_column(String(200))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    threshold: Mapped[float | None] = mapped_column(Float)
    threshold_kind: Mapped[str] = mapped_column(String(32))
    n_total: Mapped[int] = mapped_column(Integer)
    n_flagged: Mapped[int] = mapped_column(Integer)
    seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Flag(Base):
    """One detector verdict on one example in one run (every pair gets a row, flagged or not)."""

    __tablename__ = "flags"
    __table_args__ = (Index("ix_flags_run_flagged", "run_id", "flagged"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = _owned_by("detector_runs")
    example_id: Mapped[int] = _owned_by("examples")
    score: Mapped[float | None] = mapped_column(Float)  # NULL where the detector gave NaN
    flagged: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(Text, default="")


class Review(Base):
    """A human label on a flagged pair: was the detector right (true positive) or not."""

    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(primary_key=True)
    example_id: Mapped[int] = _owned_by("examples", index=True)
    detector: Mapped[str] = mapped_column(String(200))
    is_issue: Mapped[bool] = mapped_column(Boolean)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Experiment(Base):
    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # A name, not a foreign key: experiments may train on sources that were never ingested.
    dataset: Mapped[str] = mapped_column(String(200))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    out_dir: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ExperimentRun(Base):
    __tablename__ = "experiment_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = _owned_by("experiments", index=True)
    condition: Mapped[str] = mapped_column(String(200))
    seed: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    checkpoint: Mapped[str | None] = mapped_column(Text)


# ---- database plumbing ---------------------------------------------------------------------


def mask_url(url: str) -> str:
    """The URL with any password replaced by `***`, safe for messages and logs."""
    # Greedy up to the last "@" before the path: an unescaped "@" in a password stays hidden.
    return re.sub(r"(://[^/:@]*:)[^/]*@", r"\1***@", url)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL + synchronous=NORMAL: bulk ingest without an fsync per commit, still crash-safe for the
    # database file; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def first_line(error: BaseException) -> str:
    """The driver's message, first line only (errors must fit on one CLI line)."""
    orig = getattr(error, "orig", None) or error
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0]


def open_engine(url: str) -> Engine:
    """Engine with the schema created; every failure becomes one StoreError line naming the URL."""
    shown = mask_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(f"cannot parse database URL {shown!r}; {EXPECTED_URL}") from None
    if parsed.drivername in ("postgresql", "postgres"):  # psycopg 3 is the driver we ship
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise StoreError(f"unsupported database {parsed.get_backend_name()!r} in {shown}; "
                         f"{EXPECTED_URL}")
    try:
        engine = create_engine(parsed)
    except (NoSuchModuleError, ImportError, ArgumentError) as e:
        raise StoreError(f"unknown database driver in {shown} ({first_line(e)}); "
                         f"{EXPECTED_URL}") from e
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        Base.metadata.create_all(engine)
    except SQLAlchemyError as e:
        engine.dispose()
        raise StoreError(f"cannot open database {shown}: {first_line(e)}; {EXPECTED_URL}") from e
    return engine


def chunks(rows: list[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive slices of at most `size` rows."""
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


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
