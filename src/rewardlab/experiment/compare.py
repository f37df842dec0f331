"""The clean-vs-unfiltered experiment: conditions × seeds on the same test pairs, then statistics.

`run_comparison(config)` ingests what the store lacks, runs missing detectors (`prepare_experiment`),
plans every run (`experiment/plan.py`: conditions × seeds, each a `RunSpec` with an id), trains the
runs the store does not hold yet, storing each as it finishes (`experiment/runs.py`), each
evaluated on one test set; `experiment/analysis.py`'s pure `analyse(plan, runs)` turns the runs into
the results that `report.write_report` renders (schema: docs/architecture.md), and the experiment
is recorded in the store before its first run trains. With `--fractions F --rank-by D` it
adds dose-response curves (`experiment/dose_arms.py`), with `--ablation` each detector against its own
size-matched random control; Holm's correction then runs over every test the report makes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from rewardlab.data.pairs import PreferencePair, fingerprint_pairs
from rewardlab.errors import SelectionError, SourceError
from rewardlab.experiment.analysis import Annotate, ExperimentPlan, analyse
from rewardlab.experiment.compare_config import (
    AA_CONDITION,
    CONDITIONS,
    PRESETS,
    RATED_CONDITIONS,
    REVIEWED_CONDITION,
    CompareConfig,
    Condition,
    Preset,
    train_config_for,
)
from rewardlab.experiment.executor import Execution
from rewardlab.experiment.plan import (
    ExperimentData,
    PlanSummary,
    RunSpec,
    plan_experiment,
    summarize_plan,
)
from rewardlab.experiment.runs import run_plan
from rewardlab.experiment.strength_histogram import STRENGTH_DETECTORS, strength_block
from rewardlab.flags.detector_precision import precision_stats
from rewardlab.flags.selection import (
    CLEAN_DETECTORS,  # the one default meaning of "clean", shared with `train --select clean`
    TREATMENTS,
    FlagSpec,
    clean_definition,
    detector_scores,
    flagged_by,
    flagged_ids,
    run_names,
    sample_stratified,
)

if TYPE_CHECKING:
    from rewardlab.flags.detector_precision import DetectorPrecision
    from rewardlab.report.results import (
        DetectorFlags,
        FlagsBlock,
        ResultsConfig,
        ResultsDocument,
    )
    from rewardlab.store.records import FinishedRun
    from rewardlab.store.store import Store

__all__ = ["CompareConfig", "Preset", "PRESETS", "CLEAN_DETECTORS", "Condition", "plan_conditions",
           "dataset_name_for", "train_config_for", "validate_compare_config", "compare_detectors",
           "check_fractions_fit", "Annotate", "Prepared", "prepare_experiment", "plan_comparison",
           "run_comparison"]

log = logging.getLogger("rewardlab")


def plan_conditions(conditions: Sequence[str], treatments: Sequence[str]) -> list[Condition]:
    """(unfiltered, clean, random) × (remove, flip) → unfiltered, clean-remove, clean-flip, random.

    >>> [c.name for c in plan_conditions(("unfiltered", "clean"), ("remove", "flip"))]
    ['unfiltered', 'clean-remove', 'clean-flip']
    """
    names, kinds = list(conditions), list(treatments)
    unknown = [c for c in names if c not in CONDITIONS and c not in RATED_CONDITIONS]
    bad_t = [t for t in kinds if t not in TREATMENTS]
    if unknown or bad_t or not names or not kinds:
        raise SelectionError(f"unknown condition/treatment {', '.join(unknown + bad_t) or '(none)'}"
                             f"; conditions: {', '.join(CONDITIONS)}; on rated data: "
                             f"{', '.join(RATED_CONDITIONS)}; treatments: {', '.join(TREATMENTS)}")
    plan: list[Condition] = []
    for c in names:
        if c in RATED_CONDITIONS:  # a tie or ranking condition (`train_on_rated`, no flags)
            plan.append(Condition(c, "rated", None))
        elif c == "unfiltered":
            plan.append(Condition("unfiltered", "all", None))
        elif c == "random":
            plan.append(Condition("random", "random", None))
        elif c == REVIEWED_CONDITION:
            plan.append(Condition(REVIEWED_CONDITION, "clean", "remove"))
        elif c == AA_CONDITION:  # unfiltered again; its own seeds are the plan's (AA_SEED_OFFSET)
            plan.append(Condition(AA_CONDITION, "all", None))
        else:
            plan += [Condition(f"clean-{t}", "clean", t) for t in kinds]
    if AA_CONDITION in names and "unfiltered" not in names:
        raise SelectionError(f"condition {AA_CONDITION} (the A/A control) is compared with "
                             "unfiltered: add unfiltered to --conditions, e.g. unfiltered,aa")
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


def _flags_block(store: Store, name: str, detectors: Sequence[FlagSpec],
                 pool: Sequence[PreferencePair]) -> FlagsBlock:
    """Flag counts within the training pool, per flag set (keyed `DET` or `reviewed:DET`) and for
    their union."""
    if not detectors:  # the tie and ranking conditions use no flags
        return {"detectors": {}, "union": {"flagged": 0, "rate": 0.0}}
    pool_ids = {p.example_id for p in pool}
    runs = store.latest_runs(name)
    by_det = flagged_by(store, name, detectors)
    reviewed = precision_stats(store, name)  # over the whole dataset's reviews of each detector
    n = max(len(pool_ids), 1)
    block: dict[str, DetectorFlags] = {}
    for spec in detectors:
        run = runs[spec.detector]  # reviewed:DET has DET's threshold
        flagged = len(by_det.get(str(spec), set()) & pool_ids)
        block[str(spec)] = _with_reviewed_precision(
            {"flagged": flagged, "rate": flagged / n, "threshold": run["threshold"],
             "threshold_kind": run["threshold_kind"]}, reviewed.get(str(spec)))
    union = set().union(*by_det.values()) & pool_ids if by_det else set()
    return {"detectors": block, "union": {"flagged": len(union), "rate": len(union) / n}}


def _with_reviewed_precision(flags: DetectorFlags, stats: DetectorPrecision | None
                             ) -> DetectorFlags:
    """`flags` plus the detector's reviewed precision (none reviewed: 0 and None)."""
    return {**flags, "reviewed": stats["reviewed"] if stats else 0,
            "reviewed_tp": stats["tp"] if stats else 0,
            "precision": stats["precision"] if stats else None,
            "precision_ci": stats["ci"] if stats else None}


def _with_reviewed(plan: list[Condition], store: Store, name: str,
                   detectors: Sequence[FlagSpec | str], pool: Sequence[PreferencePair]
                   ) -> tuple[list[Condition], set[int]]:
    """(the plan, the pool's flags reviewers confirmed): clean-reviewed joins a plan with clean
    once reviewers confirmed any flag of `detectors`; asked for with none confirmed, it is an error."""
    pool_ids = {p.example_id for p in pool}
    confirmed = flagged_ids(store, name, [FlagSpec(d, reviewed_only=True)
                                          for d in run_names(detectors)]) & pool_ids
    asked = any(c.name == REVIEWED_CONDITION for c in plan)
    if asked and not confirmed:
        raise SelectionError(f"condition {REVIEWED_CONDITION}: reviewers confirmed none of the "
                             f"training pool's flags of {', '.join(map(str, detectors))}; review "
                             f"some with "
                             f"`rewardlab review {name}` first")
    if confirmed and not asked and any(c.mode == "clean" for c in plan):
        log.info("reviewers confirmed %d flagged training pairs: adding condition %s",
                 len(confirmed), REVIEWED_CONDITION)
        last_clean = max(i for i, c in enumerate(plan) if c.mode == "clean")
        plan = [*plan[:last_clean + 1], Condition(REVIEWED_CONDITION, "clean", "remove"),
                *plan[last_clean + 1:]]
    return plan, confirmed


def compare_detectors(config: CompareConfig) -> list[FlagSpec]:
    """The flag sets that define "flagged": --detectors, else the preset's, else the default
    clean set (the same one `train --select clean` uses).

    >>> [str(s) for s in compare_detectors(CompareConfig(preset="strength"))]
    ['preference_strength']
    """
    given = _setting(config, "detectors")
    return list(given) if given is not None else [FlagSpec(d) for d in CLEAN_DETECTORS]


def check_fractions_fit(fractions: Sequence[float], n_pool: int) -> None:
    """Each dose-response fraction must treat at least one of the `n_pool` training pairs, and no
    two the same number: checked once the pool is known, before any training. (Counting would
    round 0.0001 × 200 up to 1 pair and draw a point that is not the fraction asked for.)"""
    if n_pool < 1:
        raise SelectionError("--fractions: there are no training pairs to treat")
    counts = [round(f * n_pool) for f in fractions]
    for f, k in zip(fractions, counts):
        if not 1 <= k < n_pool:
            raise SelectionError(f"--fractions: {f:g} of {n_pool:,} training pairs treats "
                                 f"{f * n_pool:.4g} pairs, rounded to {k}; each fraction must "
                                 f"treat at least one pair and leave one (here: between "
                                 f"{1 / n_pool:.2g} and {1 - 1 / n_pool:.4g})")
    for (f1, k1), (f2, k2) in zip(zip(fractions, counts), zip(fractions[1:], counts[1:])):
        if k1 == k2:
            raise SelectionError(f"--fractions: {f1:g} and {f2:g} both treat {k1} of {n_pool:,} "
                                 "training pairs; choose fractions further apart")


def _setting(config: CompareConfig, key: str) -> Any:
    """The option if it was given, else the preset's value (None when neither sets it)."""
    value = getattr(config, key)
    return value if value is not None else PRESETS[config.preset].get(key)


def validate_compare_config(config: CompareConfig, store: Store | None = None) -> list[float]:
    """Check the options before any data is read or model trained; return the dose-response
    fractions ([] when there is no dose-response). SelectionError naming the option otherwise.

    `--rank-by` must be a known detector, or one already run on the dataset (an imported flag
    file) when `store` is given.
    """
    from rewardlab.experiment.dose_arms import check_fractions
    from rewardlab.flags.detectors import DETECTORS
    from rewardlab.models.backbones import resolve_backbone

    if config.preset not in PRESETS:
        raise SelectionError(f"--preset: unknown preset {config.preset!r}; presets: "
                             f"{', '.join(PRESETS)}")
    resolve_backbone(config.training.model)  # a malformed --model
    plan_conditions(config.conditions, config.treatments)
    known = set(DETECTORS) | _stored_detectors(config, store)
    unknown = [s for s in compare_detectors(config) if s.detector not in known]
    if unknown:  # else found only after ingest, and after every other detector ran
        raise SelectionError(f"--detectors: unknown detector {str(unknown[0])!r}; detectors: "
                             f"{', '.join(sorted(known))}")
    fractions, rank_by = _setting(config, "fractions"), _setting(config, "rank_by")
    if fractions is None and rank_by is None:
        return []
    if rank_by is None:
        raise SelectionError("--fractions needs --rank-by DETECTOR: the detector whose scores "
                             "rank the pairs")
    if fractions is None:
        raise SelectionError(f"--rank-by {rank_by} needs --fractions, e.g. 0.05,0.1,0.2,0.3")
    parsed = check_fractions(fractions)
    if rank_by not in known:
        raise SelectionError(f"--rank-by: unknown detector {rank_by!r}; detectors: "
                             f"{', '.join(sorted(known))}")
    return parsed


def _stored_detectors(config: CompareConfig, store: Store | None) -> set[str]:
    """Detectors already run on the dataset this config names (imported flag files count)."""
    name = config.name or dataset_name_for(config.train, config.test_fraction)
    if store is None or name not in store.dataset_names():
        return set()
    return set(store.latest_runs(name))


def _rank_scores(store: Store, name: str, rank_by: str, pool: Sequence[PreferencePair],
                 fractions: Sequence[float]) -> dict[int, float]:
    """The ranking detector's scores; SelectionError when they cannot rank the pool."""
    scores = detector_scores(store, name, rank_by)
    values = [scores.get(p.example_id, math.nan) for p in pool if p.example_id is not None]
    finite = [v for v in values if math.isfinite(v)]
    if len(set(finite)) < 2:
        raise SelectionError(f"--rank-by {rank_by}: its latest run on {name!r} gives "
                             f"{'no pair a score' if not finite else 'every pair the same score'}"
                             "; it cannot rank the pairs")
    top = max(finite)
    share = sum(v == top for v in finite) / len(values)
    if set(finite) <= {0.0, 1.0} and fractions[-1] > share:
        log.warning("--rank-by %s is a yes/no detector that flags %.1f%% of the pool: beyond that "
                    "fraction its 'ranking' is a random choice among unflagged pairs", rank_by,
                    100 * share)
    return scores


def _load_pool_and_test(store: Store, name: str, config: CompareConfig
                        ) -> tuple[list[int | None], list[PreferencePair], list[PreferencePair]]:
    """(the store's train example ids in store order, the training pool, the test pairs)."""
    train = store.load_pairs(name, split="train")
    test = store.load_pairs(name, split="test")
    if not test:
        raise SourceError(f"dataset {name!r} has no test pairs: pass --test SOURCE or "
                          "--test-fraction F")
    max_pairs = config.max_pairs if config.max_pairs is not None else \
        PRESETS[config.preset]["max_pairs"]
    # One fixed sample for every condition and seed: seeds then vary training, not the data.
    pool = sample_stratified(train, max_pairs, seed=0) if max_pairs else train
    return [p.example_id for p in train], pool, test


@dataclass(frozen=True)
class Prepared:
    """An experiment ready to plan: its options (after the offline fallback) and what the store
    holds for it (pairs ingested, detectors run, flags resolved)."""

    config: CompareConfig
    name: str  # the dataset in the store
    detectors: list[FlagSpec]  # the flag sets that define "flagged"
    train_ids: list[int | None]  # every train pair of the dataset, store order
    test: list[PreferencePair]
    fingerprints: tuple[str, str]  # (training pool, test pairs)
    data: ExperimentData


def prepare_experiment(config: CompareConfig, store: Store, *, progress: bool = True) -> Prepared:
    """Check the options, ingest what the store lacks, run the missing detectors and resolve the
    flags: everything a plan is drawn from, before any model trains."""
    fractions = validate_compare_config(config, store)  # before the hub check, ingest or training
    config = _offline_fallback(config)  # first: everything below (name, ingest, results) reads it
    conditions = plan_conditions(config.conditions, config.treatments)
    name = config.name or dataset_name_for(config.train, config.test_fraction)
    if any(c.mode == "rated" for c in conditions):  # tie and ranking conditions: no detectors
        return _prepare_rated(config, store, name, conditions)
    detectors = compare_detectors(config)
    log.info("%s", clean_definition([str(d) for d in detectors]))  # as `train --select clean`
    _ingest(store, config, name)
    train_ids, pool, test = _load_pool_and_test(store, name, config)
    check_fractions_fit(fractions, len(pool))  # the pool's size is known now, before any training
    rank_by: str | None = _setting(config, "rank_by") if fractions else None
    _ensure_detector_runs(store, name,
                          list(dict.fromkeys(run_names(detectors) + ([rank_by] if rank_by else []))),
                          len(train_ids), progress)
    flagged = flagged_ids(store, name, detectors)
    conditions, confirmed = _with_reviewed(conditions, store, name, detectors, pool)
    scores = _rank_scores(store, name, rank_by, pool, fractions) if rank_by else {}
    fingerprints = (fingerprint_pairs(pool), fingerprint_pairs(test))
    data = ExperimentData(
        pool=pool, fingerprint=hashlib.sha256(" ".join(fingerprints).encode()).hexdigest(),
        conditions=conditions, seeds=list(range(config.seeds or PRESETS[config.preset]["seeds"])),
        flagged=frozenset(flagged), confirmed=frozenset(confirmed),
        flagged_by=flagged_by(store, name, detectors) if config.ablation else {},
        rank_by=rank_by, fractions=fractions, scores=scores)
    return Prepared(config, name, detectors, train_ids, test, fingerprints, data)


def _prepare_rated(config: CompareConfig, store: Store, name: str,
                   conditions: list[Condition]) -> Prepared:
    """`prepare_experiment` for the tie and ranking conditions: the rated prompts ingested and
    loaded (`experiment/compare_rated.py`); no detector runs, nothing flagged."""
    from rewardlab.experiment.compare_rated import check_rated_source, load_rated_data

    check_rated_source(config)  # a synthetic spec of pairs: before the ingest
    _ingest(store, config, name)
    max_pairs = config.max_pairs if config.max_pairs is not None else \
        PRESETS[config.preset]["max_pairs"]
    rated = load_rated_data(store, name, config, max_pairs=max_pairs)
    data = ExperimentData(
        pool=rated.pool, fingerprint=hashlib.sha256(" ".join(rated.fingerprints).encode()).hexdigest(),
        conditions=conditions, seeds=list(range(config.seeds or PRESETS[config.preset]["seeds"])),
        rated=rated.prompts, rated_test=rated.test_prompts)
    log.info("rated data: %d training prompts (%d decided pairs), %d test prompts (%d decided "
             "pairs)", len(rated.prompts), len(rated.pool), len(rated.test_prompts),
             len(rated.test))
    return Prepared(config, name, [], rated.train_ids, rated.test, rated.fingerprints, data)


def plan_comparison(config: CompareConfig, *, db: str | None = None, store: Store | None = None,
                    progress: bool = True) -> tuple[list[RunSpec], PlanSummary]:
    """The experiment's plan and its summary (`compare --dry-run`): the data is ingested and
    missing detectors run (both stored, for the compare that follows), but no run trains."""
    from rewardlab.store.store import Store

    store = store or Store(db)
    prepared = prepare_experiment(config, store, progress=progress)
    plan = plan_experiment(prepared.config, prepared.data)
    stored = set(store.trained_runs(prepared.name, [r.id for r in plan])) \
        if prepared.config.reuse_runs else set()
    speed = store.training_speed(plan[0].train_config.model) if plan else None
    return plan, summarize_plan(plan, stored, speed)


def run_comparison(config: CompareConfig, out_dir: str | os.PathLike[str], *, db: str | None = None,
                   store: Store | None = None, progress: bool = True,
                   teaching: Annotate | None = None) -> ResultsDocument:
    """Run the experiment, write the report into `out_dir`, record it in the store; return results.

    The plan's runs the store already holds (same id) are reused, the others train and are
    stored one by one (`experiment/runs.py`), so a killed compare started again redoes only
    unfinished runs.

    Parameters
    ----------
    config : CompareConfig
        The experiment: sources, conditions, treatments, detectors, seeds, its TrainConfig.
    out_dir : str or os.PathLike
        Where results.json, report.md/html and the figures go (and checkpoints, when kept).
    db : str or None, default None
        The store's URL when `store` is None (`Store(db)`: None = $REWARDLAB_DB or
        "sqlite:///rewardlab.db").
    store : Store or None, default None
        An open store to use instead of opening `db`.
    progress : bool, default True
        Show progress bars (on stderr).
    teaching : callable or None, default None
        `teaching(results, pool, test)` returns the `teaching` block (the demo's ground-truth
        analysis); it runs before the verdict so the verdict can use it.

    Returns
    -------
    ResultsDocument
        What results.json holds: config, data, flags, conditions, comparisons, verdict, ….
    """
    from rewardlab.report.build import write_report
    from rewardlab.store.store import Store

    out_dir = Path(out_dir)  # a str too (issue 35: the README's "out" crashed in _record)
    started = time.perf_counter()
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    store = store or Store(db)
    prepared = prepare_experiment(config, store, progress=progress)
    plan = plan_experiment(prepared.config, prepared.data)
    experiment = _experiment_plan(prepared, store, plan)  # what the store says, before training
    experiment_id = _start(store, experiment, out_dir)  # before any run: progress is live
    done = run_plan(plan, store, prepared.name, prepared.test,
                    out_dir=out_dir if prepared.config.save_checkpoints else None,
                    reuse=prepared.config.reuse_runs, progress=progress,
                    execution=Execution.of(prepared.config),
                    test_rated=prepared.data.rated_test)
    results = dataclasses.replace(analyse(experiment, done, teaching=teaching), created=created,
                                  seconds=time.perf_counter() - started).to_json()
    write_report(results, out_dir)
    _finish(store, experiment_id, results)
    return results


def _results_config(prepared: Prepared, pool_size: int) -> ResultsConfig:
    config, data = prepared.config, prepared.data
    fractions = _setting(config, "fractions")
    training = dataclasses.asdict(train_config_for(config, 0))
    # asdict is untyped; ResultsConfig lists CompareConfig's fields (tests/report/test_results.py);
    # lists as JSON lists; model, epochs and max_length are the TrainConfig's (the keys results.json
    # had when compare declared them itself)
    return cast("ResultsConfig", {
        **dataclasses.asdict(config), "seeds": list(data.seeds),
        "conditions": [c.name for c in data.conditions], "treatments": list(config.treatments),
        "detectors": [str(d) for d in prepared.detectors],
        "fractions": list(fractions) if fractions is not None else None,
        "rank_by": data.rank_by, "max_pairs": pool_size, "training": training,
        **{key: training[key] for key in ("model", "epochs", "max_length")},
        "train_config": training})


def _experiment_plan(prepared: Prepared, store: Store, plan: Sequence[RunSpec]) -> ExperimentPlan:
    """The plan with everything the analysis reads from the store, read once before any run
    trains: the flags within the pool, the ranking detector's flags, the strength histogram."""
    config, data, name = prepared.config, prepared.data, prepared.name
    pool = data.pool
    measured = [d for d in (data.rank_by, *map(str, prepared.detectors))
                if d in STRENGTH_DETECTORS]
    return ExperimentPlan(
        runs=plan, config=config, config_block=_results_config(prepared, len(pool)),
        data_block={"train": {"dataset": name, "source": config.train, "pairs": len(pool),
                              "fingerprint": prepared.fingerprints[0]},
                    "test": {"dataset": name, "source": config.test or config.train,
                             "pairs": len(prepared.test), "fingerprint": prepared.fingerprints[1]}},
        flags=_flags_block(store, name, prepared.detectors, pool), data=data, test=prepared.test,
        treatment=config.treatments[0],
        rank_flagged=frozenset(flagged_ids(store, name, data.rank_by)) if data.rank_by else frozenset(),
        strength=strength_block(store, name, prepared.train_ids, pool, measured[0], config.train)
        if measured else None)


def _start(store: Store, experiment: ExperimentPlan, out_dir: Path) -> int:
    """The experiment's row in the store, with its plan's run ids, before any run trains: any
    process then reads `runs_done` of `runs_planned` (`rewardlab experiments`) as runs finish."""
    return store.start_experiment(name=out_dir.name, dataset=experiment.data_block["train"]["dataset"],
                                  config=experiment.config_block, out_dir=str(out_dir.resolve()),
                                  run_keys=[r.id for r in experiment.runs])


def _finish(store: Store, experiment_id: int, results: ResultsDocument) -> None:
    """The experiment's summary metrics and its (condition, seed) runs, once it ended."""
    summaries = {c: v["summary"] for c, v in results["conditions"].items()}
    runs: list[FinishedRun] = []
    for cond, block in results["conditions"].items():
        for run in block["runs"]:
            metrics = {k: run["test"][k] for k in ("accuracy", "reward_gap_mean", "nll", "ece")}
            runs.append({"condition": cond, "seed": run["seed"],
                         "metrics": {**metrics, "train_pairs": run["train_pairs"]},
                         "checkpoint": run["checkpoint"]})
    store.finish_experiment(experiment_id, metrics=summaries, runs=runs)
