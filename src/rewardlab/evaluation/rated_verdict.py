"""The verdict of compare's tie and ranking conditions (issue 32): "how should I use my ties and
rankings?", per group, against the group's reference.

Built only from numbers the statistics computed, like `evaluation/verdict.py`: the accuracy
comparisons on the test prompts' decided pairs (each condition against its reference: tie
handling against `ties-drop`, ranking use against `best-worst`; a claim needs a 95% CI that
excludes 0 and survives Holm's correction over the report's tests), then the ranking metrics'
differences (Kendall's tau, best-of-K: the prompt the unit, Holm over their own family), then
what the tie model recovered. Reads results dicts with a `rated` block (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from statistics import median
from typing import Any

from rewardlab.evaluation.crossed import direction, format_p, interval_of
from rewardlab.evaluation.learning import LN2, learning_by_condition
from rewardlab.evaluation.power import ALPHA
from rewardlab.evaluation.verdict import VerdictParts

__all__ = ["METRIC_LABELS", "rated_verdict_parts", "rated_verdict", "difference_sentence",
           "firm"]

METRIC_LABELS = {"kendall_tau": "Kendall's tau", "best_of_k_accuracy": "best-of-K accuracy",
                 "tie_accuracy": "3-way tie accuracy", "tie_nll": "tie NLL (nats per pair)"}
# conditions whose train loss is the plain BT loss on decided pairs (ln 2 = guessing)
_BT_LOSS = ("ties-drop", "best-worst", "all-pairs")


def firm(record: Mapping[str, Any] | None) -> bool:
    """A difference the verdict may claim: 95% CI excludes 0 and Holm's p is below α."""
    if record is None or direction(record) == 0:
        return False
    p_holm = record.get("p_holm")
    return p_holm is None or float(p_holm) < ALPHA


def _find(comps: Sequence[Mapping[str, Any]], treated: str, baseline: str
          ) -> Mapping[str, Any] | None:
    return next((c for c in comps if c["treated"] == treated and c["baseline"] == baseline), None)


def _group_headline(group: Mapping[str, Any], comps: Sequence[Mapping[str, Any]],
                    tests: int) -> str:
    ref, name = group["reference"], group["name"].capitalize()
    found = {c: _find(comps, c, ref) for c in group["conditions"] if c != ref}
    better = [c for c, r in found.items() if firm(r) and direction(r) > 0]
    worse = [c for c, r in found.items() if firm(r) and direction(r) < 0]
    hinted = [c for c, r in found.items() if direction(r) != 0 and not firm(r)]
    parts = []
    if better:
        parts.append(f"{', '.join(better)} beat {ref}")
    if worse:
        parts.append(f"{', '.join(worse)} did worse than {ref}")
    if parts:
        return (f"{name}: {' and '.join(parts)} in accuracy on the test prompts' decided pairs"
                f"{'; the others did not differ detectably' if len(better + worse) < len(found) else ''}.")
    if hinted:
        return (f"{name}: not conclusively: {hinted[0]}'s 95% CI against {ref} excludes 0 on its "
                f"own, but not after correcting for the {tests} tests this report makes.")
    return (f"{name}: no condition differed detectably from {ref} (the reference) in accuracy on "
            f"the test prompts' decided pairs.")


def difference_sentence(record: Mapping[str, Any]) -> str:
    """One secondary difference (a ranking metric) in words that never overstate."""
    label = METRIC_LABELS.get(record["metric"], record["metric"])
    diff, (lo, hi) = interval_of(record)
    who = f"{record['treated']} vs {record['baseline']}, {label}"
    if diff is None or lo is None or hi is None:
        return f"{who}: not compared."
    p = (record.get("test") or {}).get("p")
    holm = f", Holm {format_p(record['p_holm'])}" if record.get("p_holm") is not None else ""
    numbers = f"{diff:+.3f} (95% CI {lo:+.3f} to {hi:+.3f}" + \
        ("" if p is None else f", {format_p(p)}") + f"{holm})"
    if firm(record):
        return f"{who}: {'higher' if diff > 0 else 'lower'} by {numbers}."
    if direction(record) != 0:
        return f"{who}: {numbers}; the CI excludes 0 only before Holm's correction."
    return f"{who}: no detectable difference, {numbers}."


def _tie_sentence(rated: Mapping[str, Any]) -> str:
    block = (rated.get("conditions") or {}).get("ties-model") or {}
    share, params = block.get("tie_share"), [v for v in block.get("tie_parameter") or []
                                             if v is not None]
    if not share or share.get("predicted") is None:
        return ""
    nll = (block.get("metrics") or {}).get("tie_nll")
    nll_text = (f"; its tie NLL {nll['mean']:.3f} nats per pair (95% CI {nll['ci'][0]:.3f} to "
                f"{nll['ci'][1]:.3f}; ln 3 = 1.099 is a uniform guess)"
                if nll and None not in nll["ci"] else "")
    param = f", tie parameter {sum(params) / len(params):.3f} (mean over seeds)" if params else ""
    return (f"ties-model predicts P(tie) {share['predicted']:.3f} on the test prompts' pairs "
            f"against an observed tie share of {share['observed']:.3f}{param}{nll_text}.")


def _learning_caution(results: Mapping[str, Any]) -> str:
    learning, _ = learning_by_condition(results)
    weak = [c for c in _BT_LOSS if c in learning and learning[c]["barely_trained"]]
    if not weak:
        return ""
    return (f"Caution: {', '.join(weak)} barely trained (train loss within 0.020 nats of ln 2 = "
            f"{LN2:.3f}): train longer (--epochs) before reading the differences.")


def _resolution(comps: Sequence[Mapping[str, Any]], results: Mapping[str, Any]) -> str:
    halves = [(hi - lo) / 2 for lo, hi in (interval_of(c)[1] for c in comps)
              if lo is not None and hi is not None]
    if not halves:
        return ""
    n_test = results.get("data", {}).get("test", {}).get("pairs")
    seeds = len(results.get("config", {}).get("seeds", []))
    return (f"With {seeds} seed{'s' if seeds != 1 else ''} and {n_test} decided test pairs, the "
            f"accuracy intervals are about ±{100 * median(halves):.1f} points wide.")


def rated_verdict_parts(results: Mapping[str, Any]) -> VerdictParts:
    """The answer per group (accuracy vs its reference), cautions, then the detail."""
    rated, comps = results.get("rated") or {}, results.get("comparisons", [])
    tests = int((results.get("multiplicity") or {}).get("tests") or 0)
    groups = rated.get("groups") or []
    headline = " ".join(_group_headline(g, comps, tests) for g in groups) or \
        "No tie or ranking condition was compared with its reference."
    diffs = rated.get("differences") or []
    shown = [d for d in diffs if direction(d) != 0] or diffs[:2]
    details = [c["verdict"] for c in comps]
    details += [f"Ranking metrics on the test prompts (the prompt the unit, seeds crossed; Holm "
                f"over these {len(diffs)} secondary tests): "
                + " ".join(difference_sentence(d) for d in shown)
                + (f" The other {len(diffs) - len(shown)} show no detectable difference."
                   if len(diffs) > len(shown) else "")] if diffs else []
    details += [_tie_sentence(rated), _resolution(comps, results)]
    return {"headline": headline, "cautions": [s for s in (_learning_caution(results),) if s],
            "details": [d for d in details if d]}


def rated_verdict(results: Mapping[str, Any]) -> str:
    """The verdict paragraph of an experiment with tie and ranking conditions."""
    parts = rated_verdict_parts(results)
    return " ".join([parts["headline"], *parts["cautions"], *parts["details"]])
