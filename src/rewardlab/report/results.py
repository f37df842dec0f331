"""The results document, `results.json`: the experiment writes it, the report reads it.

The types live here, below the experiment, because the report is the lower layer of the two. The
statistics' records (summary, comparison, notebook row) and a run's test metrics are typed where
they are computed, in `rewardlab.evaluation`, and re-exported here so the whole document can be
read from one module. Key order is the order written to results.json. Once written, non-finite
floats are `null` (`to_jsonable`), so a reader of the file may meet None where a float is typed.

>>> doc: ResultsDocument = json.loads(Path("out/results.json").read_text())  # doctest: +SKIP
>>> doc["conditions"]["unfiltered"]["summary"]["accuracy_mean"]  # doctest: +SKIP
0.6218
"""

# No `from __future__ import annotations`: evaluated annotations let the runtime see NotRequired
# (ResultsDocument.__optional_keys__), which string annotations hide on Python 3.11.
from typing import Any, NotRequired, TypedDict

from rewardlab.evaluation.evaluate import EvalMetrics
from rewardlab.evaluation.metrics import PreferenceMetrics, Reliability, SubsetAccuracy
from rewardlab.evaluation.stats import (
    BootstrapDiff,
    Comparison,
    McNemarResult,
    NotebookRow,
    RunSummary,
    SeedMcNemar,
)

__all__ = [
    "ResultsDocument",
    "ResultsDraft",
    "ResultsConfig",
    "DataBlock",
    "DataSide",
    "FlagsBlock",
    "DetectorFlags",
    "FlagCount",
    "ConditionBlock",
    "RunRecord",
    "TeachingBlock",
    "DetectorQuality",
    # computed in rewardlab.evaluation, re-exported as parts of the document
    "EvalMetrics",
    "PreferenceMetrics",
    "Reliability",
    "SubsetAccuracy",
    "RunSummary",
    "Comparison",
    "McNemarResult",
    "SeedMcNemar",
    "BootstrapDiff",
    "NotebookRow",
]


class ResultsConfig(TypedDict):
    """`CompareConfig` as a dict, with the resolved lists and the TrainConfig every run used."""

    train: str
    test: str | None
    test_fraction: float | None
    preset: str
    seeds: list[int]  # resolved: the seeds every condition ran
    conditions: list[str]  # resolved: condition names, e.g. "clean-remove"
    treatments: str
    detectors: list[str]  # resolved: the detectors whose flags define "flagged"
    model: str | None
    max_pairs: int  # resolved: the size of the training pool
    epochs: int | None
    max_length: int | None
    name: str | None
    save_checkpoints: bool
    train_config: dict[str, Any]  # TrainConfig as a dict (seed 0's)


class DataSide(TypedDict):
    dataset: str  # name in the store
    source: str
    pairs: int
    fingerprint: str  # sha256 over the pairs' content hashes, in order


class DataBlock(TypedDict):
    train: DataSide  # the training pool every condition draws from
    test: DataSide


class FlagCount(TypedDict):
    flagged: int  # pairs of the training pool
    rate: float  # flagged / pool size


class DetectorFlags(FlagCount):
    threshold: float | None
    threshold_kind: str  # "fixed" | "percentile" | "data"


class FlagsBlock(TypedDict):
    detectors: dict[str, DetectorFlags]
    union: FlagCount  # what the clean conditions act on


class RunRecord(TypedDict):
    """One (condition, seed) training run and its evaluation on the shared test pairs."""

    seed: int
    train_pairs: int
    selection: str  # `Selection.describe()`
    flagged_in_train: int
    removed: int
    train_loss: float
    train_accuracy: float
    seconds: float
    checkpoint: str | None
    n_truncated: int
    history: list[dict[str, float]]  # {step, loss, accuracy, lr} every logging_steps
    test: EvalMetrics
    test_chosen_rewards: list[float]  # (P,) in test-pair order, the same for every run
    test_rejected_rewards: list[float]  # (P,)


class ConditionBlock(TypedDict):
    treatment: str | None  # "remove" | "flip" | "soft" for clean-*, else None
    description: str
    runs: list[RunRecord]  # one per seed
    summary: RunSummary


class DetectorQuality(TypedDict):
    """A detector's flags scored against the injected flips (the demo's ground truth)."""

    precision: float
    recall: float
    f1: float
    flagged: int
    true_issues: int
    hits: int


class TeachingBlock(TypedDict):
    """`rewardlab demo` only: what synthetic data with known flips lets us check."""

    noise: float
    injected_flips: int
    detector_quality: dict[str, DetectorQuality]
    quality_reward_corr: float
    oracle_accuracy: float  # test accuracy with the flips undone: the ceiling
    best_treatment: str
    recovered_fraction: float | None  # None when the noise cost no accuracy
    figures: dict[str, str]  # name -> PNG path


class ResultsDraft(TypedDict):
    """The document before the notebook table, the verdict and the run time are added: what the
    teaching hook and `overall_verdict` see."""

    rewardlab_version: str
    created: str  # ISO time, UTC
    config: ResultsConfig
    data: DataBlock
    flags: FlagsBlock
    conditions: dict[str, ConditionBlock]
    comparisons: list[Comparison]
    teaching: NotRequired[TeachingBlock]


class ResultsDocument(ResultsDraft):
    """results.json (schema: docs/architecture.md)."""

    notebook_table: list[NotebookRow]
    verdict: str
    seconds: float
