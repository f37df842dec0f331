"""Per-pair preference strength of the training pool, for the report's strength histogram.

"Secrets of RLHF, part II" scores each pair by the mean (and std) of r(chosen) − r(rejected) over
an ensemble of reward models, and finds about a quarter of HH-RLHF pairs with a negative mean
margin. Only margins from models that never trained on the pair say that honestly, so this reads
the held-out margins a detector stored:

- `preference_strength`: the cross-fitted mean margin per pair (`params["per_pair"]["mean_margin"]`,
  aligned with the train pairs in store order) and strength = mean / std (= −score);
- `oof_margin`: one out-of-fold model per pair, score = 1 − σ(margin), so margin = logit(1 − score).

Other detectors do not measure strength (None: no histogram).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from rewardlab.data.pairs import PreferencePair

if TYPE_CHECKING:
    from rewardlab.report.results import StrengthBlock, StrengthReference
    from rewardlab.store.store import Store

__all__ = ["STRENGTH_DETECTORS", "held_out_margins", "strength_block"]

STRENGTH_DETECTORS = ("preference_strength", "oof_margin")
# Published share of HH-RLHF pairs whose mean margin over an ensemble of reward models is negative.
_HH_REFERENCE = {"dataset": "Anthropic HH-RLHF", "share": 0.25,
                 "source": "Secrets of RLHF, part II (Wang et al., 2024)"}
_EPS = 1e-12  # keeps logit finite for scores of exactly 0 or 1


def _logit_of_complement(score: float) -> float:
    p = min(max(1.0 - score, _EPS), 1.0 - _EPS)  # P(chosen ≻ rejected)
    return math.log(p / (1.0 - p))


def held_out_margins(store: Store, name: str, detector: str, train_ids: Sequence[int | None]
                     ) -> tuple[dict[int, float], dict[int, float] | None] | None:
    """(example id → mean held-out margin, example id → strength or None), or None when the
    detector does not measure margins on pairs its models never trained on.

    `train_ids`: the example ids of the dataset's train pairs in store order, the order the
    detector scored them in (its per-pair lists follow it).
    """
    runs = store.latest_runs(name)
    if detector not in STRENGTH_DETECTORS or detector not in runs:
        return None
    scores = store.detector_scores(name, detector)  # it ran: checked above
    if detector == "oof_margin":
        return {i: _logit_of_complement(s) if math.isfinite(s) else math.nan
                for i, s in scores.items()}, None
    per_pair = runs[detector]["params"].get("per_pair") or {}
    mean = per_pair.get("mean_margin")
    if mean is None or len(mean) != len(train_ids):
        return None  # a run without per-pair margins, or over other pairs: no histogram
    by_id = {int(i): math.nan if m is None else float(m)
             for i, m in zip(train_ids, mean) if i is not None}
    return by_id, {i: -s for i, s in scores.items()}


def _held_out_accuracy(store: Store, name: str, detector: str, margins: Sequence[float]
                       ) -> float | None:
    """The accuracy of the margins' own models on pairs they never trained on.

    preference_strength records its K × M models' mean (runs since issue 29; older runs: None);
    oof_margin has one out-of-fold model per pair, so its accuracy is the share above 0.
    """
    if detector == "oof_margin":
        return sum(m > 0 for m in margins) / len(margins) if margins else None
    value = store.latest_runs(name)[detector]["params"].get("held_out_accuracy")
    return None if value is None else float(value)


def strength_block(store: Store, name: str, train_ids: Sequence[int | None],
                   pool: Sequence[PreferencePair], detector: str, source: str
                   ) -> StrengthBlock | None:
    """The results' `strength` block for the pool, or None (detector without margins);
    `train_ids` as for `held_out_margins`."""
    margins = held_out_margins(store, name, detector, train_ids)
    if margins is None:
        return None
    ids = [p.example_id for p in pool if p.example_id is not None]
    mean = [margins[0].get(i, math.nan) for i in ids]
    keep = [k for k, m in enumerate(mean) if math.isfinite(m)]
    if not keep:
        return None
    strength = None if margins[1] is None else [margins[1].get(ids[k], math.nan) for k in keep]
    is_hh = any(k in f"{source} {name}".lower() for k in ("hh-rlhf", "harmless", "helpful"))
    kept = [mean[k] for k in keep]
    return {"detector": detector, "pairs": len(keep), "mean_margin": kept,
            "strength": strength, "share_negative": sum(m < 0 for m in kept) / len(keep),
            "reference": cast("StrengthReference", _HH_REFERENCE) if is_hh else None,
            "held_out_accuracy": _held_out_accuracy(store, name, detector, kept)}
