"""The one JSON sanitizer: results.json, rewardlab.json, the store's JSON columns and `--json` all
pass their values through `to_jsonable`.

It sits below every stage so each can use it, and imports no numpy: numpy scalars and arrays are
recognised by their `tolist`. Formatting (indent, ASCII escapes, `allow_nan`) stays with each writer.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["to_jsonable"]


def to_jsonable(obj: Any) -> Any:
    """A copy of `obj` made of plain JSON values, key order kept.

    Dataclasses become dicts, numpy scalars and arrays Python numbers and lists, tuples and sets
    lists, keys strings; NaN and ±inf become None (strict JSON and PostgreSQL's json reject them);
    any other object (a Path, a datetime) becomes its `str`.

    >>> import numpy as np
    >>> to_jsonable({"a": np.float32(0.5), "b": [float("nan")], "c": (1, 2)})
    {'a': 0.5, 'b': [None], 'c': [1, 2]}
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return to_jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)
