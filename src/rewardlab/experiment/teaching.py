"""Teaching figures for `rewardlab demo`: what the Bradley-Terry loss does, whether the reward
recovers the true quality, how well each detector finds the flips we injected, and what each way
of handling ties does with them (`experiment.ties_lesson`).

Drawn in the shared style of `rewardlab.report.style`: no pyplot, and matplotlib's global rcParams
are left as they were.

>>> detector_quality(np.array([True, True, False]), np.array([True, False, False]))["precision"]
0.5
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from rewardlab.evaluation.metrics import sigmoid
from rewardlab.report.style import (
    BLUE,
    GREEN,
    GREY,
    ORANGE,
    TEACHING_RC,
    VERMILION,
    new_figure,
    save,
    styled,
)

if TYPE_CHECKING:
    from rewardlab.report.results import DetectorQuality

__all__ = ["plot_bt_curves", "plot_quality_vs_reward", "plot_detector_quality", "plot_ties",
           "detector_quality"]


def _new_figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, Any]:
    fig = new_figure(width, height)
    return fig, fig.subplots(1, ncols)


@styled(TEACHING_RC)
def plot_bt_curves(path: str | Path) -> Path:
    """Two panels over the margin d = r(chosen) − r(rejected): P(chosen ≻ rejected) = σ(d), and the
    Bradley-Terry loss −log σ(d) that training minimises."""
    d = np.linspace(-6.0, 6.0, 401)  # (401,)
    prob = sigmoid(d)  # σ(d)
    loss = np.logaddexp(0.0, -d)  # −log σ(d), computed without overflow
    fig, (ax_p, ax_l) = _new_figure(11.0, 4.3, ncols=2)

    ax_p.plot(d, prob, color=BLUE, lw=2.5)
    ax_p.axhline(0.5, color=GREY, ls=":", lw=1)
    ax_p.axvline(0.0, color=GREY, ls=":", lw=1)
    ax_p.annotate("d = 2 → the model is 88% sure\nthe chosen reply is better", xy=(2, 0.881),
                  xytext=(-5.6, 0.80), arrowprops={"arrowstyle": "->", "color": GREY})
    ax_p.annotate("d = 0: a coin flip", xy=(0, 0.5), xytext=(0.6, 0.3),
                  arrowprops={"arrowstyle": "->", "color": GREY})
    ax_p.set(title="Bradley-Terry: P(chosen ≻ rejected) = σ(d)", ylim=(-0.02, 1.02),
             xlabel="margin d = reward(chosen) − reward(rejected)", ylabel="probability")

    ax_l.plot(d, loss, color=ORANGE, lw=2.5)
    ax_l.axvline(0.0, color=GREY, ls=":", lw=1)
    ax_l.annotate("wrong order (d < 0): big loss,\nstrong push to fix it", xy=(-3, loss[100]),
                  xytext=(0.4, 4.6), arrowprops={"arrowstyle": "->", "color": GREY})
    ax_l.annotate("right order, confident:\nloss → 0, little left to learn", xy=(4.5, loss[375]),
                  xytext=(2.0, 2.4), arrowprops={"arrowstyle": "->", "color": GREY})
    ax_l.annotate(f"d = 0: loss = log 2 ≈ {np.log(2):.2f}", xy=(0, np.log(2)), xytext=(-5.6, 0.5),
                  arrowprops={"arrowstyle": "->", "color": GREY})
    ax_l.set(title="Training loss per pair: −log σ(d)", xlabel="margin d", ylabel="loss")
    fig.suptitle("A flipped label turns a confident right answer into a big loss: "
                 "noise pulls the model the wrong way", fontsize=11)
    return save(fig, path)


@styled(TEACHING_RC)
def plot_quality_vs_reward(true_quality: np.ndarray, rewards: np.ndarray,
                           path: str | Path) -> float:
    """Scatter of each response's hidden true quality against the model's reward, with a least
    squares line; returns Pearson r (also in the title). r near 1 = the reward recovered quality."""
    q = np.asarray(true_quality, dtype=float).reshape(-1)  # (M,)
    r = np.asarray(rewards, dtype=float).reshape(-1)  # (M,)
    if q.shape != r.shape:
        raise ValueError(f"{q.size} qualities but {r.size} rewards; need one per response")
    corr = float(np.corrcoef(q, r)[0, 1]) if q.size > 1 and q.std() > 0 and r.std() > 0 else 0.0
    fig, ax = _new_figure(6.4, 5.0)
    ax.scatter(q, r, s=10, alpha=0.35, color=BLUE, edgecolors="none",
               label=f"{q.size:,} test responses")
    if q.size > 1 and q.std() > 0:
        slope, intercept = np.polyfit(q, r, 1)
        xs = np.array([q.min(), q.max()])
        ax.plot(xs, slope * xs + intercept, color=ORANGE, lw=2, label="least-squares line")
    ax.set(title=f"Does the reward recover the hidden quality?  Pearson r = {corr:.3f}",
           xlabel="true quality (hidden from the model)", ylabel="predicted reward")
    ax.legend(loc="upper left", frameon=False)
    ax.text(0.99, 0.02, "The model only ever saw which reply was preferred,\n"
            "never the quality numbers; reward scale is arbitrary.", transform=ax.transAxes,
            ha="right", va="bottom", fontsize=9, color=GREY)
    save(fig, path)
    return corr


def detector_quality(flagged: np.ndarray, truth: np.ndarray) -> DetectorQuality:
    """Precision, recall and F1 of `flagged` against the true issues (e.g. injected flips).

    Both are (N,) bool arrays aligned on the same pairs. Precision is 0.0 when nothing is flagged.
    """
    flagged = np.asarray(flagged, dtype=bool).reshape(-1)
    truth = np.asarray(truth, dtype=bool).reshape(-1)
    if flagged.shape != truth.shape:
        raise ValueError(f"{flagged.size} flags but {truth.size} truth labels")
    hits = int((flagged & truth).sum())
    n_flagged, n_true = int(flagged.sum()), int(truth.sum())
    precision = hits / n_flagged if n_flagged else 0.0
    recall = hits / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "flagged": n_flagged,
            "true_issues": n_true, "hits": hits}


@styled(TEACHING_RC)
def plot_detector_quality(detector_quality: Mapping[str, Mapping[str, Any]],
                          path: str | Path) -> Path:
    """Grouped precision / recall bars per detector, scored against the injected flips."""
    names = list(detector_quality)
    x = np.arange(len(names))  # (D,)
    width = 0.38
    fig, ax = _new_figure(max(5.5, 1.9 * len(names) + 2.5), 4.6)
    for offset, key, color in ((-width / 2, "precision", BLUE), (width / 2, "recall", GREEN)):
        values = [float(detector_quality[n].get(key, 0.0)) for n in names]
        bars = ax.bar(x + offset, values, width, color=color, label=key)
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], padding=2, fontsize=10)
    ax.set_xticks(x, [_tick(n, detector_quality[n]) for n in names])
    ax.set(ylim=(0, 1.3), ylabel="fraction",
           title="How well each detector finds the flipped labels")
    ax.set_yticks(np.linspace(0.0, 1.0, 6))  # the headroom above 1 is for the legend only
    ax.legend(loc="upper center", ncols=2, frameon=False)
    # the definitions sit where an x label would: right under the detector names
    ax.set_xlabel("precision = flagged pairs that really were flipped;  "
                  "recall = flipped pairs that got flagged", fontsize=9, color=GREY)
    return save(fig, path)


def _tick(name: str, quality: Mapping[str, Any]) -> str:
    flagged, true = quality.get("flagged"), quality.get("true_issues")
    if flagged is None or true is None:
        return name
    return f"{name}\n{flagged:,} flagged / {true:,} flipped"


def _binned_means(x: np.ndarray, y: np.ndarray, edges: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(bin centres, mean y per bin) over the bins of `edges` that hold any x."""
    which = np.digitize(x, edges) - 1  # (Q,) bin of each x
    keep = [b for b in range(len(edges) - 1) if (which == b).any()]
    centres = np.array([(edges[b] + edges[b + 1]) / 2 for b in keep])
    return centres, np.array([y[which == b].mean() for b in keep])


@styled(TEACHING_RC)
def plot_ties(gap: np.ndarray, tied: np.ndarray, p_better: Mapping[str, np.ndarray],
              p_tie: np.ndarray, lesson: Mapping[str, Any], path: str | Path) -> Path:
    """The ties lesson in two panels over the true quality gap of each test pair (Q pairs,
    oriented so the first reply is the better one): left, the tie model's P(tie) against the
    observed tie share, with the true and the implied band; right, P(better reply wins) under
    BT with ties dropped and with soft ½ targets, which must name a winner even for a tie."""
    true_band = float(lesson["true_band"])
    # out to four bands: beyond that every model is sure there is a winner, and says so
    top = min(float(np.quantile(gap, 0.97)), 4 * true_band)
    edges = np.linspace(0.0, top, 25)  # (25,) 24 bins, six of them inside the band
    fig, (ax_t, ax_w) = _new_figure(12.0, 4.8, ncols=2)
    for ax in (ax_t, ax_w):
        ax.axvline(true_band, color="black", lw=1.5,
                   label=f"true band {true_band:.2f} (closer pairs are ties)")
        ax.set(xlim=(0.0, top), ylim=(-0.02, 1.02),
               xlabel="true quality gap between the two replies (hidden from the models)")
    _tie_model_panel(ax_t, gap, tied, p_tie, p_better["model"], edges, lesson)
    _winner_panel(ax_w, gap, tied, p_better, edges, true_band)
    fig.suptitle(f"How would you handle ties? {lesson['spec']}: {lesson['test_pairs']:,} test "
                 "pairs, one seed", fontsize=11)
    return save(fig, path)


def _tie_model_panel(ax: Any, gap: np.ndarray, tied: np.ndarray, p_tie: np.ndarray,
                     p_win: np.ndarray, edges: np.ndarray, lesson: Mapping[str, Any]) -> None:
    """Binned P(tie) and P(better wins) of the tie model over the observed tie share."""
    centres, observed = _binned_means(gap, tied.astype(float), edges)
    ax.bar(centres, observed, width=edges[1] - edges[0], color=GREY, alpha=0.3,
           label="observed tie share")
    ax.plot(*_binned_means(gap, p_tie, edges), color=ORANGE, lw=2.5, marker="o", ms=4,
            label=f"P(tie): mean {float(lesson['predicted_tie_share']):.2f} "
                  f"({float(lesson['observed_tie_share']):.2f} observed)")
    ax.plot(*_binned_means(gap, p_win, edges), color=ORANGE, lw=1.5, ls=":",
            label="P(better reply wins)")
    implied = lesson.get("implied_band")
    if implied is not None:  # None: the reward did not rise with quality, no band to draw
        ax.axvline(float(implied), color=VERMILION, lw=1.5, ls="--",
                   label=f"tie model's band {float(implied):.2f}")
    ax.set(title=f"Davidson tie model (ν = {float(lesson['tie_parameter']):.2f}) "
                 "can answer \"tie\"", ylabel="probability")
    ax.legend(loc="center right", frameon=False, fontsize=9)


def _winner_panel(ax: Any, gap: np.ndarray, tied: np.ndarray,
                  p_better: Mapping[str, np.ndarray], edges: np.ndarray, true_band: float) -> None:
    """Binned P(better wins) of BT with ties dropped and with soft ½ targets; ties shaded."""
    ax.axvspan(0.0, true_band, color=GREY, alpha=0.12, lw=0)
    for name, color, label in (("drop", BLUE, "plain BT, ties dropped"),
                               ("soft", GREEN, "BT, ties as ½ targets")):
        ax.plot(*_binned_means(gap, p_better[name], edges), color=color, lw=2.5, marker="o",
                ms=4, label=f"{label}: mean {float(p_better[name][tied].mean()):.2f} on tied pairs")
    ax.axhline(0.5, color=GREY, ls=":", lw=1.5)
    ax.text(edges[-1], 0.47, "0.5 = no preference: the most plain BT can say about a tie",
            ha="right", va="top", fontsize=9, color=GREY)
    ax.set(title="Plain BT has no tie outcome: it must name a winner",
           ylabel="P(better reply wins) = σ(reward gap)")
    ax.legend(loc="lower right", frameon=False, fontsize=9)
