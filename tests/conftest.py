"""Shared fixtures. Tests never touch the network: the HF hub is forced offline here."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from rewardlab.store.store import Store

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# `auto` precision keeps the CPU-flag rule in tests: the calibration (tests/training/test_precision.py) would
# otherwise time backbones inside unrelated tests and write to the user's ~/.cache/rewardlab.
os.environ.setdefault("REWARDLAB_PRECISION_AUTO", "flag")

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_PATH = REPO_ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-sample.jsonl.gz"


@pytest.fixture(scope="session")
def sample_path() -> Path:
    """The 1,512-pair HH-RLHF harmless sample shipped in ../shared (never copied into the repo)."""
    assert SAMPLE_PATH.exists(), f"shared sample missing at {SAMPLE_PATH}"
    return SAMPLE_PATH


def _postgres_base_url() -> str:
    """REWARDLAB_TEST_PG_URL, or skip (locally) / fail (CI) when it is missing."""
    url = os.environ.get("REWARDLAB_TEST_PG_URL", "")
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL is required in CI: REWARDLAB_TEST_PG_URL is unset "
                        "(run scripts/start_postgres.sh and export the URL it prints)")
        pytest.skip("REWARDLAB_TEST_PG_URL unset; `make test` starts PostgreSQL and sets it")
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL: a SQLite file, or a uniquely named PostgreSQL database that is
    created for this test and dropped after it."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/t.db"
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    base = _postgres_base_url()
    name = f"rewardlab_t_{uuid.uuid4().hex[:12]}"
    # CREATE/DROP DATABASE cannot run inside a transaction, hence AUTOCOMMIT.
    admin = create_engine(base, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:  # FORCE: a Store the test forgot to close must not block it
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """An open Store on a fresh database of each backend (a test file may define its own)."""
    from rewardlab.store.store import Store

    with Store(db_url) as opened:
        yield opened


@pytest.fixture
def ids(store: Store) -> list[int]:
    """The review tests' seeded dataset (`_review_seed.seed_store`): its train example ids."""
    from _review_seed import seed_store

    return seed_store(store)
