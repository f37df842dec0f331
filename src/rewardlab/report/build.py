"""Results dict → results.json, report.md, a self-contained report.html and the PNG figures.

The report reads top-down for someone who has never seen it: the question, the answer in plain
words, then the evidence (paired comparisons, accuracies, the original notebook's table, what was
flagged, margins, calibration, length, training curves), a glossary, and how to reproduce it.
The content is built once as `Section`s and rendered to both Markdown and HTML.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rewardlab.jsonable import to_jsonable
from rewardlab.report.figures import make_figures, plot_table
from rewardlab.report.render import (
    Block,
    Figure,
    Section,
    Table,
    escape_markdown,
    render_html,
    render_markdown,
)

if TYPE_CHECKING:
    from rewardlab.report.results import Comparison, NotebookRow, ResultsDocument

__all__ = ["write_report", "notebook_cells", "build_sections"]

QUESTION = "Does cleaning the preference data give a better reward model?"
_NOTEBOOK_HEADERS = ["Condition", "Training examples", "Train accuracy", "Train loss",
                     "Test accuracy", "Correct", "Total", "Avg reward gap"]


# ---------------------------------------------------------------- formatting

def _pct(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f}%"


def _num(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _count(x: float | None) -> str:
    """Counts averaged over seeds may be fractional; show decimals only then."""
    if x is None:
        return "—"
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.1f}"


def _p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


# ---------------------------------------------------------------- sections

def _header(results: ResultsDocument) -> Section:
    cfg, data = results.get("config", {}), results.get("data", {})
    train, test = data.get("train", {}), data.get("test", {})
    # names and paths come from the user's data and flags: literal text, never markup
    model = escape_markdown(cfg.get("train_config", {}).get("model") or cfg.get("model") or "?")
    source = escape_markdown(train.get("source", train.get("dataset", "?")))
    seeds = cfg.get("seeds", [])
    minutes = (results.get("seconds") or 0) / 60
    meta = (f"Training data: {source} "
            f"({_count(train.get('pairs'))} pairs). Test data: {_count(test.get('pairs'))} pairs, "
            f"the same for every model. Backbone: {model}. Seeds per condition: {len(seeds)}. "
            f"rewardlab {results.get('rewardlab_version', '?')}, {results.get('created', '')}, "
            f"{minutes:.1f} min.")
    return Section(QUESTION, [meta], kind="header")


def _answer(results: ResultsDocument) -> Section:
    """The verdict paragraph, its first sentence (the direct answer) in bold."""
    verdict = results.get("verdict", "")
    head, sep, rest = verdict.partition(". ")
    return Section("Answer", [f"**{head}.** {rest}" if sep else verdict], kind="verdict")


def _conditions(results: ResultsDocument) -> Section:
    rows = [[name, str(cond.get("description") or ""), _count(cond["summary"].get("train_pairs"))]
            for name, cond in results["conditions"].items()]
    intro = ("Every condition trains the same Bradley-Terry reward model with the same settings "
             "and seeds; only the training data differs. `unfiltered` uses every pair; `clean-*` "
             "acts on the pairs the detectors flagged (remove, flip the label, or soften it); "
             "`random` removes as many pairs as cleaning does, but chosen at random. The random "
             "control is what tells *better* data from merely *less* data.")
    table = Table(["Condition", "Training data", "Train pairs"], rows)
    return Section("What was compared", [intro, table])


def _mcnemar_cell(comp: Comparison) -> str:
    return "; ".join(f"seed {m['seed']}: {m['b']} vs {m['c']}, {_p(m['p'])}"
                     for m in comp["mcnemar"]) or "—"


def _comparisons(results: ResultsDocument) -> Section:
    rows, n_boot = [], 10_000
    for comp in results.get("comparisons", []):
        boot = comp["bootstrap"]
        n_boot = boot.get("n_boot", n_boot)
        ci = ("—" if boot["ci"][0] is None or boot["ci"][1] is None else
              f"{100 * boot['ci'][0]:+.1f} to {100 * boot['ci'][1]:+.1f}")
        diff = "—" if boot["diff"] is None else f"{100 * boot['diff']:+.1f}"
        rows.append([f"{comp['treated']} vs {comp['baseline']}", diff, ci, _mcnemar_cell(comp),
                     comp["verdict"]])
    intro = ("All models are scored on the same test pairs, so each comparison is paired. The "
             "difference is in percentage points of test accuracy (averaged over seeds); its 95% "
             f"CI comes from resampling test pairs {n_boot:,} times (paired bootstrap). McNemar's "
             "exact test, per seed, looks only at pairs the two models disagree on: 'b vs c' = "
             "pairs only the first model got right vs pairs only the second got right. A "
             "difference is called better or worse only when its CI excludes 0.")
    table = Table(["Comparison", "Difference (points)", "95% CI (points)",
                   "McNemar per seed (b vs c, p)", "Verdict"], rows)
    return Section("Is the difference real?", [intro, table, Figure(
        "comparisons", "Accuracy difference per comparison; the bar is the paired-bootstrap 95% "
        "CI. Bars crossing the vertical line at 0 are not significant.")])


def _accuracy(results: ResultsDocument) -> Section:
    rows = []
    for name, cond in results["conditions"].items():
        s = cond["summary"]
        ci = s.get("accuracy_ci") or [None, None]
        seeds = ", ".join(_pct(r["test"].get("accuracy")) for r in cond.get("runs", []))
        rows.append([name, _pct(s.get("accuracy_mean")), f"{_pct(ci[0])} – {_pct(ci[1])}", seeds,
                     _num(s.get("reward_gap_mean")), _num(s.get("nll_mean")),
                     _num(s.get("ece_mean"))])
    first = next(iter(results["conditions"].values()))["summary"]
    kind = first.get("accuracy_ci_kind", "t over seeds")
    few = first.get("n_seeds") in (2, 3) and kind.startswith("t")
    wide = (" With only a few seeds this interval is wide by construction (the t multiplier is "
            "12.7 for 2 seeds, 4.3 for 3); the paired comparison above is the sharper test."
            if few else "")
    note = (f"Accuracy = share of test pairs where the model gives the human-chosen response the "
            f"higher reward (ties count as wrong). The interval is a 95% CI ({kind}). NLL is the "
            f"Bradley-Terry test loss (lower is better; 0.693 = guessing); ECE is the calibration "
            f"error (0 = perfectly calibrated).{wide}")
    table = Table(["Condition", "Test accuracy", "95% CI", "Per seed", "Mean reward margin",
                   "NLL", "ECE"], rows)
    return Section("Test accuracy", [note, table, Figure(
        "accuracy", "Diamonds: mean over seeds with 95% CI. Dots: single seeds. Dashed lines: "
        "coin flip, and always preferring the longer response.")])


def notebook_cells(rows: Sequence[NotebookRow]) -> list[list[str]]:
    """The notebook table's rows as display strings (shared by Markdown, HTML and the PNG)."""
    return [[r["condition"], _count(r["training_examples"]), _pct(r["train_accuracy"], 2),
             _num(r["train_loss"], 4), _pct(r["test_accuracy"], 2), _count(r["correct"]),
             _count(r["total"]), _num(r["avg_reward_gap"], 4)] for r in rows]


def _notebook(results: ResultsDocument) -> Section:
    text = ("The same numbers in the layout of the original notebook, which compared one "
            "filtered run with one unfiltered run (62.18% vs 62.33%) without a control or a "
            "significance test. A gap that size is well inside run-to-run noise; the sections "
            "above are what tell whether a gap is real.")
    table = Table(_NOTEBOOK_HEADERS, notebook_cells(results.get("notebook_table", [])))
    image = Figure("notebook_table", "The same table as an image, for slides.", in_html=False)
    return Section("Results in the original notebook's format", [text, table, image])


def _flags(results: ResultsDocument) -> Section:
    flags = results.get("flags", {})
    rows = [[d, _count(v["flagged"]), _pct(v["rate"]), _num(v.get("threshold"), 3),
             str(v.get("threshold_kind", ""))] for d, v in flags.get("detectors", {}).items()]
    union = flags.get("union", {})
    rows.append(["any detector (union)", _count(union.get("flagged")), _pct(union.get("rate")),
                 "", ""])
    text = ("Pairs in the training pool each detector flagged. `clean-*` conditions act on the "
            "union. A threshold is 'fixed' when set in advance, 'percentile' when it flags a "
            "fixed share, 'data' when derived from the data.")
    return Section("What the detectors flagged", [
        text, Table(["Detector", "Flagged", "Rate", "Threshold", "Threshold kind"], rows),
        Figure("flags", "Flagged training pairs per detector; the top bar is their union.")])


def _margins_and_calibration(results: ResultsDocument) -> list[Section]:
    margins = Section("Reward margins", [
        "The margin r(chosen) − r(rejected) is how strongly a model prefers the human-chosen "
        "response. Right of 0 the model agrees with the label; wider shapes mean more confident "
        "models. Reward units are arbitrary per model, so compare shapes, not exact values.",
        Figure("margins", "Distribution of test-pair margins per condition, all seeds pooled.")])
    calibration = Section("Calibration", [
        "A Bradley-Terry model's σ(margin) is its probability that the chosen response is "
        "preferred. Calibrated means: among pairs where it is 80% sure, it is right 80% of the "
        "time. ECE averages the gap between the two over 10 equal-width probability bins, with "
        "each pair counted in both presentation orders (the same as the usual top-label ECE).",
        Figure("reliability", "Reliability diagram: points on the dashed diagonal are perfectly "
               "calibrated; below it the model is overconfident.")])
    return [margins, calibration]


def _length(results: ResultsDocument) -> Section:
    rows, longer = [], None
    for name, cond in results["conditions"].items():
        tests = [r["test"] for r in cond.get("runs", [])]
        longer = longer or next((t.get("longer_wins_accuracy") for t in tests), None)
        rows.append([name, _mean_str(tests, "length_reward_corr"),
                     _mean_str(tests, "length_gap_corr")])
    text = (f"Reward models often learn 'longer is better'. On these test pairs, always picking "
            f"the longer response is right {_pct(longer)} of the time. The correlations (Pearson "
            f"r, mean over seeds) show how much each model's rewards follow response length "
            f"(in characters): positive means longer responses get higher rewards, negative means "
            f"shorter ones do, and values near 0 mean length is not what the model scores.")
    return Section("Does the model just reward length?", [text, Table(
        ["Condition", "r(reward, length) over all responses",
         "r(margin, length difference) over pairs"], rows)])


def _mean_str(tests: Sequence[Mapping[str, Any]], key: str) -> str:
    vals = [t[key] for t in tests if t.get(key) is not None]
    return _num(float(np.mean(vals)), 3) if vals else "—"


def _subsets(results: ResultsDocument) -> Section | None:
    conds = results["conditions"]
    names = sorted({s for c in conds.values() for r in c.get("runs", [])
                    for s in r["test"].get("accuracy_by_subset", {})})
    if len(names) < 2:
        return None  # one subset: the accuracy table already says it all
    rows = []
    for name, cond in conds.items():
        by = [r["test"]["accuracy_by_subset"] for r in cond.get("runs", [])]
        rows.append([name] + [_pct(float(np.mean([b[s]["accuracy"] for b in by if s in b])))
                              if any(s in b for b in by) else "—" for s in names])
    counts: Mapping[str, Mapping[str, Any]] = next(iter(conds.values()))["runs"][0]["test"][
        "accuracy_by_subset"]
    headers = ["Condition"] + [f"{s or '(no subset)'} (n={counts.get(s, {}).get('n', '?')})"
                               for s in names]
    return Section("Test accuracy by subset", ["Mean over seeds.", Table(headers, rows)])


def _training(results: ResultsDocument) -> Section:
    tc = results.get("config", {}).get("train_config", {})
    shown = {k: tc[k] for k in ("model", "epochs", "batch_size", "lr", "max_length", "precision")
             if tc.get(k) is not None}  # None = "backbone default": nothing worth printing
    settings = ", ".join(f"{k}={escape_markdown(v)}" for k, v in shown.items())
    return Section("Training curves", [
        f"Training settings: {settings or 'see results.json'}.",
        Figure("training_curves", "Loss and batch accuracy per optimizer step, mean over seeds. "
               "Loss falling below ln 2 ≈ 0.693 means the model learned something.")])


def _teaching(results: ResultsDocument) -> Section | None:
    t = results.get("teaching")
    if not t:
        return None
    facts = [f"label noise injected: {_pct(t.get('noise'), 0)}" if "noise" in t else "",
             f"flipped training pairs: {_count(t.get('injected_flips'))}"
             if "injected_flips" in t else "",
             f"accuracy with the flips undone (the ceiling): {_pct(t.get('oracle_accuracy'))}"
             if t.get("oracle_accuracy") is not None else "",
             f"share of the lost accuracy recovered by "
             f"{escape_markdown(t.get('best_treatment', 'the best'))}: "
             f"{_pct(t.get('recovered_fraction'), 0)}" if "recovered_fraction" in t else "",
             f"correlation of reward with true quality: {_num(t.get('quality_reward_corr'))}"
             if t.get("quality_reward_corr") is not None else ""]
    blocks: list[Block] = ["This run used synthetic data with a known quality function, so we "
                           "know which labels were flipped: " + "; ".join(f for f in facts if f)
                           + "."]
    quality = t.get("detector_quality") or {}
    if quality:
        blocks.append(Table(["Detector", "Flagged", "Precision", "Recall", "F1"], [
            [d, _count(q.get("flagged")), _num(q.get("precision")), _num(q.get("recall")),
             _num(q.get("f1"))] for d, q in quality.items()]))
        blocks.append("Precision: share of flagged pairs that really were flipped. Recall: share "
                      "of flipped pairs that were flagged.")
    for name in _teaching_figures(t):
        blocks.append(Figure(f"teaching:{name}", _TEACH_CAPTIONS.get(name, name)))
    return Section("Synthetic demo: checking against the ground truth", blocks)


_TEACH_CAPTIONS = {
    "bt_curves": "What the Bradley-Terry loss does: loss and P(chosen preferred) vs margin.",
    "quality_vs_reward": "True quality of each test response vs the unfiltered model's reward.",
    "detector_quality": "Detector precision and recall against the injected flips.",
}


def _teaching_figures(teaching: Mapping[str, Any]) -> dict[str, Path]:
    """Teaching figures that exist on disk, as {name: path} (accepts a dict or a list of paths)."""
    figs = teaching.get("figures") or {}
    items = figs.items() if isinstance(figs, Mapping) else ((Path(p).stem, p) for p in figs)
    return {str(k): Path(v) for k, v in items if Path(v).is_file()}


_GLOSSARY = Table(["Term", "Meaning"], [
    ["Bradley-Terry (BT)", "P(A preferred to B) = σ(r(A) − r(B)); the reward model is trained to "
     "maximise this for the chosen response."],
    ["margin / reward gap", "r(chosen) − r(rejected) on one pair."],
    ["accuracy", "share of test pairs with margin > 0."],
    ["95% CI", "95% confidence interval: the range of values the data are compatible with."],
    ["points", "percentage points: 62.3% vs 61.1% is a difference of 1.2 points."],
    ["paired bootstrap", "resample the test pairs with replacement, recompute the difference; "
     "the middle 95% of the repeats is the CI."],
    ["McNemar (exact)", "binomial test on the pairs where two models disagree."],
    ["NLL", "negative log-likelihood, the BT loss on test pairs; 0.693 = guessing."],
    ["ECE", "expected calibration error: average |confidence − accuracy| over 10 bins."],
    ["seed", "random initialisation and data order; repeats show run-to-run noise."],
])


def build_sections(results: ResultsDocument) -> list[Section]:
    """The report's content in reading order; optional parts are left out when absent."""
    sections = [_header(results), _answer(results), _conditions(results)]
    if results.get("comparisons"):
        sections.append(_comparisons(results))
    sections += [_accuracy(results), _notebook(results)]
    if results.get("flags", {}).get("detectors"):
        sections.append(_flags(results))
    sections += _margins_and_calibration(results) + [_length(results)]
    sections += [s for s in (_subsets(results), _training(results), _teaching(results)) if s]
    sections.append(Section("Glossary", [_GLOSSARY]))
    sections.append(Section("Reproduce", [
        "The full configuration and data fingerprints (sha256 over the pairs) as saved in "
        "results.json:", json.dumps(to_jsonable({"config": results.get("config", {}),
                                                 "data": results.get("data", {})}), indent=2)],
        kind="code"))
    return sections


def write_report(results: ResultsDocument, out_dir: Path) -> dict[str, Path]:
    """Write results.json, report.md, report.html and the figures into `out_dir`.

    Returns {"results": …, "markdown": …, "html": …, <figure name>: …} paths.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clean: ResultsDocument = to_jsonable(results)  # non-finite floats are None from here on
    paths = {"results": out_dir / "results.json"}
    paths["results"].write_text(json.dumps(clean, indent=2, allow_nan=False) + "\n")
    figures = make_figures(clean, out_dir)
    if clean.get("notebook_table"):
        figures["notebook_table"] = plot_table(
            _NOTEBOOK_HEADERS, notebook_cells(clean["notebook_table"]),
            out_dir / "notebook_table.png",
            title="Results in the original notebook's format (means over seeds)")
    teaching = {f"teaching:{k}": v
                for k, v in _teaching_figures(clean.get("teaching") or {}).items()}
    sections = build_sections(clean)
    paths["markdown"] = out_dir / "report.md"
    paths["markdown"].write_text(render_markdown(sections, {**figures, **teaching}, out_dir))
    paths["html"] = out_dir / "report.html"
    paths["html"].write_text(render_html(sections, {**figures, **teaching}))
    return {**paths, **figures}
