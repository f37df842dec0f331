"""The report's parts for compare's tie and ranking conditions (issue 32): the answer table, what
was compared, the ranking and tie metrics per condition and their differences, glossary rows.

Read from results.json's `rated` block (`experiment/analysis.py`); `report/build.py` puts them in
place of the cleaning experiment's parts when the block is there. A difference is worded better or
worse only where its 95% CI excludes 0 (and, in the verdict, survives Holm's correction).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rewardlab.evaluation.crossed import interval_of, p_value
from rewardlab.evaluation.rated_verdict import METRIC_LABELS
from rewardlab.report.cells import pct
from rewardlab.report.render import Section, Table

if TYPE_CHECKING:
    from rewardlab.report.results import MetricSummary, ResultsDocument

__all__ = ["RATED_QUESTION", "rated_answer_table", "rated_conditions", "rated_metrics",
           "RATED_GLOSSARY"]

RATED_QUESTION = "How should ties and rankings be used to train the reward model?"
RATED_GLOSSARY = [
    ["tie handling", "`ties-drop` leaves tied pairs out (the reference: what users do today), "
     "`ties-soft` trains them towards P = 1/2, `ties-model` makes a tie an outcome of a "
     "Bradley-Terry model with ties (Davidson) whose tie parameter trains along."],
    ["ranking use", "`best-worst` keeps one pair per prompt, its best vs its worst response (the "
     "reference: UltraFeedback binarized); `all-pairs` trains every decided pair of the K "
     "responses; `listwise` the Plackett-Luce likelihood of the ranking."],
    ["Kendall's tau", "agreement of a prompt's K rewards with its K true scores, −1 to 1 (tau-b, "
     "ties corrected); mean over test prompts."],
    ["best-of-K accuracy", "share of test prompts whose highest-reward response is a best one."],
    ["tie NLL", "−log P(the outcome: win, tie or loss) under the tie model, nats per pair; "
     "ln 3 = 1.099 is a uniform guess."],
]


def _metric_cell(summary: MetricSummary | None, *, percent: bool = False) -> str:
    """'0.812 (0.79 to 0.83)' or in percent; '—' where the condition has no such metric."""
    if summary is None:
        return "—"
    lo, hi = summary["ci"]
    if percent:
        ci = "" if lo is None or hi is None else f" ({100 * lo:.1f} to {100 * hi:.1f})"
        return f"{100 * summary['mean']:.1f}%{ci}"
    ci = "" if lo is None or hi is None else f" ({lo:.3f} to {hi:.3f})"
    return f"{summary['mean']:.3f}{ci}"


def _vs_reference(results: ResultsDocument, name: str, reference: str) -> str:
    if name == reference:
        return "(reference)"
    comp = next((c for c in results.get("comparisons", [])
                 if c["treated"] == name and c["baseline"] == reference), None)
    if comp is None:
        return "—"
    diff, (lo, hi) = interval_of(comp)
    if diff is None or lo is None or hi is None:
        return "—"
    return f"{100 * diff:+.1f} ({100 * lo:+.1f} to {100 * hi:+.1f})"


def rated_answer_table(results: ResultsDocument) -> Table:
    """One row per condition: accuracy, its difference from the reference, the ranking metrics."""
    rated = results["rated"]
    rows = []
    for name, block in rated["conditions"].items():
        summary = results["conditions"][name]["summary"]
        metrics = block["metrics"]
        rows.append([name, block["group"], pct(summary.get("accuracy_mean")),
                     _vs_reference(results, name, block["reference"]),
                     _metric_cell(metrics.get("kendall_tau")),
                     _metric_cell(metrics.get("best_of_k_accuracy"), percent=True)])
    return Table(["Condition", "Group", "Test accuracy (decided pairs)",
                  "vs reference, points (95% CI)", "Kendall's tau (95% CI)",
                  "Best-of-K (95% CI)"], rows)


def rated_conditions(results: ResultsDocument) -> Section:
    """What was compared: each condition's training data, against which reference."""
    rated = results["rated"]
    intro = (f"Every condition trains the same reward model with the same settings and seeds on "
             f"the same {rated['train_prompts']:,} rated training prompts ({rated['train_ties']:,} "
             f"tied pairs among them); only how their ties and rankings are used differs. Every "
             f"model is scored on the same test set: the decided pairs of "
             f"{rated['test_prompts']:,} test prompts (their {rated['test_ties']:,} tied pairs "
             f"are not in it), and on the prompts' K responses for the ranking metrics. Tie "
             f"handling is compared with `ties-drop`, ranking use with `best-worst`: what users "
             f"do today. The training losses differ in kind (ties-model: the 3-way NLL of win, tie "
             f"and loss; listwise: the Plackett-Luce NLL of K responses, ln K! when guessing), "
             f"so a training curve compares with its own condition's only.")
    rows = [[name, block["group"], block["description"],
             str(results["conditions"][name].get("description") or ""),
             str(results["conditions"][name]["summary"].get("train_pairs") or "—")]
            for name, block in rated["conditions"].items()]
    return Section("What was compared", [intro, Table(
        ["Condition", "Group", "Training", "Its runs' data", "Decided train pairs"], rows)])


def _difference_rows(differences: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for d in differences:
        diff, (lo, hi) = interval_of(d)
        p = (d.get("test") or {}).get("p")
        rows.append([f"{d['treated']} vs {d['baseline']}", METRIC_LABELS.get(d["metric"], d["metric"]),
                     "—" if diff is None else f"{diff:+.3f}",
                     "—" if lo is None or hi is None else f"{lo:+.3f} to {hi:+.3f}",
                     "—" if p is None else p_value(p),
                     "—" if d.get("p_holm") is None else p_value(d["p_holm"]), d["verdict"]])
    return rows


def _tie_rows(rated: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for name, block in rated["conditions"].items():
        share, metrics = block.get("tie_share"), block["metrics"]
        if share is None and metrics.get("tie_nll") is None:
            continue
        params = [f"{v:.3f}" for v in block.get("tie_parameter") or [] if v is not None]
        rows.append([name, _metric_cell(metrics.get("tie_accuracy"), percent=True),
                     _metric_cell(metrics.get("tie_nll")),
                     "—" if share is None else f"{share['predicted']:.3f}",
                     "—" if share is None else f"{share['observed']:.3f}",
                     ", ".join(params) or "—"])
    return rows


def rated_metrics(results: ResultsDocument) -> Section:
    """The ranking and tie metrics per condition, and each condition's against its reference."""
    rated = results["rated"]
    text = ("Kendall's tau and best-of-K score each test prompt's K responses against their true "
            "scores. Their 95% CIs treat the test prompt as the unit, each prompt's value averaged "
            "over the seeds and the seeds' scatter added, as the accuracy comparisons treat test "
            "pairs. The differences are paired by seed; they are secondary to the accuracy "
            "comparisons, with Holm's correction over their own family, and called higher or "
            "lower only where the CI excludes 0 and Holm's p is below 0.05.")
    blocks: list[Any] = [text, rated_answer_table(results)]
    if rated["differences"]:
        blocks.append(Table(["Comparison", "Metric", "Difference", "95% CI", "p", "Holm p",
                             "Verdict"], _difference_rows(rated["differences"])))
    ties = _tie_rows(rated)
    if ties:
        blocks += ["With a tie model the reward model also predicts P(tie) for a pair of "
                   "responses; on the test prompts' pairs (ties included) its 3-way accuracy, "
                   "its NLL, and its mean predicted P(tie) against the observed share of ties:",
                   Table(["Condition", "3-way accuracy (95% CI)", "Tie NLL (95% CI)",
                          "Predicted P(tie)", "Observed tie share", "Tie parameter per seed"],
                         ties)]
    return Section("Ranking and tie metrics", blocks)
