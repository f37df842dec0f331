"""Opening a store's database: URLs (masked in every message), the engine with the schema created
or migrated, and SQLite's locking (WAL, a busy timeout, write transactions that take the write lock
when they begin). Every failure is one StoreError line naming the URL without its password.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from rewardlab.errors import StoreError
from rewardlab.store.migrations import check_existing_tables, migrate_schema, stamp_version
from rewardlab.store.schema import Base

__all__ = ["DB_ERRORS", "EXPECTED_URL", "SQLITE_BUSY_TIMEOUT_S", "WRITE_OPTION", "first_line",
           "hide_secrets", "mask_url", "open_engine", "writer"]

EXPECTED_URL = "expected sqlite:///PATH.db or postgresql+psycopg://USER[:PASSWORD]@HOST[:PORT]/DB"
# How long a second SQLite writer waits for the first to commit before giving up.
SQLITE_BUSY_TIMEOUT_S = 30
WRITE_OPTION = "rewardlab_write"  # execution option marking a writing transaction (`writer`)
try:  # COPY errors come straight from psycopg, not wrapped by SQLAlchemy
    from psycopg import Error as _PsycopgError
except ImportError:  # pragma: no cover - psycopg is a dependency; SQLite works without it
    class _PsycopgError(Exception):  # type: ignore[no-redef]
        pass

# What a failed statement can raise: rolled back and reported as one StoreError line.
DB_ERRORS = (SQLAlchemyError, _PsycopgError)


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
            stamp_version(conn)
    except StoreError:
        engine.dispose()
        raise
    except SQLAlchemyError as e:
        engine.dispose()
        raise StoreError(f"cannot open database {shown}: {hide_secrets(first_line(e), url)}; "
                         f"{EXPECTED_URL}") from e
    return engine
