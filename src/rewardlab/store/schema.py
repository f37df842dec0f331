"""The store's tables: one SQLAlchemy 2 schema for SQLite and PostgreSQL.

Detector output is stored generically (score, flagged, reason per example and run), so a new
detector needs no schema change. Timestamps are UTC; SQLite drops the zone, `as_utc` puts it back.
The schema carries a version (`SCHEMA_VERSION`, table `rewardlab_schema`): `store/migrations.py`
updates an older store in place and refuses a newer one. The database plumbing is beside it:
`engine.py` (URLs, opening, SQLite locking), `migrations.py`, `bulk.py` (fast inserts).
`rewardlab.store.store.Store` is the API; nothing here is meant to be called from outside the store.
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
    "DatasetSource",
    "Example",
    "RatedPromptRow",
    "RatedResponse",
    "RatedTie",
    "RATED_TABLES",
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
    "PlannedRun",
    "utcnow",
    "as_utc",
    "iso_utc",
]

# Bumped whenever a table changes; `migrate_schema` brings an older store up to it in place.
# 1: before versions (reviews: is_issue, one row per call); 2: reviews with verdict, reviewer and
# updated_at, one row per example × detector × reviewer; 3: trained_runs and trained_run_rewards
# (experiment runs kept by plan id; new tables only, which `create_all` adds to an older store);
# 4: experiment_plan_runs (each experiment's planned run ids, recorded before its first run trains);
# 5: rated_prompts, rated_responses, rated_ties, and examples.rated_id / chosen_pos / rejected_pos
# (issue 32: K responses per prompt; derived pairs point at their responses).
SCHEMA_VERSION = 5
VERSION_TABLE = "rewardlab_schema"


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


class RatedPromptRow(Base):
    """One stored `RatedPrompt` (issue 32): a prompt of a rated source, its K responses in
    `rated_responses`, its tie labels in `rated_ties`. `context` is `meta["context"]` of the
    RatedPrompt, kept as a column because derived pairs read it (`store/rated.py`)."""

    __tablename__ = "rated_prompts"
    __table_args__ = (
        UniqueConstraint("dataset_id", "content_hash", name="uq_rated_prompts_dataset_hash"),
        Index("ix_rated_prompts_dataset_split", "dataset_id", "split", "source_index"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = _owned_by("datasets")
    split: Mapped[str] = mapped_column(String(16))
    source_index: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # a data.rated.RatedKind
    context: Mapped[str] = mapped_column(Text, default="")
    prompt: Mapped[str] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)  # without "context"
    content_hash: Mapped[str] = mapped_column(String(64))  # data.rated.rated_content_hash


class RatedResponse(Base):
    """Response `position` of a rated prompt, with its score (NULL where it was NaN) and rank;
    the one copy of its text that its derived pairs read."""

    __tablename__ = "rated_responses"
    # the unique index also serves the derived pairs' (rated_id, position) lookups
    __table_args__ = (UniqueConstraint("rated_id", "position", name="uq_rated_responses_position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    rated_id: Mapped[int] = _owned_by("rated_prompts")
    position: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    score: Mapped[float | None] = mapped_column(Float)
    rank: Mapped[int] = mapped_column(Integer)


class RatedTie(Base):
    """A tie label between responses `a` < `b` of a rated prompt."""

    __tablename__ = "rated_ties"
    __table_args__ = (Index("ix_rated_ties_rated", "rated_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    rated_id: Mapped[int] = _owned_by("rated_prompts")
    a: Mapped[int] = mapped_column(Integer)
    b: Mapped[int] = mapped_column(Integer)


RATED_TABLES = ("rated_prompts", "rated_responses", "rated_ties")


class Example(Base):
    """One stored `PreferencePair`; column names match its fields.

    A pair derived from a rated prompt (issue 32) references it instead of copying its texts:
    `rated_id` and the positions of its chosen and rejected responses are set, and its context,
    prompt, chosen and rejected columns hold "" — the texts live once, in `rated_prompts` and
    `rated_responses`, and every read joins them back (`store/rated.py` `pair_text_columns`).
    "" rather than NULL: the columns are NOT NULL in every older store, and SQLite cannot relax
    that without rebuilding the table that flags and reviews point at.
    """

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
    rated_id: Mapped[int | None] = mapped_column(
        ForeignKey("rated_prompts.id", ondelete="CASCADE"))
    chosen_pos: Mapped[int | None] = mapped_column(Integer)
    rejected_pos: Mapped[int | None] = mapped_column(Integer)


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


class PlannedRun(Base):
    """One run of an experiment's plan (`RunSpec.id` at `position`), written when the experiment
    starts: with `trained_runs` it tells how many of the plan's runs are finished while it runs
    (`Store.experiments`), read by any process. A table of its own: `create_all` adds it."""

    __tablename__ = "experiment_plan_runs"
    __table_args__ = (Index("ix_experiment_plan_runs_experiment", "experiment_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = _owned_by("experiments")
    position: Mapped[int] = mapped_column(Integer)
    run_key: Mapped[str] = mapped_column(String(64))  # a TrainedRun.run_key once it finished


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
