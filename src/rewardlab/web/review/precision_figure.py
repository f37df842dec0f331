"""The precision page's figure: reviewed precision by detector-score bucket, one panel per detector.

Where precision drops as the score falls is where a threshold belongs. Drawn with the report's
style (`report/style.py`), returned as PNG bytes for the app to serve.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

from rewardlab.report.style import BLUE, DPI, GREY, REPORT_RC, new_figure, styled

__all__ = ["plot_precision_by_score"]


def _label(lo: float, hi: float) -> str:
    return f"{lo:.3g}" if lo == hi else f"{lo:.3g}–{hi:.3g}"


def _panel(ax: Any, stats: dict[str, Any]) -> None:
    buckets = stats["buckets"]
    x = list(range(len(buckets)))
    y = [b["precision"] for b in buckets]
    low = [b["precision"] - b["ci"][0] for b in buckets]
    high = [b["ci"][1] - b["precision"] for b in buckets]
    ax.errorbar(x, y, yerr=[low, high], fmt="o-", color=BLUE, ecolor=GREY, capsize=4, lw=1.5)
    for xi, b in zip(x, buckets):
        ax.annotate(f"{b['tp']}/{b['reviewed']}", (xi, b["ci"][1]), textcoords="offset points",
                    xytext=(0, 4), ha="center", fontsize=8, color=GREY)
    if stats["precision"] is not None:
        ax.axhline(stats["precision"], color=GREY, lw=0.8, ls="--")
    ax.set_xticks(x, [_label(b["lo"], b["hi"]) for b in buckets], rotation=30, ha="right")
    ax.set_ylim(0, 1.12)
    ax.set_title(f"{stats['detector']}: {stats['tp']} TP of {stats['reviewed']} reviewed")
    ax.set_xlabel("detector score (bucket)")


@styled(REPORT_RC)
def plot_precision_by_score(detectors: Sequence[dict[str, Any]]) -> bytes | None:
    """PNG of precision (Wilson 95% CI bars) per score bucket for every detector with decided
    reviews; None when no detector has any."""
    shown = [d for d in detectors if d["buckets"]]
    if not shown:
        return None
    cols = min(3, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig = new_figure(4.2 * cols, 3.3 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, stats in zip(axes.flat, shown):
        _panel(ax, stats)
    for ax in list(axes.flat)[len(shown):]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel("precision (reviewed)")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    return buffer.getvalue()
