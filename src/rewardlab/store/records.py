"""The records the store takes and gives: typed, so every layer above reads named fields.

`DetectorResult` is what a detector run hands the store (defined here, below the detectors, so the
store depends on no detector); the TypedDicts are the rows the store's queries return.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = ["DetectorResult", "ThresholdKind"]

ThresholdKind = Literal["fixed", "percentile", "data"]


@dataclass
class DetectorResult:
    """Per-train-pair output of one detector run; arrays are aligned with the `train` it was given.

    `threshold_kind` says where `threshold` came from: "fixed" (a parameter), "percentile" (a
    percentile of this run's scores) or "data" (no numeric threshold: flags given by the data, e.g.
    an imported flagged_indices.json). `seconds` is filled in by `run_detector`.
    """

    detector: str
    scores: np.ndarray  # (N,) float, higher = more suspect
    flagged: np.ndarray  # (N,) bool
    reasons: list[str]  # (N,) "" where not flagged
    threshold: float | None
    threshold_kind: str
    params: dict[str, Any]
    seconds: float = 0.0

    def __post_init__(self) -> None:
        # Validate once here so the store and the report can trust the shapes.
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        self.flagged = np.asarray(self.flagged, dtype=bool).reshape(-1)
        self.reasons = list(self.reasons)
        n = len(self.scores)
        if len(self.flagged) != n or len(self.reasons) != n:
            raise ValueError(
                f"detector {self.detector!r}: {n} scores, {len(self.flagged)} flags and "
                f"{len(self.reasons)} reasons; they must have one entry per train pair"
            )

    @property
    def n_flagged(self) -> int:
        """How many train pairs this run flagged."""
        return int(self.flagged.sum())
