"""What the pages and the JSON API show, built from the store: cards, dataset rows, precision.

Plain dicts of plain values, so a page renders them (Jinja2, autoescaped) and the API returns them
as they are.
"""

from __future__ import annotations

import re
from typing import Any

from rewardlab.flags.detector_precision import DetectorPrecision, precision_stats
from rewardlab.flags.detectors import DETECTORS
from rewardlab.store.records import QueueItem, QueuePage
from rewardlab.store.store import Store

__all__ = ["VERDICT_LABELS", "KIND_LABELS", "Card", "detector_kind", "margin_of", "card", "flags_page",
           "dataset_views", "detector_stats"]

VERDICT_LABELS = {"tp": "True positive", "fp": "False positive", "needs_review": "Needs review"}
# "imported" alone read like a detector's name; the flags of `rewardlab flags import` are a list
# someone made, not a detector rewardlab ran, and the pages say so
KIND_LABELS = {"rule": "rule", "model": "model", "imported": "imported flags"}
# The model-based detectors write the margin into their reason ("…, margin -1.23; …").
_MARGIN = re.compile(r"\bmargin ([+-]?\d+(?:\.\d+)?)")


class Card(QueueItem):
    """A queue item as a card: the flag plus how to show it."""

    kind: str  # rule | model | imported
    margin: float | None  # reward margin chosen − rejected, model-based detectors only


def detector_kind(name: str) -> str:
    """"rule" or "model" for a built-in detector, "imported" for a flags file stored under a label."""
    cls = DETECTORS.get(name)
    return cls.kind if cls is not None else "imported"


def margin_of(detector: str, reason: str) -> float | None:
    """The reward margin a model-based detector saw (from its reason), else None.

    >>> margin_of("oof_margin", "… P(chosen better) = 0.27, margin -1.00; estimated flip rate 3%")
    -1.0
    """
    if detector_kind(detector) != "model":
        return None
    found = _MARGIN.search(reason)
    return float(found.group(1)) if found else None


def card(item: QueueItem) -> Card:
    """The card for one queue item."""
    return {**item, "kind": detector_kind(item["detector"]),
            "margin": margin_of(item["detector"], item["reason"])}


def flags_page(store: Store, name: str, **query: Any) -> dict[str, Any]:
    """`Store.review_queue(name, **query)` with its items as cards."""
    page: QueuePage = store.review_queue(name, **query)
    return {**page, "dataset": name, "items": [card(item) for item in page["items"]]}


def detector_stats(store: Store, name: str) -> list[dict[str, Any]]:
    """Per detector: its kind and `precision_stats`, sorted by name."""
    stats: dict[str, DetectorPrecision] = precision_stats(store, name)
    return [{**s, "kind": detector_kind(d)} for d, s in sorted(stats.items())]


def dataset_views(store: Store) -> list[dict[str, Any]]:
    """Every dataset: pairs per split, flagged pairs, and per detector flagged/reviewed/precision."""
    return [{**summary, "detector_stats": detector_stats(store, summary["name"])}
            for summary in store.dataset_summaries()]
