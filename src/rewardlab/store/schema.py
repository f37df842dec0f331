"""The store's tables and database plumbing: one SQLAlchemy 2 schema for SQLite and PostgreSQL.

Detector output is stored generically (score, flagged, reason per example and run), so a new
detector needs no schema change. Timestamps are UTC; SQLite drops the zone, `as_utc` puts it back.
`open_engine` turns a URL into an engine with the schema created (or one StoreError line), and
`bulk_insert` is the fast path for ingest and flags (executemany on SQLite, COPY on PostgreSQL).
The schema carries a version (`SCHEMA_VERSION`, table `rewardlab_schema`): `migrate_schema` updates
an older store in place and refuses a newer one.
`rewardlab.store.store.Store` is the API; nothing here is meant to be called from outside the store.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, cast
from urllib.parse import unquote

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
)
from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from rewardlab.errors import StoreError

__all__ = [
    "Base",
    "Dataset",
    "DatasetSource",
    "Example",
    "DetectorRun",
    "Flag",
    "Review",
    "SchemaVersion",
    "SCHEMA_VERSION",
    "VERSION_TABLE",
    "Experiment",
    "ExperimentRun",
    "JudgeAnswer",
    "TrainedRun",
    "TrainedRunReward",
    "utcnow",
    "as_utc",
    "iso_utc",
    "CHUNK",
    "DB_ERRORS",
    "EXPECTED_URL",
    "bulk_insert",
    "conflict_insert",
    "check_existing_tables",
    "chunks",
    "first_line",
    "hide_secrets",
    "mask_url",
    "migrate_schema",
    "open_engine",
    "writer",
]

# Bumped whenever a table changes; `migrate_schema` brings an older store up to it in place.
# 1: before versions (reviews: is_issue, one row per call); 2: reviews with verdict, reviewer and
# updated_at, one row per example × detector × reviewer; 3: trained_runs and trained_run_rewards
# (experiment runs kept by plan id; new tables only, which `create_all` adds to an older store).
SCHEMA_VERSION = 3
VERSION_TABLE = "rewardlab_schema"
EXPECTED_URL = "expected sqlite:///PATH.db or postgresql+psycopg://USER[:PASSWORD]@HOST[:PORT]/DB"
# How long a second SQLite writer waits for the first to commit before giving up.
SQLITE_BUSY_TIMEOUT_S = 30
WRITE_OPTION = "rewardlab_write"  # execution option marking a writing transaction (`writer`)
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


def iso_utc(value: datetime) -> str:
    """A stored timestamp as the store's readers hand it out: ISO 8601, UTC, whole seconds."""
    return as_utc(value).isoformat(timespec="seconds")


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


class DatasetSource(Base):
    """What one split of a dataset was read from, so that a different source is refused, not merged.

    Bound per (dataset, split): a train file and a separate test file (`compare --test`) make one
    dataset with two bindings. `location` is the resolved path (the spec for the hub, synthetic and
    the embedded sample); `fingerprint` is `fingerprint_pairs` of the split's pairs as read.
    A table of its own, not columns of `datasets`: `create_all` adds it to an older database.
    """

    __tablename__ = "dataset_sources"
    __table_args__ = (UniqueConstraint("dataset_id", "split", name="uq_dataset_sources_split"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = _owned_by("datasets")
    split: Mapped[str] = mapped_column(String(16))
    spec: Mapped[str] = mapped_column(Text)
    location: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))
    n_pairs: Mapped[int] = mapped_column(Integer)
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
    """A reviewer's verdict on a flag: was the detector right (tp), wrong (fp), or is it unclear
    (needs_review). One row per example × detector × reviewer, edited in place (`updated_at`)."""

    __tablename__ = "reviews"
    # the unique index leads with example_id, so it also serves lookups by example
    __table_args__ = (UniqueConstraint("example_id", "detector", "reviewer",
                                       name="uq_reviews_example_detector_reviewer"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    example_id: Mapped[int] = _owned_by("examples")
    detector: Mapped[str] = mapped_column(String(200))
    reviewer: Mapped[str] = mapped_column(String(200))
    verdict: Mapped[str] = mapped_column(String(16))  # a records.Verdict: tp | fp | needs_review
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class SchemaVersion(Base):
    """One row: the SCHEMA_VERSION this store was written by (no table = version 1)."""

    __tablename__ = VERSION_TABLE

    version: Mapped[int] = mapped_column(Integer, primary_key=True)


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


class TrainedRun(Base):
    """One finished training run of an experiment plan, keyed by its `RunSpec.id` (which hashes
    its pairs, labels, TrainConfig and the data): the run's record (counts, losses, history, test
    metrics) as JSON; its per-test-pair rewards are `TrainedRunReward` rows. Both are written in
    one transaction when the run ends, so a run is in the store whole or not at all."""

    __tablename__ = "trained_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_key: Mapped[str] = mapped_column(String(64), unique=True)  # RunSpec.id
    dataset_id: Mapped[int] = _owned_by("datasets", index=True)
    stage: Mapped[str] = mapped_column(String(16))  # condition | dose | ablation
    group_name: Mapped[str] = mapped_column(String(200))  # "clean-remove", "random-remove-0.1"…
    seed: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(Text)  # the backbone: measured speeds are per backbone
    pair_steps: Mapped[int] = mapped_column(Integer)  # training pairs × epochs
    seconds: Mapped[float] = mapped_column(Float)  # training time
    record: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrainedRunReward(Base):
    """A trained run's rewards for one test pair (`position` in the experiment's test order)."""

    __tablename__ = "trained_run_rewards"
    __table_args__ = (Index("ix_trained_run_rewards_run", "run_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = _owned_by("trained_runs")
    position: Mapped[int] = mapped_column(Integer)
    example_id: Mapped[int] = mapped_column(Integer)  # the test pair, to check the alignment
    chosen: Mapped[float | None] = mapped_column(Float)  # NULL where the reward was NaN
    rejected: Mapped[float | None] = mapped_column(Float)


class JudgeAnswer(Base):
    """A parsed `llm_judge` answer: what `model` replied to one rendering (one order) of one pair
    under one template, so a re-run asks nothing twice. Keyed by content, not by dataset: the same
    pair in two datasets is asked once. Failed and unparseable calls are not cached (a re-run
    retries them). A table of its own: `create_all` adds it to an older store."""

    __tablename__ = "judge_answers"
    __table_args__ = (UniqueConstraint("model", "template_hash", "pair_hash",
                                       name="uq_judge_answers_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model: Mapped[str] = mapped_column(String(200))
    template_hash: Mapped[str] = mapped_column(String(64))  # messages + generation settings
    pair_hash: Mapped[str] = mapped_column(String(64))  # the rendered messages of one order
    preferred: Mapped[str] = mapped_column(String(1))  # "A" | "B"
    confidence: Mapped[float] = mapped_column(Float)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# ---- database plumbing ---------------------------------------------------------------------


# Greedy up to the last "@" before the path: an unescaped "@" in a password stays hidden.
_USERINFO_PASSWORD = re.compile(r"(://[^/:@]*:)([^/]*)@")
# password=… in a query string (libpq reads `?password=`) or a key=value DSN; sslpassword too.
_PARAM_PASSWORD = re.compile(r"(?i)(password\s*=\s*)('[^']*'|[^&\s]*)")


def mask_url(url: str) -> str:
    """The URL with any password replaced by `***`, safe for messages and logs.

    >>> mask_url("postgresql+psycopg://me:pw@h/db?sslmode=require&password=pw")
    'postgresql+psycopg://me:***@h/db?sslmode=require&password=***'
    """
    return _PARAM_PASSWORD.sub(r"\1***", _USERINFO_PASSWORD.sub(r"\1***@", url))


def hide_secrets(text: str, url: str) -> str:
    """`text` (e.g. a driver's message) with every password in `url` replaced by `***`."""
    secrets = [m.group(2).strip("'") for m in _PARAM_PASSWORD.finditer(url)]
    secrets += [m.group(2) for m in _USERINFO_PASSWORD.finditer(url)]
    secrets += [unquote(secret) for secret in secrets]  # the driver sees them decoded
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return mask_url(text)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL + synchronous=NORMAL: bulk ingest without an fsync per commit, still crash-safe for the
    # database file; foreign keys are off by default in SQLite. A second writer waits for the lock
    # (busy_timeout) instead of failing after the driver's 5 s.
    # isolation_level=None: the driver stops opening transactions itself; `_sqlite_begin` does.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # A write transaction takes the write lock at BEGIN (IMMEDIATE), where the busy timeout waits
    # for it. Begun DEFERRED, it would read first and then fail at once on its first write when
    # another writer had committed meanwhile (SQLITE_BUSY_SNAPSHOT; no waiting can fix that).
    write = conn.get_execution_options().get(WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def writer(engine: Engine) -> Engine:
    """The engine for transactions that write: on SQLite they take the write lock when they begin."""
    return engine.execution_options(**{WRITE_OPTION: True})


def first_line(error: BaseException) -> str:
    """The driver's message, first line only (errors must fit on one CLI line)."""
    orig = getattr(error, "orig", None) or error
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0]


def open_engine(url: str) -> Engine:
    """Engine with the schema created; every failure becomes one StoreError line naming the URL."""
    shown = mask_url(url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a non-numeric port ("h:abc")
        raise StoreError(f"cannot parse database URL {shown!r}; {EXPECTED_URL}") from None
    if parsed.drivername in ("postgresql", "postgres"):  # psycopg 3 is the driver we ship
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise StoreError(f"unsupported database {parsed.get_backend_name()!r} in {shown}; "
                         f"{EXPECTED_URL}")
    try:
        engine = create_engine(parsed)
    except (NoSuchModuleError, ImportError, ArgumentError) as e:
        raise StoreError(f"unknown database driver in {shown} ({hide_secrets(first_line(e), url)}); "
                         f"{EXPECTED_URL}") from e
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    try:
        # one write transaction: the check and the creation see the same database, and two
        # processes opening a new SQLite file create the schema one after the other
        with writer(engine).begin() as conn:
            migrate_schema(conn, shown)
            check_existing_tables(conn, shown)
            Base.metadata.create_all(conn)
            _stamp_version(conn)
    except StoreError:
        engine.dispose()
        raise
    except SQLAlchemyError as e:
        engine.dispose()
        raise StoreError(f"cannot open database {shown}: {hide_secrets(first_line(e), url)}; "
                         f"{EXPECTED_URL}") from e
    return engine


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
    # 2 → 3 adds tables only: the caller's `create_all` creates them


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


def _stamp_version(conn: Connection) -> None:
    if conn.scalar(select(func.max(SchemaVersion.version))) != SCHEMA_VERSION:
        conn.execute(delete(SchemaVersion))
        conn.execute(insert(SchemaVersion), [{"version": SCHEMA_VERSION}])


def _column_mismatch(shown: str, table: str, lacks: list[str], extra: list[str]) -> str:
    parts = ([f"lacks column(s) {_listed(lacks)}"] if lacks else []) + (
        [f"has column(s) {_listed(extra)} that rewardlab does not know"] if extra else [])
    return (f"database {shown} is not a rewardlab store of this version: table {table!r} "
            f"{' and '.join(parts)}; use another database for the store")


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
