"""What compare's tie and ranking conditions are drawn from (issue 32): rated prompts in the store.

The conditions (`compare_config.RATED_CONDITIONS`: ties-drop, ties-soft, ties-model; best-worst,
all-pairs, listwise) train with `train_on_rated` on the training pool's prompts and are scored,
like every condition, on one test set: the decided pairs of the test prompts (the store derives
them, `Store.load_pairs`), so accuracy, its paired tests, Holm and the verdict work as for the
pair conditions; each run also scores the test prompts' K responses for Kendall's tau, best-of-K
and the tie metrics (`evaluation/rated_stats.py`).

>>> from rewardlab.data.rated import RatedPrompt, derived_pairs
>>> prompts = [RatedPrompt(i, "train", f"q{i}", ("a", "b", "c"), (2.0, 1.0, 0.0), (0, 1, 2),
...                        meta={"rated_id": i}) for i in range(4)]
>>> pairs = [p for r in prompts for p in derived_pairs(r)]
>>> kept, kept_pairs = rated_pool(prompts, pairs, max_pairs=7)
>>> len(kept), len(kept_pairs)
(2, 6)
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rewardlab.data.pairs import PreferencePair, fingerprint_pairs
from rewardlab.data.rated import RatedPrompt, rated_content_hash
from rewardlab.errors import SelectionError, SourceError
from rewardlab.experiment.compare_config import RATED_CONDITIONS, CompareConfig

if TYPE_CHECKING:
    from rewardlab.store.store import Store

__all__ = ["RatedExperimentData", "check_rated_source", "rated_pool", "load_rated_data"]


@dataclass(frozen=True)
class RatedExperimentData:
    """The rated training pool and test set of an experiment, as the store holds them."""

    prompts: list[RatedPrompt]  # the training pool's prompts (store order)
    pool: list[PreferencePair]  # their decided pairs
    train_ids: list[int | None]  # every decided train pair of the dataset, store order
    test_prompts: list[RatedPrompt]
    test: list[PreferencePair]  # the test prompts' decided pairs: every run's test set
    fingerprints: tuple[str, str]  # (training pool, test set), the prompts' content included


def _asked(config: CompareConfig) -> str:
    return next(c for c in config.conditions if c in RATED_CONDITIONS)


def check_rated_source(config: CompareConfig) -> None:
    """A `synthetic:` train source without `k=` has no rated prompts: said before any ingest."""
    from rewardlab.data.synthetic import parse_synthetic_spec

    if config.train.startswith("synthetic:") and parse_synthetic_spec(config.train).k is None:
        raise SelectionError(f"--conditions {_asked(config)}: needs rated data (K responses per "
                             f"prompt); {config.train} gives pairs: add k=K (and ties=T), e.g. "
                             "synthetic:n=400,k=4,ties=0.2")


def rated_pool(prompts: Sequence[RatedPrompt], pairs: Sequence[PreferencePair], *,
               max_pairs: int | None) -> tuple[list[RatedPrompt], list[PreferencePair]]:
    """Whole prompts, drawn in a seeded order (seed 0: the same for every condition and seed)
    while their decided pairs fit in `max_pairs` (None or 0: every prompt); store order kept."""
    by_prompt: dict[int, list[PreferencePair]] = {}
    for pair in pairs:
        by_prompt.setdefault(int(pair.meta["rated_id"]), []).append(pair)
    if not max_pairs or len(pairs) <= max_pairs:
        return list(prompts), list(pairs)
    order = list(range(len(prompts)))
    random.Random(0).shuffle(order)
    kept, total = set(), 0
    for i in order:
        n = len(by_prompt.get(int(prompts[i].meta["rated_id"]), []))
        if total + n > max_pairs:
            break
        kept.add(i)
        total += n
    chosen = [p for i, p in enumerate(prompts) if i in kept]
    ids = {int(p.meta["rated_id"]) for p in chosen}
    return chosen, [p for p in pairs if int(p.meta["rated_id"]) in ids]


def _fingerprint(pairs: Sequence[PreferencePair], prompts: Sequence[RatedPrompt]) -> str:
    """The pairs' fingerprint and the prompts' content (their ties and scores too)."""
    digest = hashlib.sha256(fingerprint_pairs(list(pairs)).encode())
    for prompt in prompts:
        digest.update(rated_content_hash(prompt).encode())
    return digest.hexdigest()


def load_rated_data(store: Store, name: str, config: CompareConfig, *,
                    max_pairs: int | None) -> RatedExperimentData:
    """The dataset's rated training pool and test set; SelectionError (one line) when it holds
    no rated training prompts, SourceError when it has no rated test prompts."""
    prompts = store.load_rated(name, split="train")
    if not prompts:
        raise SelectionError(f"--conditions {_asked(config)}: dataset {name!r} holds plain pairs, "
                             "no rated prompts (K responses with scores, ranks or ties: "
                             "synthetic:…,k=K, Arena votes, UltraFeedback, HelpSteer2, rankings)")
    test_prompts = store.load_rated(name, split="test")
    test = store.load_pairs(name, split="test")
    if not test_prompts or not test:
        raise SourceError(f"dataset {name!r} has no rated test prompts with a decided pair: pass "
                          "--test SOURCE (rated) or --test-fraction F")
    train = store.load_pairs(name, split="train")
    kept, pool = rated_pool(prompts, train, max_pairs=max_pairs)
    return RatedExperimentData(kept, pool, [p.example_id for p in train], test_prompts, test,
                               (_fingerprint(pool, kept), _fingerprint(test, test_prompts)))
