"""The report's teaching section: what the synthetic demo knows that real data hides — which labels
were flipped, how well each detector found them, and how ties are best handled (issue 32).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rewardlab.report.cells import count, num, pct
from rewardlab.report.render import Block, Figure, Section, Table, escape_markdown

if TYPE_CHECKING:
    from rewardlab.report.results import ResultsDocument

__all__ = ["TEACH_CAPTIONS", "teaching_figures", "teaching_section", "ties_blocks"]


def teaching_section(results: ResultsDocument) -> Section | None:
    """The synthetic demo's check against the ground truth: flips, detectors, figures, ties."""
    t = results.get("teaching")
    if not t:
        return None
    facts = [f"label noise injected: {pct(t.get('noise'), 0)}" if "noise" in t else "",
             f"flipped training pairs: {count(t.get('injected_flips'))}"
             if "injected_flips" in t else "",
             f"accuracy with the flips undone (the ceiling): {pct(t.get('oracle_accuracy'))}"
             if t.get("oracle_accuracy") is not None else "",
             f"share of the lost accuracy recovered by "
             f"{escape_markdown(t.get('best_treatment', 'the best'))}: "
             f"{pct(t.get('recovered_fraction'), 0)}" if "recovered_fraction" in t else "",
             f"correlation of reward with true quality: {num(t.get('quality_reward_corr'))}"
             if t.get("quality_reward_corr") is not None else ""]
    blocks: list[Block] = ["This run used synthetic data with a known quality function, so we "
                           "know which labels were flipped: " + "; ".join(f for f in facts if f)
                           + "."]
    shares = t.get("dose_flipped_share") or {}
    if shares:
        blocks.append("Of the pairs the dose-response curve treated, the share that really were "
                      "flipped: " + "; ".join(f"top {100 * float(f):g}%: {pct(v, 0)}"
                                               for f, v in shares.items()) + ".")
    quality = t.get("detector_quality") or {}
    if quality:
        blocks.append(Table(["Detector", "Flagged", "Precision", "Recall", "F1"], [
            [d, count(q.get("flagged")), num(q.get("precision")), num(q.get("recall")),
             num(q.get("f1"))] for d, q in quality.items()]))
        blocks.append("Precision: share of flagged pairs that really were flipped. Recall: share "
                      "of flipped pairs that were flagged.")
    for name in teaching_figures(t):
        if name != "ties":  # shown with the ties paragraph, below
            blocks.append(Figure(f"teaching:{name}", TEACH_CAPTIONS.get(name, name)))
    if t.get("ties"):
        blocks += ties_blocks(t["ties"], shown="ties" in teaching_figures(t))
    return Section("Synthetic demo: checking against the ground truth", blocks)


TEACH_CAPTIONS = {
    "bt_curves": "What the Bradley-Terry loss does: loss and P(chosen preferred) vs margin.",
    "quality_vs_reward": "True quality of each test response vs the unfiltered model's reward.",
    "detector_quality": "Detector precision and recall against the injected flips.",
    "ties": "Ties: the tie model's P(tie) (left) and BT's P(better reply wins) (right) against the "
            "true quality gap of each test pair; the black line is the true band.",
}


def ties_blocks(ties: Mapping[str, Any], *, shown: bool) -> list[Block]:
    """The demo's answer to "how would you handle ties?" (issue 32): one paragraph, one figure."""
    h = ties.get("handlings") or {}

    def of(name: str, key: str) -> str:
        return num((h.get(name) or {}).get(key), 2)

    text = (
        f"How would you handle ties? A second synthetic set ({escape_markdown(ties.get('spec'))}) "
        f"has a tie wherever two replies' hidden qualities differ by less than "
        f"{num(ties.get('true_band'), 2)}; one reward model was trained per way of handling "
        f"them, with one seed, so these are one run's numbers, not estimates with an interval. "
        f"Kendall τ of each model's ranking against the hidden quality: ties dropped "
        f"{of('drop', 'kendall_tau')}, soft ½ targets {of('soft', 'kendall_tau')}, tie model "
        f"{of('model', 'kendall_tau')}. Plain BT has no tie outcome: on tied test pairs it "
        f"still gives the better reply a mean P(win) of {of('drop', 'p_better_on_ties')} "
        f"({of('soft', 'p_better_on_ties')} with soft targets). The Davidson tie model learned "
        f"ν = {num(ties.get('tie_parameter'), 2)} (P(tie) {num(ties.get('p_tie_at_equal'), 2)} "
        f"for equal rewards); its mean P(tie) over the {count(ties.get('test_pairs'))} test "
        f"pairs is {num(ties.get('predicted_tie_share'), 2)} against "
        f"{num(ties.get('observed_tie_share'), 2)} observed ({num(ties.get('p_tie_on_ties'), 2)} "
        f"on tied pairs, {num(ties.get('p_tie_on_decided'), 2)} on decided ones), it names the "
        f"right one of win / tie / loss for {pct(ties.get('tie_accuracy'))} of them, and its "
        f"band, the quality gap within which a tie is its most probable call, is "
        f"{num(ties.get('implied_band'), 2)} against the true {num(ties.get('true_band'), 2)}.")
    blocks: list[Block] = [text]
    if shown:
        blocks.append(Figure("teaching:ties", TEACH_CAPTIONS["ties"]))
    return blocks


def teaching_figures(teaching: Mapping[str, Any]) -> dict[str, Path]:
    """Teaching figures that exist on disk, as {name: path} (accepts a dict or a list of paths)."""
    figs = teaching.get("figures") or {}
    items = figs.items() if isinstance(figs, Mapping) else ((Path(p).stem, p) for p in figs)
    return {str(k): Path(v) for k, v in items if Path(v).is_file()}
