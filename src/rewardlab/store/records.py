"""The records the store takes and gives: typed, so every layer above reads named fields.

`DetectorResult` is what a detector run hands the store (defined here, below the detectors, so the
store depends on no detector); the TypedDicts are the rows the store's queries return.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypedDict

import numpy as np

__all__ = ["DetectorResult", "ThresholdKind", "DatasetSummary", "DetectorRunRow", "FlagRow",
           "ReviewRow", "NewReview", "Verdict", "VERDICTS", "ReviewState", "REVIEW_STATES", "QueueReview",
           "QueueItem", "QueuePage", "ReviewOutcome", "JudgeAnswerRow", "ExperimentRow",
           "ExperimentRunRow", "FinishedRun", "StoredRun"]

ThresholdKind = Literal["fixed", "percentile", "data"]
# A reviewer's word on one flag: the detector was right (tp), wrong (fp), or it is unclear.
Verdict = Literal["tp", "fp", "needs_review"]
VERDICTS: tuple[str, ...] = ("tp", "fp", "needs_review")
# Which flags a review queue lists: every flag, none reviewed yet, any review, a needs_review
# verdict among the reviews, or reviewers who gave different verdicts.
ReviewState = Literal["all", "unreviewed", "reviewed", "needs_review", "disagreements"]
REVIEW_STATES: tuple[str, ...] = ("all", "unreviewed", "reviewed", "needs_review", "disagreements")


@dataclass
class DetectorResult:
    """Per-train-pair output of one detector run; arrays are aligned with the `train` it was given.

    `threshold_kind` says where `threshold` came from: "fixed" (a parameter), "percentile" (a
    percentile of this run's scores) or "data" (no numeric threshold: flags given by the data, e.g.
    an imported flagged_indices.json). `seconds` is filled in by `run_detector`.
    """

    detector: str
    scores: np.ndarray  # (N,) float, higher = more suspect
    flagged: np.ndarray  # (N,) bool
    reasons: list[str]  # (N,) "" where not flagged
    threshold: float | None
    threshold_kind: str
    params: dict[str, Any]
    seconds: float = 0.0

    def __post_init__(self) -> None:
        # Validate once here so the store and the report can trust the shapes.
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        self.flagged = np.asarray(self.flagged, dtype=bool).reshape(-1)
        self.reasons = list(self.reasons)
        n = len(self.scores)
        if len(self.flagged) != n or len(self.reasons) != n:
            raise ValueError(
                f"detector {self.detector!r}: {n} scores, {len(self.flagged)} flags and "
                f"{len(self.reasons)} reasons; they must have one entry per train pair"
            )

    @property
    def n_flagged(self) -> int:
        """How many train pairs this run flagged."""
        return int(self.flagged.sum())


class DatasetSummary(TypedDict):
    """`Store.dataset_summaries` row."""

    name: str
    source: str  # source spec(s), " + "-joined
    created_at: str  # ISO, UTC
    pairs: dict[str, int]  # split -> pairs
    flagged: int  # train pairs flagged by the latest run of any detector, counted once
    detectors: list[str]  # detectors with a run, sorted
    rated_prompts: int  # prompts of rated data (issue 32); 0 for pairs only
    rated_responses: int  # their responses
    ties: int  # their tie labels (in no pair)


class DetectorRunRow(TypedDict):
    """`Store.latest_runs` value: one detector's latest run on a dataset."""

    run_id: int
    params: dict[str, Any]
    threshold: float | None
    threshold_kind: str  # a ThresholdKind
    flagged: int
    total: int  # train pairs the run scored
    seconds: float
    created_at: str  # ISO, UTC


class FlagRow(TypedDict):
    """`Store.flag_rows` row: a flagged pair and why."""

    example_id: int
    source_index: int
    split: str
    subset: str
    prompt: str
    chosen: str
    rejected: str
    detector: str
    score: float  # NaN where the detector gave none
    reason: str


class ReviewRow(TypedDict):
    """`Store.reviews` row: one reviewer's verdict on one flag (example × detector)."""

    id: int
    example_id: int
    source_index: int
    split: str
    subset: str
    detector: str
    reviewer: str
    verdict: str  # a Verdict
    is_issue: bool  # verdict == "tp" (the v1 field, kept for callers of add_review)
    note: str
    created_at: str  # ISO, UTC
    updated_at: str  # ISO, UTC; the last edit


class NewReview(TypedDict):
    """`Store.save_reviews` input: a verdict on the flag (example_id, detector)."""

    example_id: int
    detector: str
    verdict: str  # a Verdict
    reviewer: str
    note: str


class QueueReview(TypedDict):
    """A review as shown on a queue card."""

    reviewer: str
    verdict: str  # a Verdict
    note: str
    updated_at: str  # ISO, UTC


class QueueItem(TypedDict):
    """`Store.review_queue` item: one flag of a latest run, its pair, and the reviews so far."""

    example_id: int
    source_index: int
    split: str
    subset: str
    context: str
    prompt: str
    chosen: str
    rejected: str
    parse_issue: str | None  # why the dialogue did not parse cleanly; None when it did
    raw_chosen: str | None  # the source's texts as read, only where parse_issue is set
    raw_rejected: str | None
    detector: str
    score: float | None  # None where the detector gave NaN
    reason: str
    reviews: list[QueueReview]  # by reviewer name


class QueuePage(TypedDict):
    """`Store.review_queue` result: `total` flags match; `items` are [offset, offset + limit)."""

    total: int
    offset: int
    limit: int
    items: list[QueueItem]


class ReviewOutcome(TypedDict):
    """`Store.review_outcomes` row: a flag of a detector's latest run that has reviews."""

    detector: str
    example_id: int
    score: float | None
    verdicts: dict[str, str]  # reviewer -> Verdict


class JudgeAnswerRow(TypedDict):
    """One cached `llm_judge` answer (`Store.judge_answers`, `Store.save_judge_answers`)."""

    preferred: str  # "A" | "B"
    confidence: float  # in [0, 1]
    prompt_tokens: int
    completion_tokens: int
    cost: float | None  # as the endpoint reported it, None when it did not


class ExperimentRunRow(TypedDict):
    id: int
    condition: str
    seed: int
    metrics: dict[str, Any]
    checkpoint: str | None


class ExperimentRow(TypedDict):
    """`Store.experiments` row, with the experiment's runs."""

    id: int
    name: str
    dataset: str
    config: dict[str, Any]
    metrics: dict[str, Any]  # condition -> summary
    out_dir: str
    created_at: str  # ISO, UTC
    runs: list[ExperimentRunRow]  # one per (condition, seed), added when the experiment ended
    # the plan's runs and how many of them are stored as trained: live while the experiment runs
    # (None for both where the plan was not recorded, e.g. before schema version 4)
    runs_planned: int | None
    runs_done: int | None


class FinishedRun(TypedDict):
    """`Store.finish_experiment` input: one (condition, seed) run of a finished experiment."""

    condition: str
    seed: int
    metrics: dict[str, Any]
    checkpoint: str | None


class StoredRun(TypedDict):
    """`Store.trained_runs` value: one finished run of an experiment plan."""

    record: dict[str, Any]  # the run's record without its rewards (report/results.py RunRecord)
    test_ids: list[int]  # the test pairs' example ids, in the experiment's test order
    chosen: list[float | None]  # (P,) the reward of each test pair's chosen response
    rejected: list[float | None]  # (P,)
