"""The report's PNG figures, each drawn from the results dict (schema: docs/architecture.md).

Drawn in the shared style of `rewardlab.report.style` (no pyplot; rc settings only inside each plot
call). One Okabe-Ito colour per condition, the same in every figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from rewardlab.evaluation.crossed import format_p, interval_of
from rewardlab.evaluation.dose_stats import TREATED
from rewardlab.evaluation.learning import BARELY_TRAINED_NATS, LN2, stronger_length_baseline
from rewardlab.report.style import (
    BLACK,
    BLUE,
    DPI,
    GREEN,
    GREY,
    OKABE_ITO,
    ORANGE,
    PINK,
    REPORT_RC,
    VERMILION,
    new_figure,
    save,
    styled,
)

if TYPE_CHECKING:
    from rewardlab.report.results import (
        ArmBlock,
        Comparison,
        ConditionBlock,
        DoseResponse,
        ResultsDocument,
        RunRecord,
        RunSummary,
        StrengthBlock,
    )

__all__ = [
    "condition_color",
    "make_figures",
    "plot_accuracy",
    "plot_comparisons",
    "plot_ablation",
    "plot_dose_response",
    "plot_strength",
    "plot_margins",
    "plot_training_curves",
    "plot_reliability",
    "plot_flags",
    "plot_table",
]

_FIXED = {"unfiltered": BLACK, "clean-remove": BLUE, "clean-flip": GREEN, "clean-soft": PINK,
          "aa": GREY,
          "random": ORANGE}
_SIGNIFICANT_UP, _SIGNIFICANT_DOWN, _NOT_SIGNIFICANT = BLUE, VERMILION, GREY


def condition_color(name: str, index: int = 0) -> str:
    """Fixed colours for the standard conditions, Okabe-Ito order for anything else."""
    return _FIXED.get(name, OKABE_ITO[(index + 5) % len(OKABE_ITO)])


def _label(name: str, cond: ConditionBlock) -> str:
    pairs = cond.get("summary", {}).get("train_pairs")
    return f"{name}\n{pairs:,} train pairs" if pairs is not None else name


def _seed_accuracies(block: ConditionBlock | ArmBlock) -> list[float]:
    return [r["test"]["accuracy"] for r in block.get("runs", []) if r["test"]["accuracy"]
            is not None]


@styled(REPORT_RC)
def plot_accuracy(results: ResultsDocument, path: Path) -> Path:
    """Mean test accuracy per condition with its 95% CI, every seed as a dot, length baseline."""
    conds = results["conditions"]
    fig = new_figure(max(8.0, 1.6 * len(conds) + 2), 5.0)
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)  # jitter only, so reruns draw the same picture
    ci_kind = "t over seeds"
    for i, (name, cond) in enumerate(conds.items()):
        s, color = cond["summary"], condition_color(name, i)
        ci_kind = s.get("accuracy_ci_kind", ci_kind)
        accs = np.array(_seed_accuracies(cond)) * 100
        ax.scatter(i + rng.uniform(-0.12, 0.12, accs.size), accs, s=22, color=color, alpha=0.55,
                   zorder=2, label="single seed" if i == 0 else None)
        band = _band(s)
        if band is None:
            continue
        mean, lo, hi = band
        ax.errorbar(i + 0.28, mean, yerr=[[mean - lo], [hi - mean]], fmt="D",
                    color=color, ms=8, capsize=6, lw=2, zorder=3,
                    label="mean with 95% CI" if i == 0 else None)
        ax.annotate(f"{mean:.1f}%", (i + 0.36, mean), xytext=(6, 0), textcoords="offset points",
                    va="center", fontsize=10, color=color)
    ax.set_xticks(range(len(conds)), [_label(n, c) for n, c in conds.items()])
    ax.set_xlim(-0.5, len(conds) - 0.2)
    _accuracy_baselines(ax, results)
    ax.set_ylabel("test accuracy (% of pairs ranked correctly)")
    seeds = max((len(c.get("runs", [])) for c in conds.values()), default=0)
    n_test = results.get("data", {}).get("test", {}).get("pairs")
    plural = "s" if seeds != 1 else ""
    short_kind = _short_ci_kind(ci_kind)
    ax.set_title(f"Test accuracy by training condition\n{seeds} seed{plural} each · "
                 f"{n_test or '?'} test pairs · 95% CI: {short_kind}\n"
                 f"(the y-axis is zoomed: it does not start at 0)", fontsize=12)
    fig.legend(loc="outside lower center", ncols=2, frameon=False)  # never covers the data
    ax.grid(axis="y", alpha=0.3)
    return save(fig, path)


def _short_ci_kind(kind: str) -> str:
    """A summary's `accuracy_ci_kind` in a few words, for a figure title."""
    low = kind.lower()
    return ("test pairs + seeds" if low.startswith("t over test") else
            "bootstrap over test pairs" if low.startswith("bootstrap") else
            "Wilson, over test pairs" if "wilson" in low else "t, over seeds")


def _accuracy_baselines(ax: Any, results: ResultsDocument) -> None:
    """Dashed reference lines: chance, and the stronger length rule on this test set (on
    harmless-base 'prefer the shorter' beats 'prefer the longer': the weaker rule flatters)."""
    first = next((r for c in results["conditions"].values() for r in c.get("runs", [])), None)
    baseline = stronger_length_baseline(first["test"]) if first else None
    lo, hi = ax.get_ylim()
    for value, text in ((50.0, "coin flip"),
                        (100 * baseline["accuracy"] if baseline else None,
                         f"always prefer the {baseline['rule'] if baseline else ''} response")):
        if value is None or not (lo - 8 <= value <= hi + 8):
            continue  # far outside the data it would only squash the differences that matter
        ax.axhline(value, color="#999999", ls="--", lw=1, zorder=1)
        ax.text(ax.get_xlim()[0], value, f" {text}: {value:.1f}%",
                va="bottom", ha="left", fontsize=9, color="#555555")


def _points(record: Mapping[str, Any]) -> tuple[float, float, float]:
    """(diff, lo, hi) in percentage points, for a comparison that had test pairs."""
    diff, (lo, hi) = interval_of(record)
    assert diff is not None and lo is not None and hi is not None, "a comparison without test pairs"
    return 100 * diff, 100 * lo, 100 * hi


def _forest(comps: Sequence[Comparison], path: Path, *, title: str,
            labels: Sequence[str] | None = None, xlabel: str | None = None) -> Path:
    """Forest plot: accuracy difference of each comparison with its 95% CI (pair-unit test)."""
    keep = [i for i, c in enumerate(comps) if interval_of(c)[0] is not None]
    names = [labels[i] if labels else f"{comps[i]['treated']}  vs  {comps[i]['baseline']}"
             for i in keep]
    comps = [comps[i] for i in keep]
    fig = new_figure(8.5, max(2.4, 1.0 + 0.75 * len(comps)))
    ax = fig.add_subplot()
    for i, comp in enumerate(reversed(comps)):
        diff, lo, hi = _points(comp)
        color = (_SIGNIFICANT_UP if lo > 0 else _SIGNIFICANT_DOWN if hi < 0 else _NOT_SIGNIFICANT)
        ax.plot([lo, hi], [i, i], color=color, lw=3, solid_capstyle="butt")
        ax.plot(diff, i, "o", color=color, ms=9)
        word = "better" if lo > 0 else "worse" if hi < 0 else "no detectable\ndifference"
        # A text column right of the axes: it can never overlap a bar or be clipped.
        ax.annotate(f"{diff:+.1f} pts [{lo:+.1f}, {hi:+.1f}]\n{word}", (1.0, i),
                    xycoords=("axes fraction", "data"), xytext=(10, 0),
                    textcoords="offset points", va="center", fontsize=10, color=color)
    ax.axvline(0, color="#333333", lw=1)
    ax.set_yticks(range(len(comps)), list(reversed(names)))
    ax.set_ylim(-0.6, len(comps) - 0.4)
    lo, hi = ax.get_xlim()
    ax.set_xlim(min(lo, -0.05 * (hi - lo)), max(hi, 0.05 * (hi - lo)))  # 0 always visible
    ax.set_xlabel(xlabel or "accuracy difference, percentage points (> 0: first condition is "
                  "better)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return save(fig, path)


@styled(REPORT_RC)
def plot_comparisons(results: ResultsDocument, path: Path) -> Path:
    """Forest plot of the comparisons between conditions (pair-unit 95% CIs)."""
    return _forest(results["comparisons"], path,
                   title="Is the difference real? 95% CI, test pairs the unit, seed variance in")


@styled(REPORT_RC)
def plot_ablation(results: ResultsDocument, path: Path) -> Path:
    """Forest plot: each detector's own flags treated vs as many random pairs."""
    entries = results.get("ablation", [])
    done = TREATED.get(entries[0]["treatment"], "treated") if entries else "treated"
    return _forest([e["comparison"] for e in entries], path,
                   labels=[f"{e['detector']}\n({e['flagged']:,} flags)" for e in entries],
                   title=f"Each detector's own flags {done} vs as many random pairs",
                   xlabel="accuracy difference, percentage points (> 0: the detector's flags "
                          "beat random)")


def _band(summary: RunSummary) -> tuple[float, float, float] | None:
    """(mean, lo, hi) accuracy in %, or None without test pairs (the CI is None exactly when the
    mean is)."""
    mean, (lo, hi) = summary.get("accuracy_mean"), summary["accuracy_ci"]
    if mean is None or lo is None or hi is None:
        return None
    return 100 * mean, 100 * lo, 100 * hi


def _dose_arm(ax: Any, xs: list[float], arms: list[ArmBlock], start: ConditionBlock | None, *,
              color: str, label: str, offset: float) -> None:
    """One curve: mean over seeds with its 95% band, single seeds as faint dots."""
    points: list[tuple[float, ConditionBlock | ArmBlock]] = [(0.0, start)] if start else []
    points += list(zip(xs, arms))
    shown = [(px, band) for px, block in points if (band := _band(block["summary"])) is not None]
    if not shown:
        return
    x = np.array([p[0] for p in shown])
    mean, lo, hi = (np.array([p[1][k] for p in shown]) for k in range(3))
    ax.fill_between(x, lo, hi, color=color, alpha=0.15, lw=0)
    ax.plot(x, mean, "o-", color=color, lw=2.2, ms=6, label=label, zorder=3)
    for px, block in points[1:] if start else points:
        accs = 100 * np.array(_seed_accuracies(block))
        ax.scatter(np.full(len(accs), px + offset), accs, s=12, color=color, alpha=0.45,
                   zorder=2, edgecolors="none")


def _dose_ticks(ax: Any, dose: DoseResponse, with_zero: bool) -> None:
    """Each fraction with its pair count; "0" for the baseline condition when it is drawn."""
    xs = [100 * p["fraction"] for p in dose["points"]]
    labels = [f"{x:g}%\n{p['count']:,} pairs" for x, p in zip(xs, dose["points"])]
    ax.set_xticks(([0.0] if with_zero else []) + xs, (["0"] if with_zero else []) + labels)


def _dose_panel(ax: Any, dose: DoseResponse, results: ResultsDocument) -> None:
    """Top: accuracy of both arms vs the share treated, fraction 0 = the baseline condition."""
    xs = [100 * p["fraction"] for p in dose["points"]]
    start = results["conditions"].get(dose["baseline"] or "")
    step = 0.012 * (xs[-1] if xs else 1)  # seeds' dots sit just left/right of their mean
    _dose_arm(ax, xs, [p["detector"] for p in dose["points"]], start, color=BLUE,
              label=f"top-ranked by {dose['rank_by']}", offset=-step)
    _dose_arm(ax, xs, [p["random"] for p in dose["points"]], start, color=ORANGE,
              label="as many random pairs (control)", offset=step)
    if start is not None and (band := _band(start["summary"])) is not None:
        # the shared start of both curves, in the legend rather than on top of the lines
        ax.plot(0, band[0], "s", color=BLACK, ms=7, zorder=4,
                label=f"{dose['baseline']} (fraction 0): {band[0]:.1f}%")
    ax.tick_params(labelbottom=False)  # the difference panel below carries the x axis
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{TREATED.get(dose['treatment'], dose['treatment']).capitalize()}: "
                 f"accuracy per arm (band: 95% CI)", fontsize=11)
    ax.grid(alpha=0.3)


def _difference_panel(ax: Any, dose: DoseResponse, with_zero: bool) -> None:
    """Bottom: the paired difference detector − random per fraction with its 95% CI."""
    for point in dose["points"]:
        if interval_of(point["comparison"])[0] is None:
            continue
        diff, lo, hi = _points(point["comparison"])
        # black where the CI excludes 0: blue and orange already mean the two arms above
        color = BLACK if lo > 0 or hi < 0 else _NOT_SIGNIFICANT
        x = 100 * point["fraction"]
        ax.plot([x, x], [lo, hi], color=color, lw=3, solid_capstyle="butt")
        ax.plot(x, diff, "o", color=color, ms=7)
        ax.annotate(f"{diff:+.1f}", (x, diff), xytext=(7, 0), textcoords="offset points",
                    va="center", fontsize=9, color=color)
    ax.axhline(0, color="#333333", lw=1)
    ax.text(0.01, 0.96, "black: 95% CI excludes 0 · grey: no detectable difference",
            transform=ax.transAxes, va="top", fontsize=8.5, color=GREY)
    _dose_ticks(ax, dose, with_zero)
    last = 100 * dose["points"][-1]["fraction"] if dose["points"] else 1.0
    # shared with the panel above; set last so no autoscale undoes it: room for the last label
    ax.set_xlim(-0.05 * last, 1.08 * last)
    verb = TREATED.get(dose["treatment"], dose["treatment"])
    ax.set_xlabel(f"share of training pairs {verb}")
    ax.set_ylabel("detector − random\n(points)")
    curve = dose["curve_test"]
    if curve["diff"] is not None and curve["ci"][0] is not None and curve["ci"][1] is not None:
        ax.set_title(f"Paired difference detector − random, 95% CI (test pairs the unit, seed "
                     f"variance in)\nwhole curve: "
                     f"{100 * curve['diff']:+.1f} pts [{100 * curve['ci'][0]:+.1f}, "
                     f"{100 * curve['ci'][1]:+.1f}], {format_p(curve['p'])}", fontsize=10)
    ax.grid(alpha=0.3)


@styled(REPORT_RC)
def plot_dose_response(results: ResultsDocument, path: Path) -> Path:
    """Accuracy vs share of pairs treated: the detector's top pairs vs as many random pairs.

    One column per treatment. Top: both arms' mean over seeds with a 95% band (the summaries' CI),
    single seeds as dots, fraction 0 = the unfiltered condition shared by both curves. Bottom: the
    paired difference per fraction with its 95% CI (test pairs the unit), the sharper view of the same runs.
    """
    doses = results.get("dose_response", [])
    fig = new_figure(max(8.0, 6.4 * len(doses)), 7.4)
    grid = fig.add_gridspec(2, max(len(doses), 1), height_ratios=[2.2, 1.0])
    first = None
    for col, dose in enumerate(doses):
        top = fig.add_subplot(grid[0, col], sharey=first)
        bottom = fig.add_subplot(grid[1, col], sharex=top)
        first = first or top
        _dose_panel(top, dose, results)
        _difference_panel(bottom, dose, results["conditions"].get(dose["baseline"] or "")
                          is not None)
    seeds = max((len(p["detector"]["runs"]) for d in doses for p in d["points"]), default=0)
    kinds = [p["detector"]["summary"].get("accuracy_ci_kind", "") for d in doses
             for p in d["points"]]
    kind = _short_ci_kind(kinds[0] if kinds else "")
    wide = ", wide with 2–3 seeds" if seeds in (2, 3) and kind.startswith("t") else ""
    n_test = results.get("data", {}).get("test", {}).get("pairs")
    fig.suptitle(f"Dose-response: the detector's most suspect pairs vs as many random pairs\n"
                 f"{seeds} seed{'s' if seeds != 1 else ''} per point · {n_test or '?'} test pairs "
                 f"· bands: {kind}{wide}", fontsize=12)
    if first is not None:
        fig.legend(*first.get_legend_handles_labels(), loc="outside lower center", ncols=2,
                   frameon=False)
    return save(fig, path)


@styled(REPORT_RC)
def plot_strength(results: ResultsDocument, path: Path) -> Path:
    """Histogram of the per-pair mean held-out margin; the share below 0 against the literature."""
    block: StrengthBlock = results["strength"]
    margins = np.asarray(block["mean_margin"], dtype=float)
    lo, hi = np.percentile(margins, [0.5, 99.5]) if margins.size else (-1.0, 1.0)
    span = max(abs(lo), abs(hi), 1e-6)
    edges = np.linspace(-span, span, 41)  # symmetric about 0, so a bar never straddles it
    fig = new_figure(8.5, 4.8)
    ax = fig.add_subplot()
    counts, _ = np.histogram(np.clip(margins, -span, span), bins=edges)
    centers = (edges[:-1] + edges[1:]) / 2
    ax.bar(centers, counts, width=np.diff(edges), color=np.where(centers < 0, VERMILION, BLUE),
           alpha=0.8, edgecolor="white", lw=0.5)
    ax.axvline(0, color="#333333", lw=1, ls="--")
    share = block["share_negative"]
    ref = block.get("reference")
    text = f"{100 * share:.1f}% of pairs below 0\n(models prefer the rejected reply)"
    accuracy = block.get("held_out_accuracy")
    if accuracy is not None:  # a judge with accuracy a puts ~1 − a below 0 with no label noise
        text += (f"\nthe models are {100 * accuracy:.1f}% accurate held out:\n"
                 f"their errors alone put ~{100 * (1 - accuracy):.1f}% below 0")
    if ref:
        text += (f"\npublished for {ref['dataset']}: ~{100 * ref['share']:.0f}%\n"
                 f"(fine-tuned RM ensembles: stronger judges)")
    ax.text(0.02, 0.97, text, transform=ax.transAxes, va="top", ha="left", fontsize=10,
            color=VERMILION)
    # headroom for the text: one line ≈ 6% of the axes, the bars stay below it
    ax.set_ylim(0, max(counts.max(initial=1), 1) / max(0.2, 0.92 - 0.065 * text.count("\n")))
    outside = int(((margins < -span) | (margins > span)).sum())
    if outside:
        ax.text(0.98, 0.97, f"{outside} pair{'s' if outside != 1 else ''} beyond the axis\n"
                f"counted in the end bars", transform=ax.transAxes, va="top", ha="right",
                fontsize=9, color=GREY)
    ax.set_xlabel("held-out margin r(chosen) − r(rejected), model units\n"
                  "(mean over the models that never trained on the pair)")
    ax.set_ylabel("training pairs")
    ax.set_title(f"Preference strength of {block['pairs']:,} training pairs ({block['detector']})")
    ax.grid(axis="y", alpha=0.3)
    return save(fig, path)


@styled(REPORT_RC)
def plot_margins(results: ResultsDocument, path: Path) -> Path:
    """Distribution of the margin r(chosen) - r(rejected) on the test pairs, per condition."""
    conds = results["conditions"]
    fig = new_figure(8.5, 1.2 + 1.0 * len(conds))
    ax = fig.add_subplot()
    names = list(conds)
    for i, name in enumerate(names):
        gaps = np.concatenate([np.subtract(r["test_chosen_rewards"], r["test_rejected_rewards"])
                               for r in conds[name]["runs"]] or [np.zeros(0)])
        y = len(names) - 1 - i
        if gaps.size < 2 or np.ptp(gaps) == 0:
            continue
        parts = ax.violinplot(gaps, positions=[y], orientation="horizontal", widths=0.85,
                              showmedians=True, showextrema=False)
        for body in list(parts["bodies"]):  # type: ignore[call-overload]
            body.set(facecolor=condition_color(name, i), edgecolor="none", alpha=0.55)
        parts["cmedians"].set(color=condition_color(name, i), lw=2)
        ax.annotate(f"{100 * np.mean(gaps > 0):.0f}% of pairs > 0", (1.0, y),
                    xycoords=("axes fraction", "data"), xytext=(6, 0), textcoords="offset points",
                    va="center", fontsize=10)
    ax.axvline(0, color="#333333", lw=1, ls="--")
    ax.set_yticks(range(len(names)), list(reversed(names)))
    ax.set_xlabel("reward margin r(chosen) − r(rejected), model units "
                  "(> 0: model agrees with the label)")
    ax.set_title("How strongly each model prefers the human-chosen response\n"
                 "(test pairs, all seeds; line = median)")
    return save(fig, path)


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Centered moving average that shrinks at the ends (no edge artefacts from zero padding)."""
    if window <= 1 or y.size < 3:
        return y
    kernel = np.ones(window)
    return np.convolve(y, kernel, "same") / np.convolve(np.ones_like(y), kernel, "same")


def _mean_curve(runs: Sequence[RunRecord], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, value averaged over seeds at each step) for one history key."""
    by_step: dict[int, list[float]] = {}
    for run in runs:
        for h in run.get("history", []):
            if h.get(key) is not None:
                by_step.setdefault(int(h["step"]), []).append(float(h[key]))
    steps = np.array(sorted(by_step))
    return steps, np.array([np.mean(by_step[s]) for s in steps])


@styled(REPORT_RC)
def plot_training_curves(results: ResultsDocument, path: Path) -> Path:
    """Training loss and batch accuracy vs step per condition: raw (faint) and smoothed."""
    fig = new_figure(11, 4.4)
    axes = fig.subplots(1, 2)
    for ax, key, ylabel in ((axes[0], "loss", "Bradley-Terry loss (nats)"),
                            (axes[1], "accuracy", "training batch accuracy (%)")):
        scale = 100 if key == "accuracy" else 1
        for i, (name, cond) in enumerate(results["conditions"].items()):
            steps, values = _mean_curve(cond.get("runs", []), key)
            if steps.size == 0:
                continue
            color = condition_color(name, i)
            ax.plot(steps, scale * values, color=color, alpha=0.18, lw=1)
            # Histories may be logged every step or every N steps: ~8% of the points per window.
            window = max(3, steps.size // 12) if steps.size >= 8 else 1
            ax.plot(steps, scale * _smooth(values, window), color=color, lw=2, label=name)
        ax.axhline(np.log(2) if key == "loss" else 50, color="#999999", ls="--", lw=1)
        if key == "loss":  # the report's "barely trained" line: a run must end below it
            ax.axhline(LN2 - BARELY_TRAINED_NATS, color="#999999", ls=":", lw=1)
        ax.set_xlabel("training step (optimizer updates)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].set_title("Training loss (dashed: ln 2, a model that guesses;\n"
                      f"dotted: ln 2 − {BARELY_TRAINED_NATS:.3f}, below it a model has trained)")
    axes[1].set_title("Training accuracy (dashed: 50%, chance)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center",
               ncols=max(1, len(results["conditions"])), frameon=False)
    fig.suptitle("Training curves, mean over seeds (faint: raw, bold: moving average)")
    return save(fig, path)


def _pooled_reliability(runs: Sequence[RunRecord]) -> tuple[np.ndarray, ...]:
    """(confidence, accuracy, count) per bin, pooled over seeds by count-weighting."""
    rels = [r["test"]["reliability"] for r in runs]
    count = np.sum([rel["count"] for rel in rels], axis=0).astype(float)
    conf = np.sum([np.nan_to_num(np.array(rel["confidence"], dtype=float)) * rel["count"]
                   for rel in rels], axis=0)
    acc = np.sum([np.nan_to_num(np.array(rel["accuracy"], dtype=float)) * rel["count"]
                  for rel in rels], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return conf / count, acc / count, count


@styled(REPORT_RC)
def plot_reliability(results: ResultsDocument, path: Path) -> Path:
    """Reliability diagram on the model's confidence in the response it prefers (bins >= 0.5).

    The stored bins cover P(chosen > rejected) with every pair in both orders (symmetric about 0.5),
    so the upper half is exactly "when the model is X% sure, how often is it right".
    """
    fig = new_figure(6.4, 5.6)
    ax = fig.add_subplot()
    ax.plot([50, 100], [50, 100], color="#999999", ls="--", lw=1, label="perfectly calibrated")
    lowest = 50.0
    for i, (name, cond) in enumerate(results["conditions"].items()):
        if not cond.get("runs"):
            continue
        conf, acc, count = _pooled_reliability(cond["runs"])
        upper = (np.array(cond["runs"][0]["test"]["reliability"]["bin_edges"][:-1]) >= 0.5 - 1e-9)
        keep = upper & (count > 0)
        ece = cond["summary"].get("ece_mean")
        label = f"{name} (ECE {ece:.3f})" if ece is not None else name
        ax.plot(100 * conf[keep], 100 * acc[keep], "o-", color=condition_color(name, i), lw=2,
                ms=6, label=label)
        lowest = min(lowest, float(np.min(100 * acc[keep], initial=50.0)))
    ax.set_xlim(48, 101)
    ax.set_ylim(max(0.0, lowest - 8), 102)  # upper half only: accuracy rarely falls far below 50
    # both directions named where they are: a barely trained model sits above the diagonal
    ax.text(52, 99, "above: under-confident\n(right more often than sure)", va="top", ha="left",
            fontsize=9, color=GREY)
    ax.text(99, ax.get_ylim()[0] + 14, "below: over-confident\n(right less often than sure)",
            va="bottom", ha="right", fontsize=9, color=GREY)
    ax.set_xlabel("model confidence in the response it scores higher, σ(|margin|), %")
    ax.set_ylabel("% of those pairs where that response was chosen")
    ax.set_title("Calibration: is each model right as often\nas it is confident? (10-point bins)")
    ax.legend(frameon=False, loc="lower right")
    ax.grid(alpha=0.3)
    return save(fig, path)


@styled(REPORT_RC)
def plot_flags(results: ResultsDocument, path: Path) -> Path:
    """Horizontal bars: training pairs flagged per detector, plus the union that 'clean' acts on."""
    flags = results["flags"]
    dets = sorted(flags["detectors"].items(), key=lambda kv: kv[1]["flagged"])
    # barh draws row 0 at the bottom: the union last, so it is the top bar the caption names
    rows = [(d, v) for d, v in dets] + [("any detector (union)", flags["union"])]
    fig = new_figure(8.5, 1.3 + 0.42 * len(rows))
    ax = fig.add_subplot()
    counts = [v["flagged"] for _, v in rows]
    colors = [BLUE] * len(dets) + [VERMILION]
    ax.barh(range(len(rows)), counts, color=colors, height=0.65)
    for i, (_, v) in enumerate(rows):
        ax.annotate(f"{v['flagged']:,} ({100 * v['rate']:.1f}%)", (v["flagged"], i),
                    xytext=(4, 0), textcoords="offset points", va="center", fontsize=10)
    ax.set_yticks(range(len(rows)), [name for name, _ in rows])
    ax.set_xlim(0, max(max(counts, default=0), 1) * 1.3)
    n = results.get("data", {}).get("train", {}).get("pairs")
    ax.set_xlabel("flagged training pairs (count, and % of the training pool)")
    ax.set_title(f"What the detectors flagged{f' in {n:,} training pairs' if n else ''}")
    ax.grid(axis="x", alpha=0.3)
    return save(fig, path)


@styled(REPORT_RC)
def plot_table(headers: Sequence[str], cells: Sequence[Sequence[str]], path: Path, *,
               title: str) -> Path:
    """A table as an image (cells already formatted as text by the caller)."""
    fig = Figure(figsize=(min(1.0 + 1.15 * len(headers), 12), 0.5 + 0.34 * (len(cells) + 1)),
                 dpi=DPI)  # no constrained layout: the tight bbox below trims the margins
    ax = fig.add_subplot()
    ax.axis("off")
    # Two-line headers ("Training\nexamples") keep columns narrow enough for a slide.
    labels = [h.replace(" ", "\n", 1) if len(h) > 10 else h for h in headers]
    table = ax.table(cellText=[list(c) for c in cells], colLabels=labels, loc="center",
                     cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(10)
    table.auto_set_column_width(list(range(len(headers))))
    table.scale(1, 1.6)
    for (r, _), cell in table.get_celld().items():
        cell.set_edgecolor("#cccccc")
        if r == 0:
            cell.set(facecolor="#e8eef5", height=cell.get_height() * 1.6)
            cell.get_text().set_fontweight("bold")
    ax.set_title(title, fontsize=12)
    return save(fig, path, bbox_inches="tight", pad_inches=0.12)


def make_figures(results: ResultsDocument, out_dir: Path) -> dict[str, Path]:
    """Draw every figure the results support into `out_dir`; {name: path}, skipping empty ones."""
    out: dict[str, Path] = {}
    conds = results.get("conditions", {})
    if conds:
        out["accuracy"] = plot_accuracy(results, out_dir / "accuracy.png")
    if any(interval_of(c)[0] is not None for c in results.get("comparisons", [])):
        out["comparisons"] = plot_comparisons(results, out_dir / "comparisons.png")
    if any(r.get("test_chosen_rewards") for c in conds.values() for r in c.get("runs", [])):
        out["margins"] = plot_margins(results, out_dir / "margins.png")
    if any(r.get("history") for c in conds.values() for r in c.get("runs", [])):
        out["training_curves"] = plot_training_curves(results, out_dir / "training_curves.png")
    if any(c.get("runs") for c in conds.values()):
        out["reliability"] = plot_reliability(results, out_dir / "reliability.png")
    if results.get("flags", {}).get("detectors"):
        out["flags"] = plot_flags(results, out_dir / "flags.png")
    if results.get("dose_response"):
        out["dose_response"] = plot_dose_response(results, out_dir / "dose_response.png")
    if any(interval_of(e["comparison"])[0] is not None for e in results.get("ablation", [])):
        out["ablation"] = plot_ablation(results, out_dir / "ablation.png")
    if results.get("strength", {}).get("mean_margin"):
        out["strength"] = plot_strength(results, out_dir / "strength.png")
    return out
