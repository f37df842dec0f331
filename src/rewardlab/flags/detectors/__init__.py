"""Detector registry: name -> class, the default rule set, and helpers to build and run detectors.

    >>> from rewardlab.data.sources import read_source
    >>> from rewardlab.flags.detectors import get_detector, run_detector
    >>> pairs = read_source("hh-rlhf-sample").pairs
    >>> train, test = [p for p in pairs if p.split == "train"], [p for p in pairs if p.split == "test"]
    >>> detector = get_detector("length_ratio", percentile=95)
    >>> result = run_detector(detector, train, test)
    >>> result.n_flagged, result.threshold_kind
    (52, 'percentile')
"""

from __future__ import annotations

import dataclasses
import time
import typing
from collections.abc import Sequence
from typing import Any

from rewardlab.data.pairs import PreferencePair
from rewardlab.errors import SelectionError
from rewardlab.flags.detectors.base import Detector, DetectorResult
from rewardlab.flags.detectors.embedding import NearDuplicateResponses
from rewardlab.flags.detectors.length import LengthRatio, OverLength
from rewardlab.flags.detectors.rating_conflict import RatingConflict
from rewardlab.flags.detectors.rules import (
    ConflictingDuplicate,
    DivergingContext,
    DuplicatePair,
    EmptyResponse,
    IdenticalResponses,
    TestLeakage,
)
from rewardlab.flags.detectors.text_rules import ReadabilityMismatch, RefusalBias, Repetition, UnsafePrompt
from rewardlab.training.train_config import TrainConfig

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
    RatingConflict,
    TestLeakage,
    Repetition,
    LengthRatio,
    ReadabilityMismatch,
    RefusalBias,
    UnsafePrompt,
    OverLength,
)}

# The default set for `rewardlab flag`: every detector that needs no reward-model training. It
# holds the default meaning of "clean" (flags/selection.py CLEAN_DETECTORS, kept there so the CLI
# can print it without importing every detector), so one `rewardlab flag NAME` is all that
# `train --select clean` needs.
RULE_DETECTORS: tuple[str, ...] = tuple(DETECTORS)

# ---- Model-based detectors (detectors/model_based.py) ------------------------------------------
# They train reward models, so they are registered in DETECTORS but stay OUT of RULE_DETECTORS;
# hence the import after RULE_DETECTORS is fixed.
from rewardlab.flags.detectors.judge import LlmJudge  # noqa: E402
from rewardlab.flags.detectors.model_based import (  # noqa: E402
    EnsembleStrength,
    OofMargin,
    detector_train_config,
)
from rewardlab.flags.detectors.strength import PreferenceStrength  # noqa: E402

# llm_judge calls an LLM endpoint rather than training, but is no rule either: it costs tokens.
DETECTORS.update({cls.name: cls for cls in (OofMargin, EnsembleStrength, PreferenceStrength,
                                            LlmJudge)})
# -------------------------------------------------------------------------------------------------


def get_detector(name: str, **params: Any) -> Detector:
    """Build detector `name` with keyword `params`; strings are converted to the field's type.

    Parameters
    ----------
    name : str
        A key of `DETECTORS`: a rule detector (`RULE_DETECTORS`, e.g. "length_ratio") or a
        model-based one ("oof_margin", "ensemble_strength", "preference_strength", "llm_judge", …).
    **params : Any
        The detector's own fields by name (its dataclass fields, each with a default), as values or
        as strings (the CLI's `--param det.key=value`), converted to the field's type. A
        model-based detector also takes the fields of its `train` TrainConfig this way:
        `get_detector("oof_margin", folds=3, epochs=2)` trains every fold's model for 2 epochs.

    Returns
    -------
    Detector
        Ready to `detect(train, test=...)` (or `run_detector`).

    Raises SelectionError for an unknown detector or parameter, or a value of the wrong type.

    >>> get_detector("over_length", max_length="512").max_length
    512
    >>> get_detector("length_ratio", percentile="97.5").percentile
    97.5
    """
    cls = DETECTORS.get(name)
    if cls is None:
        raise SelectionError(f"unknown detector {name!r}; detectors: {', '.join(DETECTORS)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    train_kinds = _train_kinds() if "train" in fields else {}
    unknown = sorted(set(params) - set(fields) - set(train_kinds))
    if unknown:
        known = ", ".join([*fields, *train_kinds]) or "(none)"
        raise SelectionError(f"detector {name!r} has no parameter {unknown[0]!r}; "
                             f"parameters: {known}")
    values = {key: _coerce(name, key, _kind(cls, fields[key]), value)
              for key, value in params.items() if key in fields}
    train = {key: _coerce(name, key, train_kinds[key], value)
             for key, value in params.items() if key not in fields}
    if train:  # TrainConfig fields one by one, over the model detectors' training defaults
        values["train"] = dataclasses.replace(values.get("train") or detector_train_config(), **train)
    return cls(**values)


def _kind(cls: type[Detector], f: dataclasses.Field[Any]) -> type | None:
    """The type a string parameter converts to: that of the field's default (None: no default);
    for a default of None, the annotation's (`float | None` → float)."""
    if f.default is dataclasses.MISSING:
        return None
    if f.default is not None:
        return type(f.default)
    try:
        hint = typing.get_type_hints(cls)[f.name]
    except (NameError, KeyError):  # an annotation only importable under TYPE_CHECKING
        return None
    args = [t for t in typing.get_args(hint) if t is not type(None)]
    return args[0] if len(args) == 1 and isinstance(args[0], type) else None


def _train_kinds() -> dict[str, type]:
    """TrainConfig field -> the type a string parameter converts to (`float | None` → float)."""
    kinds = {}
    for name, hint in typing.get_type_hints(TrainConfig).items():
        args = [t for t in typing.get_args(hint) if t is not type(None)]
        kinds[name] = args[0] if args else hint
    return kinds


def _coerce(detector: str, key: str, kind: type | None, value: Any) -> Any:
    """Convert a CLI string to `kind` (int, float, bool); strings for str fields pass unchanged."""
    if not isinstance(value, str) or kind is None or kind is str:
        return value
    try:
        if kind is bool:
            if value.lower() not in {"true", "false", "1", "0", "yes", "no"}:
                raise ValueError(value)
            return value.lower() in {"true", "1", "yes"}
        return kind(value)
    except ValueError:
        raise SelectionError(f"detector {detector!r}: parameter {key!r} expects "
                             f"{kind.__name__}, got {value!r}") from None


def run_detector(detector: Detector, train: Sequence[PreferencePair],
                 test: Sequence[PreferencePair] = ()) -> DetectorResult:
    """`detector.detect(train, test=test)` with its wall-clock time recorded in `seconds`."""
    start = time.perf_counter()
    result = detector.detect(train, test=test)
    result.seconds = time.perf_counter() - start
    return result
