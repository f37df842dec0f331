"""Detector registry: name -> class, the default rule set, and helpers to build and run detectors.

    >>> from rewardlab.flags.detectors import get_detector, run_detector
    >>> detector = get_detector("length_ratio", percentile=95)
    >>> result = run_detector(detector, train, test)                    # doctest: +SKIP
    >>> result.n_flagged, result.threshold_kind                         # doctest: +SKIP
    (52, 'percentile')
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from rewardlab.data.pairs import PreferencePair
from rewardlab.errors import SelectionError
from rewardlab.flags.detectors.base import Detector, DetectorResult
from rewardlab.flags.detectors.embedding import NearDuplicateResponses
from rewardlab.flags.detectors.length import LengthRatio, OverLength
from rewardlab.flags.detectors.rules import (
    ConflictingDuplicate,
    DivergingContext,
    DuplicatePair,
    EmptyResponse,
    IdenticalResponses,
    TestLeakage,
)
from rewardlab.flags.detectors.text_rules import ReadabilityMismatch, RefusalBias, Repetition, UnsafePrompt

__all__ = [
    "DETECTORS",
    "RULE_DETECTORS",
    "Detector",
    "DetectorResult",
    "get_detector",
    "run_detector",
]

DETECTORS: dict[str, type[Detector]] = {cls.name: cls for cls in (
    EmptyResponse,
    IdenticalResponses,
    NearDuplicateResponses,
    DivergingContext,
    DuplicatePair,
    ConflictingDuplicate,
    TestLeakage,
    Repetition,
    LengthRatio,
    ReadabilityMismatch,
    RefusalBias,
    UnsafePrompt,
    OverLength,
)}

# The default set for `rewardlab flag`: every detector that needs no reward-model training.
RULE_DETECTORS: tuple[str, ...] = tuple(DETECTORS)

# ---- Model-based detectors (detectors/model_based.py) ------------------------------------------
# They train reward models, so they are registered in DETECTORS but stay OUT of RULE_DETECTORS;
# hence the import after RULE_DETECTORS is fixed.
from rewardlab.flags.detectors.model_based import EnsembleStrength, OofMargin  # noqa: E402

DETECTORS.update({cls.name: cls for cls in (OofMargin, EnsembleStrength)})
# -------------------------------------------------------------------------------------------------


def get_detector(name: str, **params: Any) -> Detector:
    """Build detector `name` with keyword `params`; strings are converted to the field's type.

    Raises SelectionError for an unknown detector or parameter, or a value of the wrong type.

    >>> get_detector("over_length", max_length="512").max_length
    512
    """
    cls = DETECTORS.get(name)
    if cls is None:
        raise SelectionError(f"unknown detector {name!r}; detectors: {', '.join(DETECTORS)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - set(fields))
    if unknown:
        known = ", ".join(fields) or "(none)"
        raise SelectionError(f"detector {name!r} has no parameter {unknown[0]!r}; "
                             f"parameters: {known}")
    values = {key: _coerce(name, fields[key], value) for key, value in params.items()}
    return cls(**values)


def _coerce(detector: str, field: dataclasses.Field[Any], value: Any) -> Any:
    """Convert a CLI string to the type of the field's default (int, float, bool, str)."""
    default = field.default
    if not isinstance(value, str) or isinstance(default, str) or default is dataclasses.MISSING:
        return value
    try:
        if isinstance(default, bool):
            if value.lower() not in {"true", "false", "1", "0", "yes", "no"}:
                raise ValueError(value)
            return value.lower() in {"true", "1", "yes"}
        return type(default)(value)
    except ValueError:
        raise SelectionError(f"detector {detector!r}: parameter {field.name!r} expects "
                             f"{type(default).__name__}, got {value!r}") from None


def run_detector(detector: Detector, train: Sequence[PreferencePair],
                 test: Sequence[PreferencePair] = ()) -> DetectorResult:
    """`detector.detect(train, test=test)` with its wall-clock time recorded in `seconds`."""
    start = time.perf_counter()
    result = detector.detect(train, test=test)
    result.seconds = time.perf_counter() - start
    return result
