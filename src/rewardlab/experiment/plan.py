"""The experiment as a plan of runs: every training run named before any of them trains.

`plan_experiment(config, data)` lists, in training order, each run of an experiment (a condition ×
seed, a dose-response arm × fraction × seed, an ablation arm × seed) as a frozen `RunSpec` naming
exactly its training pairs (store example ids), which of them train with chosen and rejected
swapped, their label smoothing and its `TrainConfig`. Its `id` hashes all of that with the data's
fingerprint and the rewardlab version: a run the store holds under that id is this run, finished.
`run_comparison` trains the runs the store lacks; `compare --dry-run` prints `summarize_plan`.

>>> from rewardlab.data.pairs import PreferencePair
>>> from rewardlab.experiment.compare_config import CompareConfig, Condition
>>> from rewardlab.training.train_config import TrainConfig
>>> pool = [PreferencePair(i, "train", "p", "a", "b", example_id=10 + i) for i in range(4)]
>>> data = ExperimentData(pool=pool, fingerprint="f", conditions=[Condition("clean-remove",
...     "clean", "remove")], seeds=[0, 1], flagged=frozenset({11}))
>>> [(r.group, r.seed, r.pair_ids) for r in plan_experiment(CompareConfig(training=TrainConfig(model="bow")),
...                                                           data)]
[('clean-remove', 0, (10, 12, 13)), ('clean-remove', 1, (10, 12, 13))]
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from rewardlab._version import __version__
from rewardlab.data.pairs import PreferencePair
from rewardlab.data.rated import RatedPrompt, tied_pairs
from rewardlab.experiment.compare_config import (
    AA_CONDITION,
    AA_SEED_OFFSET,
    RATED_CONDITIONS,
    REVIEWED_CONDITION,
    CompareConfig,
    Condition,
    RatedCondition,
    train_config_for,
)
from rewardlab.experiment.dose_arms import Arm, ArmKey, ablation_arms, dose_arms
from rewardlab.flags.selection import Selection, select_training_pairs
from rewardlab.training.train_config import TrainConfig

__all__ = ["ExperimentData", "RunSpec", "PlanSummary", "GroupSummary", "plan_experiment",
           "summarize_plan", "best_worst"]


@dataclass(frozen=True)
class ExperimentData:
    """What a plan is drawn from: the training pool and the flags, as the store holds them."""

    pool: Sequence[PreferencePair]  # the training pool in store order (example_id set)
    fingerprint: str  # over the pool and the test pairs: runs on other data get other ids
    conditions: Sequence[Condition]
    seeds: Sequence[int]
    flagged: Collection[int] = frozenset()  # the detectors' flags: what clean and random act on
    confirmed: Collection[int] = frozenset()  # the flags reviewers confirmed (clean-reviewed)
    flagged_by: Mapping[str, set[int]] = field(default_factory=dict)  # per detector (ablation)
    rank_by: str | None = None  # the dose-response ranking detector
    fractions: Sequence[float] = ()
    scores: Mapping[int, float] = field(default_factory=dict)  # rank_by's score per example id
    # the tie and ranking conditions (issue 32): the training pool's rated prompts (`pool` then
    # holds their decided pairs) and the test prompts (the test pairs are their decided pairs)
    rated: Sequence[RatedPrompt] = ()
    rated_test: Sequence[RatedPrompt] = ()

    @functools.cached_property
    def by_id(self) -> dict[int | None, PreferencePair]:
        """The pool's pairs by example id, as the store holds them (once for every run)."""
        return {p.example_id: p for p in self.pool}


@dataclass(frozen=True)
class RunSpec:
    """One training run, fully named: what it trains on, how, and where its record goes."""

    stage: str  # "condition" | "dose" | "ablation"
    group: str  # the condition or arm tag: the results block, log lines, checkpoint folder
    treatment: str | None  # remove | flip | soft; None for unfiltered and random
    seed: int
    fraction: float | None  # dose-response only
    arm: str | None  # dose: detector | random; ablation: clean | random
    pair_ids: tuple[int, ...]  # the training pairs (store example ids), in training order
    flipped_ids: tuple[int, ...]  # of those, the ones trained with chosen and rejected swapped
    smoothing: tuple[float, ...] | None  # per-pair label smoothing (soft), aligned with pair_ids
    train_config: TrainConfig  # its seed is this run's
    data: str  # the data fingerprint
    # the pairs themselves, as training takes them; named by the fields above
    selection: Selection = field(compare=False, repr=False)
    # a run on rated data (compare's tie and ranking conditions): its training prompts' store ids
    # (None for a pair run, and then left out of the id, so pair runs keep their ids) and the
    # prompts `train_on_rated` takes (best-worst: each cut to its best and worst response)
    prompt_ids: tuple[int, ...] | None = None
    prompts: tuple[RatedPrompt, ...] = field(default=(), compare=False, repr=False)

    @functools.cached_property
    def id(self) -> str:
        """sha256 over every field above and the rewardlab version (hex, 64 characters)."""
        named = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.compare}
        if named["prompt_ids"] is None:
            del named["prompt_ids"]
        named["train_config"] = dataclasses.asdict(self.train_config)
        payload = json.dumps({**named, "rewardlab": __version__}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    @property
    def key(self) -> ArmKey:
        """Where its record goes in the results: (stage, group, fraction, arm)."""
        return (self.stage, self.group, self.fraction, self.arm)

    @property
    def pair_steps(self) -> int:
        """Pairs trained on, over every epoch: the run's cost."""
        return len(self.pair_ids) * self.train_config.epochs


def _spec(stage: str, group: str, seed: int, selection: Selection, *, config: CompareConfig,
          data: ExperimentData, fraction: float | None = None, arm: str | None = None) -> RunSpec:
    originals = data.by_id
    ids = tuple(int(p.example_id) for p in selection.pairs if p.example_id is not None)
    flipped = tuple(eid for eid, p in zip(ids, selection.pairs)
                    if (p.chosen, p.rejected) != (originals[eid].chosen, originals[eid].rejected))
    smoothing = tuple(selection.smoothing) if selection.smoothing is not None else None
    return RunSpec(stage=stage, group=group, treatment=selection.treatment, seed=seed,
                   fraction=fraction, arm=arm, pair_ids=ids, flipped_ids=flipped,
                   smoothing=smoothing, train_config=train_config_for(config, seed),
                   data=data.fingerprint, selection=selection)


def _condition_runs(config: CompareConfig, data: ExperimentData) -> list[RunSpec]:
    runs = []
    for cond in data.conditions:
        if cond.mode == "rated":  # a tie or ranking condition
            runs += _rated_runs(RATED_CONDITIONS[cond.name], config, data)
            continue
        acted_on = data.confirmed if cond.name == REVIEWED_CONDITION else data.flagged
        for seed in (data.seeds if cond.name != AA_CONDITION  # the A/A control: other seeds
                     else [AA_SEED_OFFSET + s for s in data.seeds]):
            selection = select_training_pairs(data.pool, acted_on, mode=cond.mode,
                                              treatment=cond.treatment or "remove", seed=seed)
            runs.append(_spec("condition", cond.name, seed, selection, config=config, data=data))
    return runs


def best_worst(prompt: RatedPrompt) -> RatedPrompt | None:
    """The prompt cut to its best and worst response (by rank), as people binarize UltraFeedback;
    None when those two are a tie (`data.rated.tied_pairs`: no decided pair to keep).

    >>> p = RatedPrompt(0, "train", "q", ("a", "b", "c"), (1.0, 3.0, 2.0), (2, 0, 1))
    >>> best_worst(p).responses
    ('b', 'a')
    """
    best, worst = prompt.ranks.index(0), prompt.ranks.index(len(prompt.responses) - 1)
    if (min(best, worst), max(best, worst)) in tied_pairs(prompt):
        return None
    return dataclasses.replace(prompt, responses=(prompt.responses[best], prompt.responses[worst]),
                               scores=(prompt.scores[best], prompt.scores[worst]), ranks=(0, 1),
                               ties=(), meta={**prompt.meta, "cut_from": [best, worst]})


def _rated_training(cond: RatedCondition, data: ExperimentData
                    ) -> tuple[list[RatedPrompt], list[PreferencePair]]:
    """(the prompts a condition trains on, their decided pairs in the pool): every prompt of the
    pool, or for best-worst each prompt's best-vs-worst pair."""
    prompts = list(data.rated)
    if not cond.best_worst:
        return prompts, list(data.pool)
    pair_of = {(p.meta["rated_id"], p.meta["a"], p.meta["b"]): p for p in data.pool}
    kept, pairs = [], []
    for prompt in prompts:
        cut = best_worst(prompt)
        if cut is not None:
            best, worst = cut.meta["cut_from"]
            kept.append(cut)
            pairs.append(pair_of[(prompt.meta["rated_id"], best, worst)])
    return kept, pairs


def _rated_runs(cond: RatedCondition, config: CompareConfig, data: ExperimentData
                ) -> list[RunSpec]:
    """One `train_on_rated` run per seed with the condition's tie handling and ranking use; its
    id hashes its prompts, their decided pairs and its TrainConfig."""
    prompts, pairs = _rated_training(cond, data)
    selection = Selection(pairs=pairs, smoothing=None, mode="all", treatment=None,
                          n_pool=len(data.pool), n_flagged=0, n_removed=len(data.pool) - len(pairs),
                          n_flipped=0, n_smoothed=0)
    ids = tuple(int(p.example_id) for p in pairs if p.example_id is not None)
    prompt_ids = tuple(int(p.meta["rated_id"]) for p in prompts)
    return [RunSpec(stage="condition", group=cond.name, treatment=None, seed=seed, fraction=None,
                    arm=None, pair_ids=ids, flipped_ids=(), smoothing=None,
                    train_config=dataclasses.replace(train_config_for(config, seed),
                                                     ties=cond.ties, ranking=cond.ranking),
                    data=data.fingerprint, selection=selection, prompt_ids=prompt_ids,
                    prompts=tuple(prompts))
            for seed in data.seeds]


def _arm_runs(arms: Sequence[Arm], config: CompareConfig, data: ExperimentData) -> list[RunSpec]:
    return [_spec(a.stage, a.tag, seed, selection, config=config, data=data, fraction=a.fraction,
                  arm=a.arm) for a in arms for seed, selection in a.selections.items()]


def plan_experiment(config: CompareConfig, data: ExperimentData) -> list[RunSpec]:
    """Every training run of the experiment, in the order compare trains them: the conditions
    (each over the seeds), then the dose-response arms of the first treatment (with
    `data.rank_by`), then the ablation arms (with `config.ablation`)."""
    treatment = config.treatments[0]
    runs = _condition_runs(config, data)
    if data.rank_by:
        runs += _arm_runs(dose_arms(data.pool, data.scores, rank_by=data.rank_by,
                                    treatment=treatment, fractions=data.fractions,
                                    seeds=data.seeds), config, data)
    if config.ablation:
        runs += _arm_runs(ablation_arms(data.pool, data.flagged_by, treatment=treatment,
                                        seeds=data.seeds,
                                        conditions=[c.name for c in data.conditions]),
                          config, data)
    return runs


class GroupSummary(TypedDict):
    """One condition or arm of a plan: its runs (one per seed) and their sizes."""

    stage: str
    group: str
    runs: int
    stored: int  # finished runs the store already holds
    pairs: int  # training pairs of its first run
    pair_steps: int


class PlanSummary(TypedDict):
    """What `compare --dry-run` prints: the plan's size and cost."""

    runs: int
    stored: int
    to_train: int
    pairs_min: int
    pairs_max: int
    pair_steps: int  # training pairs × epochs, summed over every run
    pair_steps_to_train: int  # the same over the runs the store lacks
    pairs_per_second: float | None  # measured on stored runs of this backbone, if any
    estimate_seconds: float | None  # pair_steps_to_train at that speed
    groups: list[GroupSummary]


def summarize_plan(plan: Sequence[RunSpec], stored: Collection[str],
                   speed: float | None = None) -> PlanSummary:
    """The plan's runs, pairs per run and pair-steps; `stored` are the run ids the store holds,
    `speed` a measured pairs/s for the estimate."""
    groups: dict[tuple[Any, ...], GroupSummary] = {}
    for run in plan:
        g = groups.setdefault(run.key, {"stage": run.stage, "group": run.group, "runs": 0,
                                        "stored": 0, "pairs": len(run.pair_ids), "pair_steps": 0})
        g["runs"] += 1
        g["stored"] += run.id in stored
        g["pair_steps"] += run.pair_steps
    sizes = [len(r.pair_ids) for r in plan] or [0]
    to_train = sum(r.pair_steps for r in plan if r.id not in stored)
    return {"runs": len(plan), "stored": sum(r.id in stored for r in plan),
            "to_train": sum(r.id not in stored for r in plan), "pairs_min": min(sizes),
            "pairs_max": max(sizes), "pair_steps": sum(r.pair_steps for r in plan),
            "pair_steps_to_train": to_train, "pairs_per_second": speed,
            "estimate_seconds": to_train / speed if speed else None,
            "groups": list(groups.values())}
