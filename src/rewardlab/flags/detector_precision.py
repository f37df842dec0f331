"""How often each detector is right, by its reviewers' verdicts: precision with a Wilson 95% CI,
overall and by detector-score bucket (where should the threshold be?).

Several reviewers may judge one flag; their verdicts are reduced to one by `consensus` (majority of
tp vs fp; needs_review abstains; a tie stays undecided). Precision = tp / (tp + fp) over the decided
flags of the detector's latest run.

    >>> stats = precision_stats(store, "hh")                            # doctest: +SKIP
    >>> stats["length_ratio"]["precision"], stats["length_ratio"]["ci"]  # doctest: +SKIP
    (0.8, [0.49, 0.94])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, TypedDict

from rewardlab.evaluation.metrics import wilson_interval
from rewardlab.store.records import ReviewOutcome
from rewardlab.store.store import Store

__all__ = ["Consensus", "ScoreBucket", "DetectorPrecision", "DEFAULT_BUCKETS", "consensus",
           "score_buckets", "precision_stats"]

Consensus = Literal["tp", "fp", "undecided"]
DEFAULT_BUCKETS = 5


class ScoreBucket(TypedDict):
    """Decided flags whose score lies in [lo, hi]."""

    lo: float
    hi: float
    reviewed: int
    tp: int
    precision: float
    ci: list[float]  # [lo, hi], Wilson 95%


class DetectorPrecision(TypedDict):
    """`precision_stats` value for one detector (its latest run)."""

    detector: str
    flagged: int  # flags of the latest run
    reviewed: int  # flags with a decided consensus (tp + fp)
    tp: int
    fp: int
    undecided: int  # reviewed, but only needs_review or a tp/fp tie
    disagreements: int  # reviewers gave different verdicts (decided or not)
    reviewers: list[str]
    precision: float | None  # tp / reviewed; None before any decided review
    ci: list[float] | None  # Wilson 95%
    buckets: list[ScoreBucket]  # by score, lowest first; flags without a score left out


def consensus(verdicts: Mapping[str, str]) -> Consensus:
    """One verdict from several reviewers': the majority of tp vs fp; needs_review abstains.

    >>> consensus({"ann": "tp", "bob": "fp", "cy": "tp"}), consensus({"ann": "needs_review"})
    ('tp', 'undecided')
    """
    tp = sum(v == "tp" for v in verdicts.values())
    fp = sum(v == "fp" for v in verdicts.values())
    return "tp" if tp > fp else "fp" if fp > tp else "undecided"


def score_buckets(scored: Sequence[tuple[float, bool]], *,
                  buckets: int = DEFAULT_BUCKETS) -> list[ScoreBucket]:
    """(score, is_tp) of decided flags → up to `buckets` buckets of about equal size, by score.

    Equal scores always share a bucket, so a yes/no rule (every score 1.0) gets one bucket.

    >>> [(b["lo"], b["reviewed"], b["tp"]) for b in score_buckets(
    ...     [(0.1, False), (0.2, False), (0.8, True), (0.9, True)], buckets=2)]
    [(0.1, 2, 0), (0.8, 2, 2)]
    """
    ordered = sorted(scored)
    out: list[ScoreBucket] = []
    start = 0
    for k in range(1, buckets + 1):
        end = round(k * len(ordered) / buckets)
        while 0 < end < len(ordered) and ordered[end][0] == ordered[end - 1][0]:
            end += 1  # keep a run of equal scores together
        if end <= start:
            continue
        chunk = ordered[start:end]
        tp = sum(is_tp for _, is_tp in chunk)
        out.append({"lo": chunk[0][0], "hi": chunk[-1][0], "reviewed": len(chunk), "tp": tp,
                    "precision": tp / len(chunk), "ci": list(wilson_interval(tp, len(chunk)))})
        start = end
    return out


def _detector_precision(detector: str, flagged: int, outcomes: Sequence[ReviewOutcome],
                        buckets: int) -> DetectorPrecision:
    decided = [(o, consensus(o["verdicts"])) for o in outcomes]
    tp = sum(c == "tp" for _, c in decided)
    fp = sum(c == "fp" for _, c in decided)
    reviewed = tp + fp
    scored = [(float(o["score"]), c == "tp") for o, c in decided
              if c != "undecided" and o["score"] is not None]
    return {
        "detector": detector, "flagged": flagged, "reviewed": reviewed, "tp": tp, "fp": fp,
        "undecided": len(decided) - reviewed,
        "disagreements": sum(len(set(o["verdicts"].values())) > 1 for o in outcomes),
        "reviewers": sorted({r for o in outcomes for r in o["verdicts"]}),
        "precision": tp / reviewed if reviewed else None,
        "ci": list(wilson_interval(tp, reviewed)) if reviewed else None,
        "buckets": score_buckets(scored, buckets=buckets),
    }


def precision_stats(store: Store, name: str, *,
                    buckets: int = DEFAULT_BUCKETS) -> dict[str, DetectorPrecision]:
    """detector -> its reviewed precision on dataset `name`, for every detector that ran."""
    runs = store.latest_runs(name)
    by_detector: dict[str, list[ReviewOutcome]] = {d: [] for d in runs}
    for outcome in store.review_outcomes(name):
        by_detector[outcome["detector"]].append(outcome)
    return {d: _detector_precision(d, runs[d]["flagged"], by_detector[d], buckets) for d in runs}
