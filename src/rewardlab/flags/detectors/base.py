"""The detector contract: one small class per detector, one result type.

A detector reads the TRAIN pairs (and the test pairs, for leakage) and returns, for every train
pair, a score (higher = more suspect), a flag and a human-readable reason. The store saves results
as they come, so a new detector needs no schema change. (The shape follows cleanlab's
`IssueManager`: `{name}_score`, `is_{name}_issue`.)

Detectors are dataclasses: their fields are the keyword parameters, each with a default, and
`Detector.params` records them with every run. A field with `metadata={"runtime": True}` (progress
bars, batch sizes) changes how a detector runs, not what it finds, and is left out of `params`.

    >>> from rewardlab.data.pairs import PreferencePair
    >>> from rewardlab.flags.detectors import get_detector
    >>> pairs = [PreferencePair(0, "train", "Hi", "Hello!", ""),
    ...          PreferencePair(1, "train", "Hi", "Hey", "Go away.")]
    >>> result = get_detector("empty_response").detect(pairs)
    >>> int(result.flagged.sum()), result.reasons
    (1, ['rejected reply is empty', ''])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from rewardlab.data.pairs import PreferencePair
from rewardlab.store.records import DetectorResult, ThresholdKind

__all__ = [
    "Detector",
    "PairRule",
    "DetectorResult",
    "ThresholdKind",
    "RUNTIME",
    "describe_pair",
    "normalize_text",
    "percentile_threshold",
    "reasons_where",
    "utf8_safe",
]

# Field metadata marking a parameter that does not change results (kept out of `params`).
RUNTIME: dict[str, Any] = {"runtime": True}




@dataclass
class Detector:
    """Base class: subclasses are `@dataclass`es that set `name` and implement `detect`."""

    name: ClassVar[str]
    kind: ClassVar[str] = "rule"  # "rule" | "model"
    description: ClassVar[str] = ""  # one line for listings

    def detect(self, train: Sequence[PreferencePair], *,
               test: Sequence[PreferencePair] = ()) -> DetectorResult:
        """Score every pair of `train`; `test` is only read by detectors that compare splits."""
        raise NotImplementedError

    @property
    def params(self) -> dict[str, Any]:
        """The parameters that shape the results (runtime-only fields left out)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if not f.metadata.get("runtime")}

    def result(self, scores: Any, flagged: Any, reasons: list[str], *,
               threshold: float | None, threshold_kind: ThresholdKind = "fixed") -> DetectorResult:
        """A `DetectorResult` carrying this detector's name and params."""
        return DetectorResult(detector=self.name, scores=scores, flagged=flagged, reasons=reasons,
                              threshold=threshold, threshold_kind=threshold_kind,
                              params=self.params)

    def binary_result(self, reasons: list[str]) -> DetectorResult:
        """For yes/no rules: a non-empty reason flags the pair (score 1) against a fixed 0.0."""
        flagged = np.fromiter((bool(r) for r in reasons), dtype=bool, count=len(reasons))
        return self.result(flagged.astype(np.float64), flagged, reasons, threshold=0.0)


@dataclass
class PairRule(Detector):
    """A yes/no rule that judges each pair on its own: `reason(pair)` is "" for a clean pair."""

    def reason(self, pair: PreferencePair) -> str:
        raise NotImplementedError

    def detect(self, train: Sequence[PreferencePair], *,
               test: Sequence[PreferencePair] = ()) -> DetectorResult:
        return self.binary_result([self.reason(p) for p in train])


def reasons_where(flagged: np.ndarray, make: Callable[[int], str]) -> list[str]:
    """`make(i)` for flagged rows and "" elsewhere, so reasons are only formatted where needed."""
    return [make(i) if f else "" for i, f in enumerate(flagged.tolist())]


def percentile_threshold(scores: np.ndarray, percentile: float,
                         floor: float) -> tuple[float, ThresholdKind]:
    """The `percentile`-th percentile of `scores`, but never below `floor`.

    The floor keeps a percentile rule from flagging the top 1% of perfectly ordinary data; the kind
    says which of the two decided (so the stored threshold is honest about its origin).
    """
    if scores.size == 0:
        return float(floor), "fixed"
    value = float(np.percentile(scores, percentile))
    return (value, "percentile") if value > floor else (float(floor), "fixed")


def normalize_text(text: str) -> str:
    """Case- and whitespace-insensitive form used for duplicate and leakage matching."""
    return " ".join(text.casefold().split())


def describe_pair(pair: PreferencePair) -> str:
    """"source index 17" plus the subset when there is one (indices repeat across subsets)."""
    where = f"source index {pair.source_index}"
    return f"{where} ({pair.subset})" if pair.subset else where


def utf8_safe(text: str) -> str:
    """`text` unchanged unless it holds lone surrogates (JSON "\\ud800" decodes to one), which
    tokenizers reject; those become U+FFFD so one odd row cannot stop a whole run."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text
