"""The one figure style, shared by the report's figures and the demo's teaching figures.

Figures are `matplotlib.figure.Figure`s built directly (no pyplot), so drawing never touches a GUI
backend. The rc settings apply only while a plot function runs (`styled`, a
`matplotlib.rc_context`): making a figure never changes the caller's `matplotlib.rcParams`.

>>> @styled(REPORT_RC)
... def plot_nothing(path: Path) -> Path:
...     return save(new_figure(4.0, 3.0), path)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast

import matplotlib
from matplotlib.figure import Figure

__all__ = [
    "DPI",
    "OKABE_ITO",
    "BLACK",
    "BLUE",
    "GREEN",
    "PINK",
    "ORANGE",
    "SKY",
    "VERMILION",
    "YELLOW",
    "GREY",
    "REPORT_RC",
    "TEACHING_RC",
    "styled",
    "new_figure",
    "save",
]

DPI = 120
# Okabe-Ito: distinguishable with the common colour-vision deficiencies and in greyscale print.
BLACK, BLUE, GREEN, PINK = "#000000", "#0072B2", "#009E73", "#CC79A7"
ORANGE, SKY, VERMILION, YELLOW = "#E69F00", "#56B4E9", "#D55E00", "#F0E442"
OKABE_ITO = [BLACK, BLUE, GREEN, PINK, ORANGE, SKY, VERMILION, YELLOW]
GREY = "#777777"  # annotations, "not significant"

_BASE_RC: dict[str, Any] = {"font.size": 11, "axes.labelsize": 11, "legend.fontsize": 10,
                            "axes.spines.top": False, "axes.spines.right": False}
# The report's titles are a size up and its tick labels a size down; the teaching figures keep
# matplotlib's tick size (medium = font.size).
REPORT_RC: dict[str, Any] = {**_BASE_RC, "axes.titlesize": 13, "xtick.labelsize": 10,
                             "ytick.labelsize": 10}
TEACHING_RC: dict[str, Any] = {**_BASE_RC, "axes.titlesize": 12}

P = ParamSpec("P")
R = TypeVar("R")


def styled(rc: dict[str, Any]) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: run the plot function under `rc`, leaving the caller's rcParams alone."""
    def decorate(plot: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(plot)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            # cast: matplotlib types the keys as a Literal of every rcParams name
            with matplotlib.rc_context(cast(Any, rc)):
                return plot(*args, **kwargs)
        return wrapper
    return decorate


def new_figure(width: float, height: float) -> Figure:
    """A figure of `width` × `height` inches at `DPI`, laid out by matplotlib's constrained layout."""
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save(fig: Figure, path: str | Path, **savefig: Any) -> Path:
    """Write `fig` as a PNG on white at `DPI` (creating the folder); extra savefig options pass on."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, facecolor="white", **savefig)
    return path
