"""The store's tables: one SQLAlchemy 2 schema for SQLite and PostgreSQL.

Detector output is stored generically (score, flagged, reason per example and run), so a new detector
needs no schema change. Timestamps are UTC; SQLite drops the zone, `as_utc` puts it back.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

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
]


def utcnow() -> datetime:
    """Timezone-aware now, the default for every `created_at`."""
    return datetime.now(timezone.utc)


def as_utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes; they were written as UTC."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


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
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
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
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
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
    run_id: Mapped[int] = mapped_column(ForeignKey("detector_runs.id", ondelete="CASCADE"))
    example_id: Mapped[int] = mapped_column(ForeignKey("examples.id", ondelete="CASCADE"))
    score: Mapped[float | None] = mapped_column(Float)  # NULL where the detector gave NaN
    flagged: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(Text, default="")


class Review(Base):
    """A human label on a flagged pair: was the detector right (true positive) or not."""

    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(primary_key=True)
    example_id: Mapped[int] = mapped_column(ForeignKey("examples.id", ondelete="CASCADE"), index=True)
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
    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), index=True)
    condition: Mapped[str] = mapped_column(String(200))
    seed: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    checkpoint: Mapped[str | None] = mapped_column(Text)
