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

from rewardlab.evaluation.crossed import format_p, interval_of
from rewardlab.evaluation.learning import (
    BARELY_TRAINED_NATS,
    LN2,
    Learning,
    LengthBaseline,
    learning_by_condition,
)
from rewardlab.evaluation.rated_verdict import rated_verdict_parts
from rewardlab.evaluation.verdict import verdict_parts
from rewardlab.jsonable import to_jsonable
from rewardlab.report.cells import count, num, pct
from rewardlab.report.figures import make_figures, plot_table
from rewardlab.report.rated import (
    RATED_GLOSSARY,
    RATED_QUESTION,
    rated_answer_table,
    rated_conditions,
    rated_metrics,
)
from rewardlab.report.render import (
    Block,
    Figure,
    Section,
    Table,
    escape_markdown,
    render_html,
    render_markdown,
)
from rewardlab.report.teaching import teaching_figures, teaching_section

if TYPE_CHECKING:
    from rewardlab.report.results import (
        ArmBlock,
        Comparison,
        DoseResponse,
        ResultsDocument,
        RunRecord,
    )

__all__ = ["write_report", "notebook_cells", "build_sections"]

QUESTION = "Does cleaning the preference data give a better reward model?"
_NOTEBOOK_HEADERS = ["Condition", "Seed", "Training examples", "Train accuracy", "Train loss",
                     "Test accuracy", "Correct", "Total", "Avg reward gap"]


# ---------------------------------------------------------------- sections

def _subsets_seen(results: ResultsDocument) -> list[str]:
    """The test pairs' subsets (HH-RLHF: harmless-base, …), read off the first run's metrics."""
    first = next((r for c in results.get("conditions", {}).values() for r in c.get("runs", [])),
                 None)
    return [s for s in (first["test"].get("accuracy_by_subset") or {}) if s] if first else []


def _header(results: ResultsDocument) -> Section:
    cfg, data = results.get("config", {}), results.get("data", {})
    train, test = data.get("train", {}), data.get("test", {})
    # names and paths come from the user's data and flags: literal text, never markup
    model = escape_markdown(cfg.get("train_config", {}).get("model") or cfg.get("model") or "?")
    source = escape_markdown(train.get("source", train.get("dataset", "?")))
    subsets = _subsets_seen(results)
    subset = (f", subset{'s' if len(subsets) > 1 else ''} "
              f"{escape_markdown(', '.join(subsets))}" if subsets else "")
    seeds = cfg.get("seeds", [])
    minutes = (results.get("seconds") or 0) / 60
    rated = results.get("rated")
    prompts = (f" decided pairs of {count(rated['train_prompts'])} rated prompts" if rated else
               " pairs")
    tests = (f" decided pairs of {count(rated['test_prompts'])} rated prompts" if rated else
             " pairs")
    meta = (f"Training data: {source}{subset} "
            f"({count(train.get('pairs'))}{prompts}). Test data: {count(test.get('pairs'))}{tests}, "
            f"the same for every model. Backbone: {model}. Seeds per condition: {len(seeds)}. "
            f"rewardlab {results.get('rewardlab_version', '?')}, {results.get('created', '')}, "
            f"{minutes:.1f} min.")
    return Section(RATED_QUESTION if results.get("rated") else QUESTION, [meta], kind="header")


def _rule_name(baseline: LengthBaseline) -> str:
    return f"always prefer the {baseline['rule']}"


def _points_cell(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:+.1f}"


def _trained_cell(learning: Learning) -> str:
    if learning["loss_drop"] is None:
        return "—"
    return "barely" if learning["barely_trained"] else "yes"


def _vs_unfiltered(results: ResultsDocument, name: str) -> str:
    comp = next((c for c in results.get("comparisons", [])
                 if c["treated"] == name and c["baseline"] == "unfiltered"), None)
    if comp is None:
        return "(reference)" if name == "unfiltered" else "—"
    return f"{_diff_cell(comp)} ({_ci_cell(comp)})"


def _answer_table(results: ResultsDocument) -> Table | None:
    """One row per condition: accuracy, gain over unfiltered, over the length rule, training."""
    learning, baseline = learning_by_condition(results)
    if not learning:
        return None
    rule = (f"vs '{_rule_name(baseline)}' ({pct(baseline['accuracy'])}), points" if baseline
            else "vs the length rule, points")
    rows = [[name, pct(ln["accuracy"]), _vs_unfiltered(results, name),
             _points_cell(ln["over_length_baseline"]), num(ln["train_loss"]),
             _trained_cell(ln)] for name, ln in learning.items()]
    return Table(["Condition", "Test accuracy", "vs unfiltered, points (95% CI)", rule,
                  f"Train loss (guessing: {LN2:.3f})", "Trained?"], rows)


def _answer(results: ResultsDocument) -> Section:
    """The direct answer in one bold line, a small table, then the cautions and the detail."""
    rated = bool(results.get("rated"))  # tie and ranking conditions: their own verdict and table
    parts = rated_verdict_parts(results) if rated else verdict_parts(results)
    blocks: list[Block] = [f"**{parts['headline']}**"]
    table = rated_answer_table(results) if rated else _answer_table(results)
    if table is not None:
        blocks.append(table)
    # the cautions in one paragraph, then one short paragraph per point of detail
    blocks += [" ".join(parts["cautions"]), *parts["details"]]
    return Section("Answer", [b for b in blocks if b], kind="verdict")


def _learning(results: ResultsDocument) -> Section | None:
    """How far each condition's models got from guessing, and the criterion for 'barely'."""
    learning, baseline = learning_by_condition(results)
    if not learning:
        return None
    rule = f"'{_rule_name(baseline)}'" if baseline else "the stronger length rule"
    rows = [[name, num(ln["train_loss"]), num(ln["loss_drop"]), num(ln["test_nll"]),
             num(ln["mean_margin"]), _points_cell(ln["over_length_baseline"]), _trained_cell(ln)]
            for name, ln in learning.items()]
    text = (f"A Bradley-Terry model that guesses has loss ln 2 = {LN2:.3f} and margins near 0; "
            f"two such models differ only by noise, whatever data they saw. Train loss is the last "
            f"epoch's mean, averaged over seeds; test NLL is the same loss on the test pairs. A "
            f"condition counts as **barely trained** when its train loss is less than "
            f"{BARELY_TRAINED_NATS:.3f} nats below ln 2: the drop a calibrated model that is 60% "
            f"sure of every pair would reach (ln 2 − H(0.6)). Accuracy is measured against "
            f"{rule}, the stronger of the two trivial length rules on these test pairs"
            + (f" ({pct(baseline['accuracy'])})." if baseline else "."))
    table = Table(["Condition", "Train loss", "Below ln 2 (nats)", "Test NLL",
                   "Mean test margin", f"Accuracy over {rule} (points)", "Trained?"], rows)
    return Section("How much each model learned", [text, table])


def _conditions(results: ResultsDocument) -> Section:
    rows = [[name, str(cond.get("description") or ""), count(cond["summary"].get("train_pairs"))]
            for name, cond in results["conditions"].items()]
    intro = ("Every condition trains the same Bradley-Terry reward model with the same settings "
             "and seeds; only the training data differs. `unfiltered` uses every pair; `clean-*` "
             "acts on the pairs the detectors flagged (remove, flip the label, or soften it); "
             "`random` removes as many pairs as cleaning does, but chosen at random. The random "
             "control is what tells *better* data from merely *less* data. `aa` (when run) is "
             "`unfiltered` again with other seeds: the A/A control, whose difference from "
             "`unfiltered` is what the seeds alone produce.")
    table = Table(["Condition", "Training data", "Train pairs"], rows)
    return Section("What was compared", [intro, table])


def _mcnemar_cell(comp: Comparison) -> str:
    return "; ".join(f"seed {m['seed']}: {m['b']} vs {m['c']}, {format_p(m['p'])}"
                     for m in comp["mcnemar"]) or "— (independent seeds)"


def _ci_cell(comp: Mapping[str, Any]) -> str:
    lo, hi = interval_of(comp)[1]
    return "—" if lo is None or hi is None else f"{100 * lo:+.1f} to {100 * hi:+.1f}"


def _diff_cell(comp: Mapping[str, Any]) -> str:
    diff = interval_of(comp)[0]
    return "—" if diff is None else f"{100 * diff:+.1f}"


def _test_cell(record: Mapping[str, Any]) -> str:
    """The decisive test's p, and after Holm: 'p = 0.044 (Holm p = 0.240)'."""
    block = record.get("test") or record.get("pooled") or (record if "ci" in record else None)
    if block is None or block.get("p") is None:
        return "—"
    holm = f" (Holm {format_p(record['p_holm'])})" if record.get("p_holm") is not None else ""
    return f"{format_p(block['p'])}{holm}"


def _power_cell(comp: Comparison) -> str:
    """The smallest difference this experiment finds with 80% power, for the same test."""
    power = comp.get("power")
    if power is None or "method" not in power:  # older files sized another test
        return "—"
    found = power.get("detectable_diff")
    return "out of reach" if found is None else f"±{100 * found:.1f}"


def _comparison_rows(comps: Sequence[Comparison]) -> list[list[str]]:
    return [[f"{c['treated']} vs {c['baseline']}", _diff_cell(c), _ci_cell(c), _test_cell(c),
             _mcnemar_cell(c), _power_cell(c), c["verdict"]] for c in comps]


_TEST_HEADER = "p, test pairs the unit (Holm)"
_COMPARISON_HEADERS = ["Comparison", "Difference (points)", "95% CI (points)", _TEST_HEADER,
                       "McNemar per seed, detail (b vs c, p)",
                       "Detectable with 80% power (points)", "Verdict"]


def _comparisons(results: ResultsDocument) -> Section:
    comps = results.get("comparisons", [])
    intro = ("All models are scored on the same test pairs, so each comparison is paired. The "
             "difference is in percentage points of test accuracy (averaged over seeds and test "
             "pairs). Its 95% CI and p come from one test whose unit is the test pair: each pair's "
             "correctness is averaged over the seeds, the difference is t-tested over the pairs, "
             "and the scatter of the seeds' own differences is added to the variance (Clark's "
             "min F′ for test pairs × seeds, on the cautious side; docs/statistics.md). A pair "
             "scored by 5 seeds is one unit, not 5. A difference is called better or worse "
             "only when its CI excludes 0 (the same as p < 0.05); otherwise 'no detectable "
             "difference'. Holm's p corrects "
             "for every test of this report. McNemar's exact test per seed is detail: 'b vs c' "
             "= pairs only the first model got right vs pairs only the second got right, for one "
             "seed. The power column is the smallest difference this test finds with 80% power at "
             "α = 0.05 with this many test pairs and seeds.")
    table = Table(_COMPARISON_HEADERS, _comparison_rows(comps))
    return Section("Is the difference real?", [intro, table, Figure(
        "comparisons", "Accuracy difference per comparison with its 95% CI (test pairs the unit, "
        "seed variance included). Bars crossing the vertical line at 0 show no detectable "
        "difference.")])


def _arm_accuracy(arm: ArmBlock) -> str:
    return pct(arm["summary"].get("accuracy_mean"))


def _dose_table(dose: DoseResponse) -> Table:
    rows = [[f"{100 * p['fraction']:g}%", count(p["count"]), count(p["flagged_among"]),
             _arm_accuracy(p["detector"]), _arm_accuracy(p["random"]),
             _diff_cell(p["comparison"]), _ci_cell(p["comparison"]),
             _test_cell(p["comparison"])] for p in dose["points"]]
    name = dose["rank_by"]  # table cells are escaped by the renderer
    return Table(["Fraction", "Pairs treated", f"Of them flagged by {name}",
                  f"Accuracy, top by {name}", "Accuracy, random", "Difference (points)",
                  "95% CI (points)", _TEST_HEADER], rows)


def _curve_text(dose: DoseResponse) -> str:
    curve = dose["curve_test"]
    return (f"{escape_markdown(dose['verdict'])} The whole-curve test: {curve['method']} "
            f"({curve['cells']} seed × fraction cells; {_test_cell(curve)}). The cells share "
            f"the test pairs and, per seed, the random choices, so they are not independent "
            f"replicates: each seed's differences are averaged over the fractions first.")


def _dose_response(results: ResultsDocument) -> Section | None:
    doses = results.get("dose_response") or []
    if not doses:
        return None
    first = doses[0]
    intro = (f"Instead of one threshold, a curve. At each fraction the training pairs "
             f"{escape_markdown(first['rank_by'])} scores most suspect are treated (ranked by "
             f"score; {first['ranking']}), and, as the control, the same number of pairs chosen at "
             f"random (the random choices grow with the fraction, as the top-ranked ones do). If "
             f"the detector finds real label noise, its curve rises above the random one. Both "
             f"arms train over the same seeds and are scored on the same test pairs.")
    blocks: list[Block] = [intro, Figure(
        "dose_response", "Top: test accuracy per arm, mean over seeds with a 95% band; dots are "
        "single seeds; fraction 0 is the unfiltered condition. Bottom: the paired difference "
        "(detector − random) per fraction with its 95% CI (test pairs the unit, seed variance included).")]
    for dose in doses:
        if len(doses) > 1:
            blocks.append(f"**Treatment: {dose['treatment']}.**")
        blocks += [_dose_table(dose), _curve_text(dose)]
    return Section("Dose-response: the detector's ranking vs random", blocks)


def _ablation(results: ResultsDocument) -> Section | None:
    entries = results.get("ablation") or []
    if not entries:
        return None
    rows = [[e["detector"], count(e["flagged"]), _arm_accuracy(e["clean"]),
             _arm_accuracy(e["random"]), _diff_cell(e["comparison"]), _ci_cell(e["comparison"]),
             _test_cell(e["comparison"]),
             "same runs as the clean vs random comparison" if e.get("reused") else ""]
            for e in entries]
    text = ("Each detector on its own: its flagged pairs treated "
            f"({entries[0]['treatment']}) vs as many pairs chosen at random, so a detector is "
            "judged by its own flags rather than by the union the clean conditions use. "
            "Detectors that flagged nothing in the training pool are left out.")
    return Section("Per-detector ablation", [text, Table(
        ["Detector", "Flagged", "Accuracy, its flags treated", "Accuracy, random", "Difference "
         "(points)", "95% CI (points)", _TEST_HEADER, "Note"], rows),
        Figure("ablation", "Each detector's flags vs a random choice of the same size: 95% CI "
               "of the accuracy difference (test pairs the unit, seed variance included).")])


def _strength(results: ResultsDocument) -> Section | None:
    block = results.get("strength")
    if not block:
        return None
    share, accuracy = block["share_negative"], block.get("held_out_accuracy")
    bound = (f" What bounds it: those models are {100 * accuracy:.1f}% accurate on pairs they "
             f"never trained on (1 − that = {100 * (1 - accuracy):.1f}%). A judge with held-out "
             f"accuracy a puts about 1 − a of the pairs below 0 even when no label is wrong, so "
             f"the share measures the judges' own errors together with any label noise; only "
             f"the part above 1 − a, or a pair's strength, points at the labels."
             if accuracy is not None else
             " It is bounded by the judges' own held-out accuracy a: with no label noise at all "
             "about 1 − a of the pairs fall below 0.")
    ref = block.get("reference")
    compared = (f" {escape_markdown(ref['source'])} reports about {100 * ref['share']:.0f}% for "
                f"{escape_markdown(ref['dataset'])}, measured with fine-tuned reward-model "
                f"ensembles, far stronger judges: the two shares are not comparable as measures "
                f"of label noise." if ref else "")
    text = (f"Preference strength: for every training pair, the margin r(chosen) − r(rejected) "
            f"of reward models that never trained on it ({escape_markdown(block['detector'])}). "
            f"A negative mean margin means models trained on the other pairs prefer the rejected "
            f"reply: a candidate label error, a pair on which the data disagree with themselves, "
            f"or simply a pair the models get wrong. Here {100 * share:.1f}% of "
            f"{count(block['pairs'])} pairs are below 0.{bound}{compared}")
    return Section("Preference strength", [text, Figure(
        "strength", "Histogram of the per-pair mean held-out margin; bars left of 0 (vermilion) "
        "are pairs the models would label the other way. The box says what the models' own "
        "held-out errors would put there with no label noise.")])


def _multiplicity(results: ResultsDocument) -> Section | None:
    mult = results.get("multiplicity")
    if not mult or mult["tests"] <= 1:
        return None
    rows = [[label, format_p(p), format_p(adj)]
            for label, p, adj in zip(mult["labels"], mult["p"], mult["p_holm"])]
    curves = "; a dose-response curve counts once" if results.get("dose_response") else ""
    text = (f"This report makes {mult['tests']} paired tests: each comparison counts once, with "
            f"the test pair as the unit and the seeds' variance included{curves}; the per-seed "
            f"McNemar p-values are single-seed views of the same comparisons, not further tests. "
            f"At α = {mult['alpha']}, about {mult['tests'] * mult['alpha']:.1f} of them would come "
            f"out 'significant' by chance alone. Holm's correction controls the chance of even one "
            f"false finding among all of them: {mult['significant']} of the {mult['tests']} had a "
            f"95% CI excluding 0 (p < {mult['alpha']}) before it, {mult['significant_holm']} "
            f"after. Only those after it are claimed in the answer above.")
    return Section("All tests, corrected for multiplicity", [text, Table(
        ["Test", "p", "Holm-adjusted p"], rows)])


def _accuracy(results: ResultsDocument) -> Section:
    rows = []
    for name, cond in results["conditions"].items():
        s = cond["summary"]
        ci = s.get("accuracy_ci") or [None, None]
        seeds = ", ".join(pct(r["test"].get("accuracy")) for r in cond.get("runs", []))
        rows.append([name, pct(s.get("accuracy_mean")), f"{pct(ci[0])} – {pct(ci[1])}", seeds,
                     num(s.get("reward_gap_mean")), num(s.get("nll_mean")),
                     num(s.get("ece_mean"))])
    first = next(iter(results["conditions"].values()))["summary"]
    kind = first.get("accuracy_ci_kind", "t over seeds")
    how = (" It counts each test pair once, with its correctness averaged over the seeds (how far "
           "the accuracy would move on another test set of this size), and adds the seeds' "
           "scatter beyond that (how far it would move with other seeds), as the comparisons do. "
           "The seeds' own accuracies are the 'Per seed' column." if kind.startswith("t over test")
           else " It resamples the test pairs with each pair's correctness averaged over the seeds."
           if kind.startswith("bootstrap") else "")
    note = (f"Accuracy = share of test pairs where the model gives the human-chosen response the "
            f"higher reward (ties count as wrong). The interval is a 95% CI ({kind}).{how} NLL is "
            f"the Bradley-Terry test loss (lower is better; {LN2:.3f} = guessing); ECE is the "
            f"calibration error (0 = perfectly calibrated).")
    table = Table(["Condition", "Test accuracy", "95% CI", "Per seed", "Mean reward margin",
                   "NLL", "ECE"], rows)
    baseline = learning_by_condition(results)[1]
    rule = (f", and '{_rule_name(baseline)} response' ({pct(baseline['accuracy'])}), the stronger "
            f"length rule" if baseline else "")
    return Section("Test accuracy", [note, table, Figure(
        "accuracy", f"Diamonds: mean over seeds with its 95% CI ({kind}). Dots: single seeds. "
        f"Dashed lines: coin flip{rule}.")])


def notebook_cells(conditions: Mapping[str, Any]) -> list[list[str]]:
    """The notebook table's rows as display strings, one row per run (condition, seed): the
    notebook had one run per condition, and a count averaged over seeds (301.5 correct) is no
    count. Shared by Markdown, HTML and the PNG."""
    return [[name, str(run["seed"]), count(run.get("train_pairs")),
             pct(run.get("train_accuracy"), 2), num(run.get("train_loss"), 4),
             pct(run["test"].get("accuracy"), 2), count(run["test"].get("correct")),
             count(run["test"].get("n")), num(run["test"].get("reward_gap_mean"), 4)]
            for name, cond in conditions.items() for run in _runs(cond)]


def _runs(cond: Mapping[str, Any]) -> list[RunRecord]:
    return list(cond.get("runs", []))


def _notebook(results: ResultsDocument) -> Section:
    text = ("The same numbers in the layout of the original notebook, which compared one "
            "filtered run with one unfiltered run (62.18% vs 62.33%) without a control or a "
            "significance test: one row per run (condition and seed), so every count is a count. "
            "A gap that size is well inside run-to-run noise; the sections above are what tell "
            "whether a gap is real.")
    table = Table(_NOTEBOOK_HEADERS, notebook_cells(results.get("conditions", {})))
    image = Figure("notebook_table", "The same table as an image, for slides.", in_html=False)
    return Section("Results in the original notebook's format", [text, table, image])


def _reviewed_cell(v: Mapping[str, Any]) -> str:
    """'62.5% (31–86%) of 8' from a detector's reviewed precision; '—' before any review."""
    precision, ci = v.get("precision"), v.get("precision_ci")
    if precision is None or not v.get("reviewed"):
        return "—"
    interval = f" ({100 * ci[0]:.0f}–{100 * ci[1]:.0f}%)" if ci else ""
    return f"{100 * precision:.1f}%{interval} of {v['reviewed']:,}"


def _flags(results: ResultsDocument) -> Section:
    flags = results.get("flags", {})
    rows = [[d, count(v["flagged"]), pct(v["rate"]), num(v.get("threshold"), 3),
             str(v.get("threshold_kind", "")), _reviewed_cell(v)]
            for d, v in flags.get("detectors", {}).items()]
    union = flags.get("union", {})
    rows.append(["any detector (union)", count(union.get("flagged")), pct(union.get("rate")),
                 "", "", ""])
    text = ("Pairs in the training pool each detector flagged. `clean-*` conditions act on the "
            "union. A threshold is 'fixed' when set in advance, 'percentile' when it flags a "
            "fixed share, 'data' when derived from the data. Reviewed precision: the share of "
            "the detector's flags that reviewers confirmed (`rewardlab review`; TP / (TP + FP) "
            "over the decided flags of the whole dataset, Wilson 95% CI, and how many).")
    return Section("What the detectors flagged", [
        text, Table(["Detector", "Flagged", "Rate", "Threshold", "Threshold kind",
                     "Reviewed precision"], rows),
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
               "calibrated. Below it a model is over-confident (right less often than it is "
               "sure); above it under-confident (right more often than it is sure), as models "
               "that barely trained are: their margins, and so their confidence, stay near 50% "
               "while their ranking is already better than a coin flip.")])
    return [margins, calibration]


def _length(results: ResultsDocument) -> Section:
    rows, test = [], None
    for name, cond in results["conditions"].items():
        tests = [r["test"] for r in cond.get("runs", [])]
        test = test or next(iter(tests), None)
        rows.append([name, _mean_str(tests, "length_reward_corr"),
                     _mean_str(tests, "length_gap_corr")])
    longer = test.get("longer_wins_accuracy") if test else None
    shorter = test.get("shorter_wins_accuracy") if test else None
    baseline = learning_by_condition(results)[1]
    stronger = (f" The stronger rule, '{_rule_name(baseline)}', is the baseline every accuracy in "
                f"this report is measured against." if baseline else "")
    text = (f"Reward models often learn 'longer is better'. On these test pairs, always picking "
            f"the longer response is right {pct(longer)} of the time, always picking the shorter "
            f"one {pct(shorter)} (equal lengths count half to each).{stronger} The correlations "
            f"(Pearson r, mean over seeds) show how much each model's rewards follow response "
            f"length (in characters): positive means longer responses get higher rewards, negative "
            f"means shorter ones do, and values near 0 mean length is not what the model scores.")
    return Section("Does the model just reward length?", [text, Table(
        ["Condition", "r(reward, length) over all responses",
         "r(margin, length difference) over pairs"], rows)])


def _mean_str(tests: Sequence[Mapping[str, Any]], key: str) -> str:
    vals = [t[key] for t in tests if t.get(key) is not None]
    return num(float(np.mean(vals)), 3) if vals else "—"


def _subsets(results: ResultsDocument) -> Section | None:
    conds = results["conditions"]
    names = sorted({s for c in conds.values() for r in c.get("runs", [])
                    for s in r["test"].get("accuracy_by_subset", {})})
    if len(names) < 2:
        return None  # one subset: the accuracy table already says it all
    rows = []
    for name, cond in conds.items():
        by = [r["test"]["accuracy_by_subset"] for r in cond.get("runs", [])]
        rows.append([name] + [pct(float(np.mean([b[s]["accuracy"] for b in by if s in b])))
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
               f"Loss falling below ln 2 ≈ {LN2:.3f} means the model learned something; less "
               f"than {BARELY_TRAINED_NATS:.3f} below it counts as barely trained (see 'How much "
               f"each model learned').")])


_GLOSSARY = Table(["Term", "Meaning"], [
    ["Bradley-Terry (BT)", "P(A preferred to B) = σ(r(A) − r(B)); the reward model is trained to "
     "maximise this for the chosen response."],
    ["margin / reward gap", "r(chosen) − r(rejected) on one pair."],
    ["accuracy", "share of test pairs with margin > 0."],
    ["95% CI", "95% confidence interval: the range of values the data are compatible with."],
    ["points", "percentage points: 62.3% vs 61.1% is a difference of 1.2 points."],
    ["test pairs as the unit", "a test pair scored by S seeds' models counts once (its "
     "correctness averaged over the seeds), not S times: the seeds share its difficulty."],
    ["seed variance", "how much the accuracy moves with the training seed; it enters every CI "
     "here, so few seeds give wide intervals."],
    ["McNemar (exact)", "binomial test on the pairs where two models disagree; here per seed, as "
     "detail."],
    ["A/A control", "`aa`: the unfiltered data trained again with other seeds; its difference "
     "from unfiltered is what seeds alone produce, the noise floor of the setup."],
    ["dose-response", "accuracy as a function of how many pairs are treated, here the detector's "
     "most suspect pairs against as many random ones."],
    ["Holm's correction", "multiplies the smallest of k p-values by k, the next by k − 1, …: "
     "keeps the chance of any false 'significant' among all tests at α."],
    ["power", "the chance a test finds a real difference of a given size; 80% is the usual "
     "target."],
    ["NLL", "negative log-likelihood, the BT loss on test pairs; 0.693 = guessing."],
    ["ECE", "expected calibration error: average |confidence − accuracy| over 10 bins."],
    ["seed", "random initialisation and data order; repeats show run-to-run noise."],
])


def build_sections(results: ResultsDocument) -> list[Section]:
    """The report's content in reading order; optional parts are left out when absent."""
    rated = bool(results.get("rated"))  # tie and ranking conditions (report/rated.py)
    sections = [_header(results), _answer(results),
                rated_conditions(results) if rated else _conditions(results)]
    # the learning yardstick is ln 2, the BT loss: listwise and tie-model losses have others
    sections += [s for s in (None if rated else _learning(results),) if s]
    if results.get("comparisons"):
        sections.append(_comparisons(results))
    if rated:
        sections.append(rated_metrics(results))
    sections += [s for s in (_dose_response(results), _ablation(results), _strength(results),
                             _multiplicity(results)) if s]
    sections += [_accuracy(results), _notebook(results)]
    if results.get("flags", {}).get("detectors"):
        sections.append(_flags(results))
    sections += _margins_and_calibration(results) + [_length(results)]
    sections += [s for s in (_subsets(results), _training(results), teaching_section(results)) if s]
    sections.append(Section("Glossary", [Table(_GLOSSARY.headers, _GLOSSARY.rows + RATED_GLOSSARY)
                                         if rated else _GLOSSARY]))
    sections.append(Section("Reproduce", [
        "The full configuration and data fingerprints (sha256 over the pairs) as saved in "
        "results.json:", json.dumps(to_jsonable({"config": results.get("config", {}),
                                                 "data": results.get("data", {})}), indent=2)],
        kind="code"))
    return sections


def write_report(results: ResultsDocument, out_dir: Path) -> dict[str, Path]:
    """Write results.json, report.md, report.html and the figures into `out_dir`.

    Parameters
    ----------
    results : ResultsDocument
        An experiment's results (`run_comparison` builds them; a results.json read back works
        too). Non-finite floats are written as null; parts an older results.json lacks (dose
        response, ablation, strength, multiplicity) are left out of the report.
    out_dir : Path
        Where the files go; created if missing, files of the same names replaced.

    Returns
    -------
    dict of str to Path
        {"results": …, "markdown": …, "html": …, <figure name>: …} paths.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clean: ResultsDocument = to_jsonable(results)  # non-finite floats are None from here on
    paths = {"results": out_dir / "results.json"}
    paths["results"].write_text(json.dumps(clean, indent=2, allow_nan=False) + "\n")
    figures = make_figures(clean, out_dir)
    if any(cond.get("runs") for cond in clean.get("conditions", {}).values()):
        figures["notebook_table"] = plot_table(
            _NOTEBOOK_HEADERS, notebook_cells(clean["conditions"]),
            out_dir / "notebook_table.png",
            title="Results in the original notebook's format (one row per run)")
    teaching = {f"teaching:{k}": v
                for k, v in teaching_figures(clean.get("teaching") or {}).items()}
    sections = build_sections(clean)
    paths["markdown"] = out_dir / "report.md"
    paths["markdown"].write_text(render_markdown(sections, {**figures, **teaching}, out_dir))
    paths["html"] = out_dir / "report.html"
    paths["html"].write_text(render_html(sections, {**figures, **teaching}))
    return {**paths, **figures}
