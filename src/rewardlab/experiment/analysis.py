"""The experiment's analysis: a pure function of its plan and its finished runs.

`analyse(plan, runs)` reads nothing but its arguments (no store, no clock, no files) and changes
none of them: the plan (`ExperimentPlan`: the runs, the data they were drawn from and what the
store said about the flags, all fixed before any run trained) and the runs' records (`PlanRuns`,
from `experiment/runs.py`, trained now or read back from the store alike). It returns the typed
`ExperimentResults`, whose `to_json()` is results.json's document (`report/results.py`), keys in
the order written. The same plan and runs give the same results, so a resumed compare's
results.json equals an uninterrupted one's (timestamps and seconds aside, stamped by the caller).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from rewardlab._version import __version__
from rewardlab.data.pairs import PreferencePair
from rewardlab.evaluation.rated_stats import (
    BOUNDS,
    PROMPT_METRICS,
    metric_difference,
    metric_summary,
)
from rewardlab.evaluation.rated_verdict import difference_sentence, rated_verdict
from rewardlab.evaluation.stats import (
    compare_runs,
    holm_adjust,
    notebook_table,
    overall_verdict,
    summarize_runs,
    with_multiplicity,
)
from rewardlab.experiment.compare_config import (
    AA_CONDITION,
    RATED_CONDITIONS,
    RATED_GROUPS,
    CompareConfig,
)
from rewardlab.experiment.dose_arms import ArmKey, ablation_block, dose_response_block
from rewardlab.experiment.plan import ExperimentData, RunSpec
from rewardlab.experiment.runs import PlanRuns, records_by_key

if TYPE_CHECKING:
    from rewardlab.report.results import (
        AblationEntry,
        Comparison,
        ConditionBlock,
        DataBlock,
        DoseResponse,
        FlagsBlock,
        Multiplicity,
        NotebookRow,
        RatedBlock,
        RatedConditionBlock,
        RatedDifference,
        ResultsConfig,
        ResultsDocument,
        ResultsDraft,
        RunRecord,
        StrengthBlock,
        TeachingBlock,
    )

__all__ = ["Annotate", "ExperimentPlan", "ExperimentResults", "analyse"]

# teaching(results so far, training pool, test pairs) -> the results' "teaching" block
Annotate = Callable[["ResultsDraft", list[PreferencePair], list[PreferencePair]], "TeachingBlock"]


@dataclass(frozen=True)
class ExperimentPlan:
    """Everything the analysis reads besides the finished runs, fixed before any run trains."""

    runs: Sequence[RunSpec]  # in training order (`plan_experiment`)
    config: CompareConfig  # after the offline fallback
    config_block: ResultsConfig  # results.json's "config": the options as resolved
    data_block: DataBlock  # the train and test pairs' datasets, sizes and fingerprints
    flags: FlagsBlock  # the detectors' flags within the pool, with reviewed precision
    data: ExperimentData  # the pool, conditions, seeds, flags and ranking the runs came from
    test: Sequence[PreferencePair]
    treatment: str  # the first of --treatments: the dose-response curve's and the ablation's
    rank_flagged: frozenset[int] = frozenset()  # pairs the ranking detector flagged
    strength: StrengthBlock | None = None  # the pool's held-out margins, when measured


# results.json's keys in the order written; the optional blocks are left out when absent
_KEYS = ("rewardlab_version", "created", "config", "data", "flags", "conditions", "comparisons",
         "rated", "dose_response", "ablation", "strength", "multiplicity", "teaching",
         "notebook_table", "verdict", "seconds", "runs_planned", "runs_reused")
_OPTIONAL = ("rated", "dose_response", "ablation", "strength", "teaching")


@dataclass(frozen=True)
class ExperimentResults:
    """An experiment's results, typed; `to_json()` is results.json's document."""

    config: ResultsConfig
    data: DataBlock
    flags: FlagsBlock
    conditions: dict[str, ConditionBlock]
    comparisons: list[Comparison]  # with p_holm
    multiplicity: Multiplicity  # Holm over every test of the results
    notebook_table: list[NotebookRow]
    verdict: str
    runs_planned: int
    runs_reused: int  # of those, found finished in the store
    dose_response: list[DoseResponse] | None = None
    ablation: list[AblationEntry] | None = None
    strength: StrengthBlock | None = None
    teaching: TeachingBlock | None = None
    rated: RatedBlock | None = None  # the tie and ranking conditions' metrics (issue 32)
    rewardlab_version: str = __version__
    created: str = ""  # ISO time, UTC: stamped by the caller (the analysis reads no clock)
    seconds: float = 0.0  # the experiment's wall time: stamped by the caller

    def to_json(self) -> ResultsDocument:
        """results.json's document: keys in the order written, absent optional blocks left out."""
        doc = {key: getattr(self, key) for key in _KEYS
               if key not in _OPTIONAL or getattr(self, key) is not None}
        return cast("ResultsDocument", doc)


def _conditions(plan: ExperimentPlan, runs: Mapping[ArmKey, list[RunRecord]]
                ) -> dict[str, ConditionBlock]:
    conditions: dict[str, ConditionBlock] = {}
    for cond in plan.data.conditions:
        records = runs[("condition", cond.name, None, None)]
        conditions[cond.name] = {"treatment": cond.treatment, "description": records[0]["selection"],
                                 "runs": records, "summary": summarize_runs(records)}
    return conditions


def _comparisons(conditions: Mapping[str, ConditionBlock]) -> list[Comparison]:
    """Each clean condition vs unfiltered and vs random; the A/A control vs unfiltered."""
    out = []
    for treated in (c for c in conditions if c.startswith("clean-")):
        for baseline in ("unfiltered", "random"):
            if baseline in conditions:
                out.append(compare_runs(treated, conditions[treated]["runs"], baseline,
                                        conditions[baseline]["runs"]))
    if AA_CONDITION in conditions and "unfiltered" in conditions:  # the A/A control
        out.append(compare_runs(AA_CONDITION, conditions[AA_CONDITION]["runs"], "unfiltered",
                                conditions["unfiltered"]["runs"]))
    for treated in (c for c in conditions if c in RATED_CONDITIONS):  # each vs its reference
        reference = RATED_CONDITIONS[treated].reference
        if treated != reference and reference in conditions:
            out.append(compare_runs(treated, conditions[treated]["runs"], reference,
                                    conditions[reference]["runs"]))
    return out


def _rated_condition(name: str, runs: Sequence[RunRecord]) -> RatedConditionBlock:
    """One tie or ranking condition's rated metrics over its seeds (the prompt the unit)."""
    cond = RATED_CONDITIONS[name]
    rated: list[Mapping[str, Any]] = [cast("Mapping[str, Any]", r.get("rated") or {})
                                      for r in runs]
    metrics = {m: metric_summary([(r.get("per_prompt") or {}).get(m) for r in rated],
                                 bounds=BOUNDS[m]) for m in PROMPT_METRICS}
    shares = [r["test"]["tie_share"] for r in rated if (r.get("test") or {}).get("tie_share")]
    return {"group": cond.group, "reference": cond.reference, "ties": cond.ties,
            "ranking": cond.ranking, "description": cond.description, "metrics": metrics,
            "tie_share": ({"predicted": sum(s["predicted"] for s in shares) / len(shares),
                           "observed": shares[0]["observed"], "n_pairs": shares[0]["n_pairs"]}
                          if shares else None),
            "tie_parameter": ([r.get("tie_parameter") for r in rated]
                              if cond.ties == "model" else None)}


def _rated_differences(conditions: Mapping[str, ConditionBlock]) -> list[RatedDifference]:
    """Kendall's tau and best-of-K of each condition against its reference, Holm over them."""
    out: list[RatedDifference] = []
    for treated in (c for c in conditions if c in RATED_CONDITIONS):
        reference = RATED_CONDITIONS[treated].reference
        if treated == reference or reference not in conditions:
            continue
        for metric in ("kendall_tau", "best_of_k_accuracy"):
            test = metric_difference(conditions[treated]["runs"], conditions[reference]["runs"],
                                     metric)
            if test is not None:
                out.append({"treated": treated, "baseline": reference, "metric": metric,
                            "test": test, "p_holm": None, "verdict": ""})
    for record, p in zip(out, holm_adjust([d["test"]["p"] for d in out]) if out else []):
        record["p_holm"] = p
        record["verdict"] = difference_sentence(record)
    return out


def _rated_block(plan: ExperimentPlan, conditions: Mapping[str, ConditionBlock]) -> RatedBlock:
    """The `rated` block: the data's prompts and ties, the groups, each condition's metrics."""
    data = plan.data
    names = [c for c in conditions if c in RATED_CONDITIONS]
    return {
        "train_prompts": len(data.rated), "train_ties": sum(len(p.ties) for p in data.rated),
        "test_prompts": len(data.rated_test),
        "test_ties": sum(len(p.ties) for p in data.rated_test),
        "groups": [{"name": group, "reference": ref,
                    "conditions": [c for c in names if RATED_CONDITIONS[c].group == group]}
                   for group, ref in RATED_GROUPS.items() if ref in names],
        "conditions": {c: _rated_condition(c, conditions[c]["runs"]) for c in names},
        "differences": _rated_differences(conditions)}


def _dose_blocks(plan: ExperimentPlan, conditions: Mapping[str, ConditionBlock],
                 runs: Mapping[ArmKey, list[RunRecord]]) -> list[DoseResponse]:
    """The dose-response curve of the first treatment (a list, so a later version can draw more),
    drawn from the unfiltered condition at fraction 0. One treatment keeps the cost at
    2 × fractions × seeds runs; `--treatments flip,remove` puts flip's curve first."""
    data = plan.data
    assert data.rank_by is not None  # called only for a plan with a dose-response curve
    return [dose_response_block(data.pool, data.scores, rank_by=data.rank_by,
                                treatment=plan.treatment, fractions=data.fractions,
                                flagged_ids=set(plan.rank_flagged), runs=runs,
                                baseline="unfiltered" if "unfiltered" in conditions else None)]


def _draft(plan: ExperimentPlan, runs: Mapping[ArmKey, list[RunRecord]]) -> dict[str, Any]:
    """Everything before the multiplicity correction: config, data, flags, the conditions and
    their comparisons, the dose-response curve, the ablation, the strength histogram."""
    conditions = _conditions(plan, runs)
    draft: dict[str, Any] = {
        "rewardlab_version": __version__, "created": "", "config": plan.config_block,
        "data": plan.data_block, "flags": plan.flags, "conditions": conditions,
        "comparisons": _comparisons(conditions)}
    if any(c in RATED_CONDITIONS for c in conditions):
        draft["rated"] = _rated_block(plan, conditions)
    if plan.data.rank_by:
        draft["dose_response"] = _dose_blocks(plan, conditions, runs)
    if plan.config.ablation:
        draft["ablation"] = ablation_block(plan.data.pool, plan.data.flagged_by,
                                           treatment=plan.treatment, conditions=conditions,
                                           runs=runs)
    if plan.strength is not None:
        draft["strength"] = plan.strength
    return draft


def analyse(plan: ExperimentPlan, runs: PlanRuns, *, teaching: Annotate | None = None
            ) -> ExperimentResults:
    """The experiment's results from its plan and its finished runs; neither is changed.

    Parameters
    ----------
    plan : ExperimentPlan
        The runs and what they were drawn from (`run_comparison` builds it before training).
    runs : PlanRuns
        Every run of `plan.runs` finished: its record by run id (`run_plan`).
    teaching : callable or None, default None
        `teaching(results, pool, test)` returns the `teaching` block (the demo's ground-truth
        analysis); it runs before the verdict so the verdict can use it.

    Returns
    -------
    ExperimentResults
        `created` and `seconds` left for the caller to stamp.
    """
    draft = with_multiplicity(_draft(plan, records_by_key(plan.runs, runs.records)))
    if teaching is not None:
        draft["teaching"] = teaching(cast("ResultsDraft", draft), list(plan.data.pool),
                                     list(plan.test))
    return ExperimentResults(
        config=draft["config"], data=draft["data"], flags=draft["flags"],
        conditions=draft["conditions"], comparisons=draft["comparisons"],
        multiplicity=draft["multiplicity"], notebook_table=notebook_table(draft["conditions"]),
        verdict=rated_verdict(draft) if "rated" in draft else overall_verdict(draft),
        runs_planned=len(plan.runs), runs_reused=runs.reused,
        dose_response=draft.get("dose_response"), ablation=draft.get("ablation"),
        strength=draft.get("strength"), teaching=draft.get("teaching"),
        rated=draft.get("rated"), rewardlab_version=draft["rewardlab_version"])
