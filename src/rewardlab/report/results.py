"""The results document, `results.json`: the experiment writes it, the report reads it.

The types live here, below the experiment, because the report is the lower layer of the two. The
statistics' records (summary, comparison, notebook row) and a run's test metrics are typed where
they are computed, in `rewardlab.evaluation`, and re-exported here so the whole document can be
read from one module. Key order is the order written to results.json. Once written, non-finite
floats are `null` (`to_jsonable`), so a reader of the file may meet None where a float is typed.
Keys marked NotRequired came later (dose-response, ablation, strength, multiplicity, a comparison's
pooled test and power): results.json files written before them lack them and still read.

>>> doc: ResultsDocument = json.loads(Path("out/results.json").read_text())  # doctest: +SKIP
>>> doc["conditions"]["unfiltered"]["summary"]["accuracy_mean"]  # doctest: +SKIP
0.6218
"""

# No `from __future__ import annotations`: evaluated annotations let the runtime see NotRequired
# (ResultsDocument.__optional_keys__), which string annotations hide on Python 3.11.
from typing import Any, NotRequired, TypedDict

from rewardlab.evaluation.dose_stats import CurveTest
from rewardlab.evaluation.evaluate import EvalMetrics
from rewardlab.evaluation.metrics import PreferenceMetrics, Reliability, SubsetAccuracy
from rewardlab.evaluation.power import PowerEstimate
from rewardlab.evaluation.rated_stats import MetricSummary, PromptValues
from rewardlab.evaluation.stats import (
    BootstrapDiff,
    CMHResult,
    Comparison,
    McNemarResult,
    Multiplicity,
    NotebookRow,
    PairUnitTest,
    PooledTest,
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
    "TiesLesson",
    "TiesHandling",
    "DetectorQuality",
    "ArmBlock",
    "DosePoint",
    "DoseResponse",
    "AblationEntry",
    "StrengthReference",
    "StrengthBlock",
    "RatedRun",
    "RatedGroup",
    "RatedConditionBlock",
    "RatedDifference",
    "RatedBlock",
    "MetricSummary",
    "PromptValues",
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
    "CMHResult",
    "PooledTest",
    "PowerEstimate",
    "Multiplicity",
    "CurveTest",
    "PairUnitTest",
]


class ResultsConfig(TypedDict):
    """`CompareConfig` as a dict, with the resolved lists and the TrainConfig every run used."""

    train: str
    test: str | None
    test_fraction: float | None
    preset: str
    seeds: list[int]  # resolved: the seeds every condition ran
    conditions: list[str]  # resolved: condition names, e.g. "clean-remove"
    treatments: list[str] | str  # a comma string in files written before issue 28's lists
    detectors: list[str]  # resolved: the flag sets that define "flagged" (DET | reviewed:DET)
    max_pairs: int  # resolved: the size of the training pool
    name: str | None
    save_checkpoints: bool
    fractions: NotRequired[list[float] | str | None]  # resolved (a "0.05,0.1" string before 28)
    rank_by: NotRequired[str | None]  # resolved: the preset's when not given
    ablation: NotRequired[bool]
    reuse_runs: NotRequired[bool]  # stored runs with the same id were reused (since issue 28)
    # how the runs were carried out (since issue 30); the results do not depend on them
    workers: NotRequired[int]
    ray: NotRequired[str | None]
    gpus_per_run: NotRequired[int | None]
    retries: NotRequired[int]
    training: NotRequired[dict[str, Any] | None]  # the resolved TrainConfig the CLI passed (seed 0)
    # the TrainConfig's (null before issue 28 when the preset's applied), for older readers
    model: str | None
    epochs: int | None
    max_length: int | None
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
    # reviewers' verdicts on the detector's flags, whole dataset (`rewardlab review`)
    reviewed: NotRequired[int]  # decided flags: tp + fp
    reviewed_tp: NotRequired[int]
    precision: NotRequired[float | None]  # reviewed_tp / reviewed; None before any review
    precision_ci: NotRequired[list[float] | None]  # Wilson 95%


class FlagsBlock(TypedDict):
    detectors: dict[str, DetectorFlags]
    union: FlagCount  # what the clean conditions act on


class RatedRun(TypedDict):
    """A run on rated prompts (compare's tie and ranking conditions, issue 32): what it trained on
    and its rated metrics on the test prompts."""

    train_prompts: int | None
    train_ties: int | None  # tied pairs among its training prompts
    tie_parameter: float | None  # the tie model's, with ties-model
    test: dict[str, Any]  # `evaluation.rated.evaluate_rated`: each metric {value, ci, n_prompts, n_items}
    per_prompt: PromptValues  # the same per test prompt: the unit of the rated comparisons


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
    # resident memory of the process that ran it, MB (since issue 33): the peak over training and
    # evaluation (Linux: its own peak, VmHWM reset at its start; elsewhere the process's peak so
    # far, ru_maxrss) and the RSS once the run's memory was given back (rewardlab.training.memory),
    # with the heap allocator they were measured under ("jemalloc" | "system")
    peak_rss_mb: NotRequired[float]
    rss_after_mb: NotRequired[float]
    allocator: NotRequired[str]
    rated: NotRequired[RatedRun]  # a run on rated prompts (issue 32)


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
    dose_flipped_share: NotRequired[dict[str, float]]  # fraction -> flipped share of its top pairs
    ties: NotRequired["TiesLesson"]  # the demo's answer to "how would you handle ties?" (issue 32)


class TiesHandling(TypedDict):
    """One way of training on tied pairs (drop / soft / model), measured on the lesson's test set."""

    kendall_tau: float  # the K rewards of a prompt against its K true qualities, mean over prompts
    pair_accuracy: float | None  # decided test pairs ranked right
    p_better_on_ties: float  # mean P(the higher-quality reply wins) on tied test pairs


class TiesLesson(TypedDict):
    """The demo's ties lesson: one synthetic rated data set with known ties, one training seed."""

    spec: str
    seed: int
    test_pairs: int
    true_band: float  # the data's truth: a pair is a tie when its quality gap is below this
    implied_band: float | None  # the tie model's band in quality units; None: reward ignores quality
    tie_model: str  # "davidson"
    tie_parameter: float  # nu
    p_tie_at_equal: float  # the tie model's P(tie) for two equal rewards
    observed_tie_share: float  # of the test pairs
    predicted_tie_share: float  # mean P(tie) over the test pairs
    p_tie_on_ties: float  # mean P(tie) on the tied test pairs
    p_tie_on_decided: float  # and on the decided ones
    tie_accuracy: float  # the most probable of win / tie / loss is the outcome
    handlings: dict[str, TiesHandling]  # "drop", "soft", "model"
    figure: str  # PNG path


class ArmBlock(TypedDict):
    """One arm of a dose-response point or an ablation: its runs (one per seed) and summary."""

    description: str
    runs: list[RunRecord]
    summary: RunSummary


class DosePoint(TypedDict):
    fraction: float  # share of the training pool treated
    count: int  # pairs treated, the same in both arms
    flagged_among: int  # of the detector arm's treated pairs, how many the detector had flagged
    detector: ArmBlock  # the top `count` pairs by the detector's score treated
    random: ArmBlock  # `count` random pairs treated (nested across fractions, per seed)
    comparison: Comparison  # detector arm vs random arm, paired by seed


class DoseResponse(TypedDict):
    """`compare --fractions F --rank-by DETECTOR`: accuracy vs fraction treated, detector vs random."""

    rank_by: str
    treatment: str  # remove | flip | soft
    fractions: list[float]
    pool: int  # training pairs ranked
    scored: int  # of those, with a finite score (the rest rank last)
    baseline: str | None  # the condition drawn at fraction 0 (usually "unfiltered")
    ranking: str  # how ties and missing scores were ordered
    points: list[DosePoint]
    curve_test: CurveTest
    verdict: str


class AblationEntry(TypedDict):
    """`compare --ablation`: one detector's own flags treated vs as many random pairs."""

    detector: str
    treatment: str
    flagged: int  # pairs of the pool it flagged
    reused: bool  # True when the runs are the main clean/random conditions' (same pairs)
    clean: ArmBlock
    random: ArmBlock
    comparison: Comparison


class StrengthReference(TypedDict):
    dataset: str
    share: float  # published share of pairs with a negative mean margin
    source: str


class StrengthBlock(TypedDict):
    """Per-pair preference strength of the training pool (the strength histogram)."""

    detector: str
    pairs: int
    mean_margin: list[float]  # (pool,) mean r(chosen) - r(rejected) over held-out models
    strength: list[float] | None  # (pool,) mean / std where the detector has it
    share_negative: float  # share of pairs with mean margin < 0
    reference: StrengthReference | None  # the published figure to compare with, if any
    # the margins' models on pairs they never trained on: with accuracy a and no label noise,
    # about 1 − a of the pairs fall below 0, so this bounds what share_negative can say
    held_out_accuracy: NotRequired[float | None]


class RatedGroup(TypedDict):
    name: str  # "tie handling" | "ranking use"
    reference: str  # the condition the others are compared with
    conditions: list[str]  # the group's conditions in this experiment, the reference included


class RatedConditionBlock(TypedDict):
    """A tie or ranking condition's rated metrics over its seeds, the test prompt the unit."""

    group: str
    reference: str
    ties: str  # TrainConfig.ties of its runs
    ranking: str  # TrainConfig.ranking of its runs
    description: str
    metrics: dict[str, MetricSummary | None]  # kendall_tau, best_of_k_accuracy, tie_accuracy, tie_nll
    tie_share: dict[str, float] | None  # ties-model: predicted (mean over seeds), observed, n_pairs
    tie_parameter: list[float | None] | None  # ties-model: per seed


class RatedDifference(TypedDict):
    """A ranking metric of a condition against its reference (secondary: Holm over these)."""

    treated: str
    baseline: str
    metric: str  # kendall_tau | best_of_k_accuracy
    test: PairUnitTest  # the prompt the unit, paired by seed
    p_holm: float | None
    verdict: str


class RatedBlock(TypedDict):
    """`compare` with tie and ranking conditions (issue 32): the rated data and metrics."""

    train_prompts: int
    train_ties: int
    test_prompts: int
    test_ties: int
    groups: list[RatedGroup]
    conditions: dict[str, RatedConditionBlock]
    differences: list[RatedDifference]


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
    rated: NotRequired[RatedBlock]  # tie and ranking conditions (issue 32)
    dose_response: NotRequired[list[DoseResponse]]  # one per treatment, with --fractions
    ablation: NotRequired[list[AblationEntry]]  # with --ablation
    strength: NotRequired[StrengthBlock]  # when the ranking detector measures strength
    multiplicity: NotRequired[Multiplicity]  # Holm over every test above (since 0.2)
    teaching: NotRequired[TeachingBlock]


class ResultsDocument(ResultsDraft):
    """results.json (schema: docs/architecture.md)."""

    notebook_table: list[NotebookRow]
    verdict: str
    seconds: float
    runs_planned: NotRequired[int]  # training runs in the plan (experiment/plan.py)
    runs_reused: NotRequired[int]  # of those, found finished in the store and not trained again
