"""The clean-vs-unfiltered experiment: conditions × seeds on the same test pairs, then statistics.

`run_comparison(config)` ingests what the store lacks, runs missing detectors, trains every
condition with every seed, evaluates all of them on one test set and returns the results dict that
`report.write_report` renders (schema: docs/architecture.md).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, cast

from rewardlab._version import __version__
from rewardlab.data.pairs import PreferencePair, fingerprint_pairs
from rewardlab.errors import SelectionError, SourceError
from rewardlab.flags.selection import (
    TREATMENTS,
    resolve_flagged_ids,
    sample_stratified,
    select_training_pairs,
)

if TYPE_CHECKING:
    from rewardlab.report.results import (
        Comparison,
        ConditionBlock,
        DetectorFlags,
        FlagsBlock,
        ResultsConfig,
        ResultsDocument,
        ResultsDraft,
        RunRecord,
        TeachingBlock,
    )
    from rewardlab.store.store import Store
    from rewardlab.training.config import TrainConfig

__all__ = ["CompareConfig", "Preset", "PRESETS", "CLEAN_DETECTORS", "Condition", "plan_conditions",
           "dataset_name_for", "train_config_for", "Annotate", "run_comparison"]

log = logging.getLogger("rewardlab")

# Training settings per preset. `seed` is the original notebook's (a GPU job); `quick` finishes on a
# 2-core CPU in minutes.
class Preset(TypedDict):
    model: str
    max_pairs: int | None  # None = all train pairs
    seeds: int


PRESETS: dict[str, Preset] = {
    "quick": {"model": "minilm", "max_pairs": 4000, "seeds": 1},
    "seed": {"model": "distilbert-base-uncased", "max_pairs": None, "seeds": 1},
}
CONDITIONS: tuple[str, ...] = ("unfiltered", "clean", "random")
# Detectors that say a pair's *label or content* is suspect. unsafe_prompt, refusal_bias and
# over_length describe a pair without doubting it, so they only clean when named explicitly.
CLEAN_DETECTORS: tuple[str, ...] = (
    "empty_response", "identical_responses", "near_duplicate_responses", "diverging_context",
    "duplicate_pair", "conflicting_duplicate", "test_leakage", "repetition", "length_ratio",
    "readability_mismatch",
)


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


@dataclass
class CompareConfig:
    """Everything `rewardlab compare` needs; saved in results.json."""

    train: str = field(default="hh-rlhf-sample", metadata=_help(
        "train source (see `rewardlab ingest`): the embedded HH-RLHF sample 'hh-rlhf-sample' by "
        "default (offline, split 70/30); 'hh-rlhf' for the full dataset from the hub (the sample "
        "when the hub is unreachable)"))
    test: str | None = field(default=None, metadata=_help("separate test source"))
    test_fraction: float | None = field(default=None, metadata=_help(
        "carve a test split from a single-split train source by prompt hash"))
    preset: str = field(default="quick", metadata=_help("quick (CPU minutes) or seed (notebook)",
                                                        choices=list(PRESETS)))
    seeds: int | None = field(default=None, metadata=_help("seeds per condition (preset: 1)"))
    conditions: str = field(default="unfiltered,clean,random", metadata=_help(
        "comma list of unfiltered, clean, random"))
    treatments: str = field(default="remove", metadata=_help(
        "what clean does to flagged pairs: comma list of remove, flip, soft"))
    detectors: str | None = field(default=None, metadata=_help(
        "detectors whose flags define 'flagged' (default: the label/content-quality rule set)"))
    model: str | None = field(default=None, metadata=_help("backbone (preset: minilm)"))
    max_pairs: int | None = field(default=None, metadata=_help(
        "train pairs, stratified by subset (quick: 4000; 0 = all)"))
    epochs: int | None = field(default=None, metadata=_help("training epochs (default 1)"))
    max_length: int | None = field(default=None, metadata=_help("max tokens (default 256)"))
    name: str | None = field(default=None, metadata=_help("dataset name in the store"))
    save_checkpoints: bool = field(default=False, metadata=_help(
        "keep every run's checkpoint under DIR/runs"))


@dataclass(frozen=True)
class Condition:
    name: str  # e.g. "clean-remove"
    mode: str  # all | clean | random
    treatment: str | None


def plan_conditions(conditions: str, treatments: str) -> list[Condition]:
    """'unfiltered,clean,random' × 'remove,flip' → unfiltered, clean-remove, clean-flip, random."""
    names = [c.strip() for c in conditions.split(",") if c.strip()]
    kinds = [t.strip() for t in treatments.split(",") if t.strip()]
    unknown = [c for c in names if c not in CONDITIONS]
    bad_t = [t for t in kinds if t not in TREATMENTS]
    if unknown or bad_t or not names:
        raise SelectionError(f"unknown condition/treatment {', '.join(unknown + bad_t) or '(none)'}"
                             f"; conditions: {', '.join(CONDITIONS)}; treatments: "
                             f"{', '.join(TREATMENTS)}")
    plan: list[Condition] = []
    for c in names:
        if c == "unfiltered":
            plan.append(Condition("unfiltered", "all", None))
        elif c == "random":
            plan.append(Condition("random", "random", None))
        else:
            plan += [Condition(f"clean-{t}", "clean", t) for t in kinds]
    return plan


def _is_hub_spec(spec: str | None) -> bool:
    # the same test as data.sources: 'hh-rlhf' is the hub even when a folder of that name exists
    return spec is not None and (spec == "hh-rlhf" or spec.startswith("hh-rlhf:"))


def _offline_fallback(config: CompareConfig) -> CompareConfig:
    """`--train hh-rlhf` with the hub unreachable → the bundled sample, said in one line at once.

    Without this, `datasets` sits through ~30 s of retries and the main job (`make run`) fails on a
    machine without the hub; a hub test source follows, since the sample carries its own split.
    """
    from rewardlab.data.sources import SAMPLE
    from rewardlab.models.backbones import hub_unreachable

    if not _is_hub_spec(config.train):
        return config
    why = hub_unreachable()
    if why is None:
        return config
    log.warning("the Hugging Face hub is unreachable (%s): running on the bundled HH-RLHF sample "
                "%r (1,512 harmless-base pairs) instead of %r", why, SAMPLE, config.train)
    return dataclasses.replace(config, train=SAMPLE,
                               test=None if _is_hub_spec(config.test) else config.test)


def dataset_name_for(spec: str, test_fraction: float | None) -> str:
    """A stable store name for a source, e.g. '../x/harmless-sample.jsonl.gz' → 'harmless-sample'."""
    base = Path(spec).name if Path(spec).exists() else spec
    base = re.sub(r"\.(jsonl|json|csv|parquet)(\.gz)?$", "", base)
    base = re.sub(r"[^A-Za-z0-9.]+", "-", base).strip("-").lower() or "dataset"
    return f"{base}-tf{test_fraction:g}" if test_fraction else base


def _ingest(store: Store, config: CompareConfig, name: str) -> None:
    """Ingest the train source, then `--test` as the dataset's test split.

    The name comes from the file name alone, so two files called `set.jsonl` share it: the store
    binds each split to its source and refuses the second one (a StoreError asking for `--name`)
    rather than training on both.
    """
    from rewardlab.data.sources import read_source

    counts = store.ingest(name, read_source(config.train, test_fraction=config.test_fraction))
    log.info("data: %s → %r (%d new, %d already present)", config.train, name, counts.ingested,
             counts.already_present)
    if config.test:
        counts = store.ingest(name, read_source(config.test, split="test"))
        log.info("test data: %s → %r (%d new)", config.test, name, counts.ingested)


def _ensure_detector_runs(store: Store, name: str, detectors: Sequence[str], n_train: int,
                          progress: bool) -> None:
    """Run the detectors that have no up-to-date run (a run over a different pair count is stale)."""
    from rewardlab.flags.flagging import flag_dataset

    runs = store.latest_runs(name)
    missing = [d for d in detectors if d not in runs or runs[d]["total"] != n_train]
    if missing:
        log.info("running detectors: %s", ", ".join(missing))
        flag_dataset(store, name, detectors=missing, progress=progress)
    else:
        log.info("reusing stored detector runs: %s", ", ".join(detectors))


def _flags_block(store: Store, name: str, detectors: Sequence[str],
                 pool: Sequence[PreferencePair]) -> FlagsBlock:
    """Flag counts within the training pool, per detector and for their union."""
    pool_ids = {p.example_id for p in pool}
    runs = store.latest_runs(name)
    by_det = store.flagged_example_ids(name, list(detectors))
    n = max(len(pool_ids), 1)
    block: dict[str, DetectorFlags] = {d: {"flagged": len(by_det.get(d, set()) & pool_ids),
                 "rate": len(by_det.get(d, set()) & pool_ids) / n,
                 "threshold": runs[d]["threshold"], "threshold_kind": runs[d]["threshold_kind"]}
             for d in detectors}
    union = set().union(*by_det.values()) & pool_ids if by_det else set()
    return {"detectors": block, "union": {"flagged": len(union), "rate": len(union) / n}}


def train_config_for(config: CompareConfig, seed: int) -> TrainConfig:
    """The TrainConfig every condition of this experiment trains with, for one seed."""
    from rewardlab.training.config import TrainConfig

    preset = PRESETS[config.preset]
    overrides: dict[str, Any] = {"model": config.model or preset["model"], "seed": seed}
    if config.epochs:
        overrides["epochs"] = config.epochs
    if config.max_length:
        overrides["max_length"] = config.max_length
    return TrainConfig(**overrides)


def _run_one(condition: Condition, seed: int, pool: Sequence[PreferencePair], flagged: set[int],
             test: Sequence[PreferencePair], config: CompareConfig, out_dir: Path,
             progress: bool) -> RunRecord:
    from rewardlab.evaluation.evaluate import evaluate_reward_model
    from rewardlab.training.loop import train_reward_model

    selection = select_training_pairs(pool, flagged, mode=condition.mode,
                                      treatment=condition.treatment or "remove", seed=seed)
    ckpt = out_dir / "runs" / f"{condition.name}-s{seed}" if config.save_checkpoints else None
    trained = train_reward_model(selection.pairs, config=train_config_for(config, seed),
                                 output_dir=ckpt, smoothing=selection.smoothing, progress=progress)
    evaluation = evaluate_reward_model(trained.model, test, progress=progress)
    return {
        "seed": seed, "train_pairs": len(selection.pairs), "selection": selection.describe(),
        "flagged_in_train": selection.n_flagged, "removed": selection.n_removed,
        "train_loss": trained.train_loss, "train_accuracy": trained.train_accuracy,
        "seconds": trained.seconds, "checkpoint": str(ckpt) if ckpt else None,
        "n_truncated": trained.n_truncated, "history": trained.history,
        "test": evaluation.metrics,
        "test_chosen_rewards": evaluation.chosen_rewards.tolist(),
        "test_rejected_rewards": evaluation.rejected_rewards.tolist(),
    }


def _load_pool_and_test(store: Store, name: str, config: CompareConfig
                        ) -> tuple[int, list[PreferencePair], list[PreferencePair]]:
    """(number of train pairs in the store, the training pool, the test pairs)."""
    train = store.load_pairs(name, split="train")
    test = store.load_pairs(name, split="test")
    if not test:
        raise SourceError(f"dataset {name!r} has no test pairs: pass --test SOURCE or "
                          "--test-fraction F")
    max_pairs = config.max_pairs if config.max_pairs is not None else \
        PRESETS[config.preset]["max_pairs"]
    # One fixed sample for every condition and seed: seeds then vary training, not the data.
    pool = sample_stratified(train, max_pairs, seed=0) if max_pairs else train
    return len(train), pool, test


def _comparisons(conditions: dict[str, ConditionBlock]) -> list[Comparison]:
    from rewardlab.evaluation.stats import compare_runs

    out = []
    for treated in (c for c in conditions if c.startswith("clean-")):
        for baseline in ("unfiltered", "random"):
            if baseline in conditions:
                out.append(compare_runs(treated, conditions[treated]["runs"], baseline,
                                        conditions[baseline]["runs"]))
    return out


# teaching(results so far, training pool, test pairs) -> the results' "teaching" block
Annotate = Callable[["ResultsDraft", list[PreferencePair], list[PreferencePair]], "TeachingBlock"]


def run_comparison(config: CompareConfig, out_dir: Path, *, db: str | None = None,
                   store: Store | None = None, progress: bool = True,
                   teaching: Annotate | None = None) -> ResultsDocument:
    """Run the experiment, write the report into `out_dir`, record it in the store; return results.

    `teaching(results, pool, test)`, if given, returns the `teaching` block (the demo's ground-truth
    analysis); it runs before the verdict so the verdict can use it.
    """
    from rewardlab.evaluation.stats import notebook_table, overall_verdict, summarize_runs
    from rewardlab.report.build import write_report
    from rewardlab.store.store import Store

    started = time.perf_counter()
    config = _offline_fallback(config)  # first: everything below (name, ingest, results) reads it
    store = store or Store(db)
    plan = plan_conditions(config.conditions, config.treatments)
    name = config.name or dataset_name_for(config.train, config.test_fraction)
    _ingest(store, config, name)
    n_train, pool, test = _load_pool_and_test(store, name, config)
    detectors = [d.strip() for d in (config.detectors or ",".join(CLEAN_DETECTORS)).split(",")
                 if d.strip()]
    _ensure_detector_runs(store, name, detectors, n_train, progress)
    flagged = resolve_flagged_ids(store, name, detectors)
    seeds = list(range(config.seeds or PRESETS[config.preset]["seeds"]))
    conditions: dict[str, ConditionBlock] = {}
    for i, cond in enumerate(plan):
        runs = []
        for seed in seeds:
            log.info("[%d/%d] %s, seed %d", i * len(seeds) + seed + 1, len(plan) * len(seeds),
                     cond.name, seed)
            runs.append(_run_one(cond, seed, pool, flagged, test, config, out_dir, progress))
            log.info("    test accuracy %.4f on %d pairs (%.0f s)", runs[-1]["test"]["accuracy"],
                     len(test), runs[-1]["seconds"])
        conditions[cond.name] = {"treatment": cond.treatment, "description": runs[0]["selection"],
                                 "runs": runs, "summary": summarize_runs(runs)}
    draft: ResultsDraft = {
        "rewardlab_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        # asdict is untyped; ResultsConfig lists CompareConfig's fields (tests/test_results.py)
        "config": cast("ResultsConfig", {
            **dataclasses.asdict(config), "seeds": seeds, "detectors": detectors,
            "conditions": [c.name for c in plan],
            "train_config": dataclasses.asdict(train_config_for(config, 0)),
            "max_pairs": len(pool)}),
        "data": {"train": {"dataset": name, "source": config.train, "pairs": len(pool),
                           "fingerprint": fingerprint_pairs(pool)},
                 "test": {"dataset": name, "source": config.test or config.train,
                          "pairs": len(test), "fingerprint": fingerprint_pairs(test)}},
        "flags": _flags_block(store, name, detectors, pool),
        "conditions": conditions,
        "comparisons": _comparisons(conditions),
    }
    if teaching is not None:
        draft["teaching"] = teaching(draft, pool, test)
    # the draft's keys in their order, then the last three (the verdict reads no notebook table)
    results: ResultsDocument = {**draft, "notebook_table": notebook_table(conditions),
                                "verdict": overall_verdict(draft),
                                "seconds": time.perf_counter() - started}
    write_report(results, out_dir)
    _record(store, results, out_dir)
    return results


def _record(store: Store, results: ResultsDocument, out_dir: Path) -> None:
    summaries = {c: v["summary"] for c, v in results["conditions"].items()}
    exp_id = store.record_experiment(name=out_dir.name, dataset=results["data"]["train"]["dataset"],
                                     config=results["config"], metrics=summaries,
                                     out_dir=str(out_dir.resolve()))
    for cond, block in results["conditions"].items():
        for run in block["runs"]:
            metrics = {k: run["test"][k] for k in ("accuracy", "reward_gap_mean", "nll", "ece")}
            store.add_experiment_run(exp_id, condition=cond, seed=run["seed"],
                                     metrics={**metrics, "train_pairs": run["train_pairs"]},
                                     checkpoint=run["checkpoint"])

