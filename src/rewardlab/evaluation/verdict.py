"""The report's verdict paragraph: "does cleaning my preference data give me a better reward model?"

Built only from numbers the statistics already computed (each comparison's pair-unit test and
sentence, the dose-response curves' tests, the Holm summary, the power estimates), so it never
claims more than they support: a difference is claimed only where a test's 95% CI excludes 0 *and*
it survives Holm's correction over every test the report makes (`claims_difference`), so under no
effect the verdict claims one in at most α of experiments (tests/evaluation/test_calibration_sim.py); a CI
that excludes 0 on its own is reported as not conclusive. The A/A control (`aa`: unfiltered
again with other seeds) is read as the setup's noise floor. Always said: how large an experiment
would resolve what was seen. Before the detail it warns when the models barely trained and says
how far the best one is above the stronger trivial length rule (`evaluation.learning`).
`verdict_parts` keeps the three groups apart, so the report can put its table between the answer
and the detail. Reads results dicts (schema: docs/architecture.md), so an older results.json
without the newer blocks gets the older paragraph.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from statistics import median
from typing import Any, TypedDict

from rewardlab.evaluation.crossed import direction, format_p, interval_of
from rewardlab.evaluation.learning import (
    BARELY_TRAINED_NATS,
    LN2,
    barely_trained,
    learning_by_condition,
)
from rewardlab.evaluation.power import ALPHA, POWER

__all__ = ["overall_verdict", "verdict_parts", "claims_difference", "VerdictParts",
           "AA_CONDITION"]

AA_CONDITION = "aa"  # the A/A control's name (experiment.config.CONDITIONS spells it the same)
_NOT_TREATMENTS = ("unfiltered", "random", AA_CONDITION)


def _points(x: float) -> str:
    return f"{100 * x:.1f}"


def _count(n: int) -> str:
    return f"{n:,}"


def _find(comparisons: Sequence[Mapping[str, Any]], treated: str, baseline: str
          ) -> dict[str, Any] | None:
    return next((dict(c) for c in comparisons
                 if c["treated"] == treated and c["baseline"] == baseline), None)


def _holm_tests(results: Mapping[str, Any]) -> int:
    return int((results.get("multiplicity") or {}).get("tests") or 0)


def _firm(record: Mapping[str, Any] | None) -> bool:
    """What the verdict may claim: the 95% CI excludes 0 and the test survives Holm's correction
    over the report's tests (a record not corrected, with no Holm p, is judged by its CI)."""
    if record is None or direction(record) == 0:
        return False
    p_holm = record.get("p_holm")
    return p_holm is None or float(p_holm) < ALPHA


def _tested_records(results: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every record a test decided: comparisons, dose points and curves, ablations."""
    yield from results.get("comparisons", [])
    for dose in results.get("dose_response") or []:
        yield from (p["comparison"] for p in dose.get("points", []))
        if dose.get("curve_test"):
            yield dose["curve_test"]
    yield from (e["comparison"] for e in results.get("ablation") or [] if not e.get("reused"))


def claims_difference(results: Mapping[str, Any]) -> bool:
    """Whether the verdict claims any difference: some test's CI excludes 0 and survives Holm."""
    return any(_firm(r) for r in _tested_records(results))


def _treatment_names(results: Mapping[str, Any]) -> list[str]:
    """Conditions that clean the data: all but the unfiltered baseline and the two controls."""
    return [c for c in results.get("conditions", {}) if c not in _NOT_TREATMENTS]


def _best_treatment(results: Mapping[str, Any]) -> str | None:
    conds = results.get("conditions", {})
    scored = [(conds[c]["summary"].get("accuracy_mean"), c) for c in _treatment_names(results)]
    scored = [(a, c) for a, c in scored if a is not None]
    return max(scored)[1] if scored else None


def _not_after_holm(results: Mapping[str, Any]) -> str:
    return f"not after correcting for the {_holm_tests(results)} tests this report makes"


def _dose_headline(results: Mapping[str, Any]) -> str:
    """The answer when no clean condition ran: the dose-response curves against random removal."""
    doses = results.get("dose_response") or []
    if not doses:
        return "No cleaning condition was run, so this report cannot answer the question."
    firm = [d for d in doses if _firm(d.get("curve_test"))]
    ups = [d for d in firm if _curve_direction(d) > 0]
    if ups:
        names = ", ".join(f"{d['rank_by']} ({d['treatment']})" for d in ups)
        return (f"Yes, on this test set: treating the pairs ranked most suspect by {names} beat "
                f"treating as many random pairs.")
    if firm:
        names = ", ".join(f"{d['rank_by']} ({d['treatment']})" for d in firm)
        return (f"No: treating the pairs ranked most suspect by {names} did worse than treating "
                f"as many random pairs.")
    hinted = [d for d in doses if _curve_direction(d) != 0]
    if hinted:
        return (f"Not conclusively: a curve's 95% CI excludes 0 on its own, but "
                f"{_not_after_holm(results)}; that is within what chance produces.")
    return ("No evidence that it does: treating the pairs the detector ranks most suspect did "
            "not differ detectably from treating as many random pairs.")


def _headline(results: Mapping[str, Any], comps: Sequence[Mapping[str, Any]]) -> str:
    """The direct answer, driven by the treatments' comparisons against unfiltered data; only
    differences that survive Holm's correction are claimed (`_firm`)."""
    treatments = _treatment_names(results)
    if not treatments:
        return _dose_headline(results)
    found = {t: _find(comps, t, "unfiltered") for t in treatments}
    dirs = {t: direction(c) for t, c in found.items()}
    better = [t for t, d in dirs.items() if d > 0 and _firm(found[t])]
    worse = [t for t, d in dirs.items() if d < 0 and _firm(found[t])]
    hinted = [t for t, d in dirs.items() if d != 0 and not _firm(found[t])]
    if better:
        return f"Yes, on this test set: {', '.join(better)} beat training on unfiltered data."
    if worse and len(worse) == len(dirs):
        return "No: every cleaning treatment made the reward model worse than unfiltered data."
    if worse:
        return (f"No improvement was shown: {', '.join(worse)} made the model worse and no other "
                f"treatment differed detectably from unfiltered data.")
    if hinted:
        side = "above" if dirs[hinted[0]] > 0 else "below"
        return (f"Not conclusively: {hinted[0]}'s 95% CI against unfiltered data lies {side} 0 "
                f"on its own, but {_not_after_holm(results)}; that is within what chance "
                f"produces, so no cleaning treatment is shown to differ.")
    return ("No evidence that it does: no cleaning treatment differed detectably from "
            "training on unfiltered data.")
def _control_treatment(results: Mapping[str, Any], comps: Sequence[Mapping[str, Any]]
                       ) -> str | None:
    """The treatment to judge against the control: one that beat unfiltered, else the best."""
    with_control = [t for t in _treatment_names(results) if _find(comps, t, "random")]
    winners = [t for t in with_control if direction(_find(comps, t, "unfiltered")) > 0]
    conds = results["conditions"]
    pool = winners or with_control
    return max(pool, key=lambda t: conds[t]["summary"].get("accuracy_mean") or 0.0, default=None)


_CONTROL_MEANING = {  # (vs random, vs unfiltered) -> what the control says
    (1, 1): "so the gain comes from which pairs were cleaned, not from training on fewer pairs",
    (0, 1): "so this run cannot tell cleaner data from merely less data",
    (-1, 1): "so a random subset of the same size did even better: less data, not cleaner data, "
             "explains the gain",
    (1, 0): "so the cleaned data beat a random subset of the same size, though not the full data",
    (1, -1): "so the cleaned data beat a random subset of the same size, though not the full data",
}


def _control_sentence(results: Mapping[str, Any], comps: Sequence[Mapping[str, Any]]) -> str:
    """Why the random control exists, and what it says here."""
    if not _treatment_names(results):
        return ""
    if "random" not in results.get("conditions", {}):
        return ("There was no random-subset control, so a gain from cleaning cannot be told apart "
                "from a gain from simply training on fewer pairs.")
    lead = ("The random control removes as many pairs as cleaning does, but at random: clean vs "
            "random tells better data from less data.")
    treated = _control_treatment(results, comps)
    if treated is None:
        return lead
    comp = _find(comps, treated, "random")
    if comp is None:
        return lead
    key = (direction(comp), direction(_find(comps, treated, "unfiltered")))
    meaning = _CONTROL_MEANING.get(key, "so the cleaned data did not beat a random subset of the "
                                        "same size" if key[0] <= 0 else "")
    return f"{lead} {comp['verdict'][:-1]}; {meaning}." if meaning else f"{lead} {comp['verdict']}"


def _curve_direction(dose: Mapping[str, Any]) -> int:
    return direction(dose.get("curve_test"))


def _dose_sentences(results: Mapping[str, Any]) -> list[str]:
    return [d["verdict"] for d in results.get("dose_response") or [] if d.get("verdict")]


def _ablation_sentence(results: Mapping[str, Any]) -> str:
    """Each detector's own flags vs a random removal of the same size, in one sentence."""
    entries = [e for e in results.get("ablation") or [] if not e.get("reused")]
    if not entries:  # none, or only the clean vs random comparison already said
        return ""
    decided = [e for e in entries if direction(e["comparison"]) != 0]
    lead = (f"Per-detector ablation ({len(entries)} detector{'s' if len(entries) != 1 else ''}, "
            f"each detector's own flagged pairs vs as many random pairs)")
    if not decided:
        return (f"{lead}: no detector's flags differed detectably from a random choice of the "
                f"same size.")
    said = "; ".join(e["comparison"]["verdict"].rstrip(".") for e in decided)
    rest = len(entries) - len(decided)
    tail = (f"; the other {rest} show no detectable difference" if rest else "")
    return f"{lead}: {said}{tail}."


def _strength_sentence(results: Mapping[str, Any]) -> str:
    """The share of pairs below 0, with what bounds it: the judges' own held-out accuracy."""
    block = results.get("strength") or {}
    share, n = block.get("share_negative"), block.get("pairs")
    if share is None or not n:
        return ""
    lead = (f"{block['detector']}: {100 * share:.1f}% of the {_count(n)} training pairs have a "
            f"negative mean margin across models that never trained on them")
    accuracy = block.get("held_out_accuracy")
    caveat = ""
    if accuracy is not None:
        caveat = (f"; the models that produced those margins are {100 * accuracy:.1f}% accurate on "
                  f"pairs they never trained on, and a judge with accuracy a puts about 1 − a of "
                  f"the pairs below 0 with no label noise at all, so the share measures the "
                  f"judges' errors together with any label noise, not label noise alone")
    ref = block.get("reference") or {}
    compared = (f". {ref['source']} reports about {100 * ref['share']:.0f}% for {ref['dataset']} "
                f"from fine-tuned reward-model ensembles, far stronger judges, so the two shares "
                f"are not comparable as measures of noise" if ref.get("share") is not None else "")
    return f"{lead}{caveat}{compared}."


def _aa_sentence(results: Mapping[str, Any], comps: Sequence[Mapping[str, Any]]) -> str:
    """What the A/A control (unfiltered again, other seeds) says about this setup's noise."""
    comp = _find(comps, AA_CONDITION, "unfiltered")
    if comp is None:
        return ""
    diff, (lo, hi) = interval_of(comp)
    if diff is None or lo is None or hi is None:
        return ""
    p = (comp.get("test") or {}).get("p")
    lead = (f"A/A control ({AA_CONDITION}: the unfiltered data again, trained with other seeds): "
            f"{100 * diff:+.1f} points against unfiltered (95% CI {100 * lo:+.1f} to "
            f"{100 * hi:+.1f}{'' if p is None else ', ' + format_p(p)})")
    if _firm(comp):
        return (f"{lead}. It differs though only the seeds differ: this setup's seed noise is "
                f"larger than the tests allow for, so read every difference above with suspicion.")
    if direction(comp) != 0:
        return (f"{lead}: its CI excludes 0 on its own but {_not_after_holm(results)}, as happens "
                f"by chance in about 1 test in 20.")
    return (f"{lead}: no detectable difference, as it should be. Seeds alone move the accuracy by "
            f"up to about ±{_points((hi - lo) / 2)} points here: the noise floor of this setup.")


def _headline_comparison(results: Mapping[str, Any], comps: Sequence[Mapping[str, Any]]
                         ) -> Mapping[str, Any] | None:
    """The comparison the power sentence sizes: best treatment vs unfiltered, else the first."""
    best = _best_treatment(results)
    comp: Mapping[str, Any] | None = _find(comps, best, "unfiltered") if best else None
    if comp is None or comp.get("power") is None:
        comp = next((c for c in comps if c.get("power")), None)
    return comp


def _power_sentence(comp: Mapping[str, Any] | None) -> str:
    """What this experiment resolves, for the comparisons' own test (test pairs the unit, seed
    variance included), and what would resolve the observed difference, with 80% power."""
    power = (comp or {}).get("power")
    if not power or power.get("diff") is None or comp is None or "method" not in power:
        return ""  # none, or an older results.json's power for another test
    target = f"with {100 * POWER:.0f}% power at α = {ALPHA}"
    n_pairs, n_seeds = power["test_pairs"], power["seeds"]
    design = (f"With {_count(n_pairs)} test pairs and {n_seeds} seed{'s' if n_seeds != 1 else ''} "
              f"per condition")
    detectable = power.get("detectable_diff")
    finds = (f"{design}, the comparisons' test (test pairs as the unit, the seeds' variance "
             f"included) finds differences of about ±{_points(detectable)} points {target}."
             if detectable is not None else
             f"{design}, the comparisons' test cannot reach {100 * POWER:.0f}% power for any "
             f"difference.")
    if not power["diff"]:
        return finds
    what = f"{comp['treated']} vs {comp['baseline']}"
    pairs_needed, seeds_needed = power.get("test_pairs_needed"), power.get("seeds_needed")
    pairs = (f"about {_count(pairs_needed)} test pairs at {n_seeds} seeds" if pairs_needed else
             "no number of test pairs at these seeds (the seeds' variance alone is too large)")
    seeds = (f"about {_count(seeds_needed)} seeds on these test pairs" if seeds_needed else
             "no number of seeds on these test pairs (the test pairs' variance alone is too large)"
             if n_seeds > 1 else
             "more seeds (one seed says nothing of the seeds' variance)")
    return (f"{finds} To find the observed {100 * power['diff']:+.1f}-point difference of {what} "
            f"{target} would take {pairs}, or {seeds}.")


def _resolution_sentence(comps: Sequence[Mapping[str, Any]], results: Mapping[str, Any]) -> str:
    """How small a difference this experiment can resolve: the typical CI half-width."""
    cis = [interval_of(c)[1] for c in comps]
    halves = [(hi - lo) / 2 for lo, hi in cis if lo is not None and hi is not None]
    if not halves:
        return ""
    seeds = len(results.get("config", {}).get("seeds", [])) or None
    n_test = results.get("data", {}).get("test", {}).get("pairs")
    setup = " and ".join(x for x in (f"{seeds} seed{'s' if seeds != 1 else ''}" if seeds else "",
                                     f"{n_test} test pairs" if n_test else "") if x)
    return (f"With {setup or 'this setup'}, the 95% intervals are about ±{_points(median(halves))} "
            f"points wide: effects smaller than that need more test pairs or seeds to resolve.")


def _multiplicity_sentence(results: Mapping[str, Any]) -> str:
    """The Holm summary, said so it cannot read against the per-seed McNemar counts: these tests
    are one per comparison (or curve), the test pair the unit, not the single-seed tests."""
    mult = results.get("multiplicity") or {}
    k = int(mult.get("tests") or 0)
    if k <= 1:
        return ""
    raw, held = mult.get("significant", 0), mult.get("significant_holm", 0)
    survivors = [label for label, p in zip(mult.get("labels", []), mult.get("p_holm", []))
                 if p < ALPHA]
    named = f" ({', '.join(survivors[:3])}{', …' if len(survivors) > 3 else ''})" if survivors else ""
    curves = " (a dose-response curve counts once)" if results.get("dose_response") else ""
    return (f"Counting each comparison once{curves}, with the test pair as the unit and the "
            f"seeds' variance included, this report makes {k} tests, so about {k * ALPHA:.1f} "
            f"would have a 95% CI excluding 0 by chance alone: {raw} of the {k} did, {held} "
            f"after Holm's correction{named}."
            + (" The per-seed McNemar counts above look at single seeds of the same comparisons; "
               "they are not further tests." if _per_seed_quoted(results) else ""))


def _per_seed_quoted(results: Mapping[str, Any]) -> bool:
    """Whether a comparison's sentence quotes McNemar counts over several seeds."""
    return any(len(c.get("mcnemar") or []) > 1 for c in results.get("comparisons", []))


def _teaching_sentence(results: Mapping[str, Any]) -> str:
    teaching = results.get("teaching") or {}
    frac = teaching.get("recovered_fraction")
    if frac is None:
        return ""
    best = teaching.get("best_treatment") or _best_treatment(results) or "the best treatment"
    noise = teaching.get("noise")
    where = f"with {100 * noise:.0f}% of labels flipped" if noise is not None else "label noise"
    if frac <= 0:
        return (f"In this synthetic demo ({where}), {best} recovered none of the accuracy lost to "
                f"noise.")
    return (f"In this synthetic demo ({where}), {best} recovered an estimated {100 * frac:.0f}% of "
            f"the accuracy lost to noise (point estimate, mean over seeds).")


def _span(values: Sequence[float | None], digits: int) -> str:
    """'0.686–0.689', or one value when they agree to the digits shown."""
    vals = sorted(v for v in values if v is not None)
    lo, hi = f"{vals[0]:.{digits}f}", f"{vals[-1]:.{digits}f}"
    return lo if lo == hi else f"{lo}–{hi}"


def _learning_sentence(results: Mapping[str, Any]) -> str:
    """The caution when the comparison is between near-untrained models (`evaluation.learning`)."""
    learning, _ = learning_by_condition(results)
    weak = barely_trained(learning)
    if not weak:
        return ""
    who = "every model" if len(weak) == len(learning) else f"the {', '.join(weak)} models"
    loss = _span([learning[c]["train_loss"] for c in weak], 3)
    margin = _span([learning[c]["mean_margin"] for c in weak], 2)
    return (f"Caution: {who} barely trained (train loss {loss} against ln 2 = {LN2:.3f} for "
            f"guessing, mean test margin {margin}; barely = less than {BARELY_TRAINED_NATS:.3f} nats "
            f"below ln 2), so this compares near-untrained models and says little about cleaning: "
            f"train longer (--epochs) before reading the differences.")


def _baseline_sentence(results: Mapping[str, Any]) -> str:
    """The best model against the stronger trivial length rule, in points."""
    learning, baseline = learning_by_condition(results)
    scored = [(ln["accuracy"], c) for c, ln in learning.items() if ln["accuracy"] is not None]
    if baseline is None or not scored:
        return ""
    accuracy, best = max(scored)
    rule = f"always preferring the {baseline['rule']} reply ({100 * baseline['accuracy']:.1f}%)"
    over = 100 * (accuracy - baseline["accuracy"])
    if over <= 0:
        return (f"No model beat the trivial rule of {rule}: the best, {best}, "
                f"reached {100 * accuracy:.1f}%.")
    return (f"The best model ({best}, {100 * accuracy:.1f}%) is {over:.1f} points above "
            f"{rule}, the stronger of the two length rules on these test pairs.")


class VerdictParts(TypedDict):
    """The verdict in reading order: the direct answer, cautions, then the detail sentences."""

    headline: str
    cautions: list[str]  # near-untrained models; the best model against the length rule
    details: list[str]


def verdict_parts(results: Mapping[str, Any]) -> VerdictParts:
    """The verdict's sentences, grouped so the report can put a table between answer and detail."""
    comps = results.get("comparisons", [])
    details = [c["verdict"] for c in comps
               if c["baseline"] == "unfiltered" and c["treated"] in _treatment_names(results)]
    details += [_control_sentence(results, comps), _aa_sentence(results, comps),
                *_dose_sentences(results),
                _ablation_sentence(results), _strength_sentence(results),
                _resolution_sentence(comps, results),
                _power_sentence(_headline_comparison(results, comps)),
                _multiplicity_sentence(results), _teaching_sentence(results)]
    cautions = [_learning_sentence(results), _baseline_sentence(results)]
    return {"headline": _headline(results, comps), "cautions": [c for c in cautions if c],
            "details": [d for d in details if d]}


def overall_verdict(results: Mapping[str, Any]) -> str:
    """A paragraph answering "does cleaning my preference data give me a better reward model?".

    Built only from the comparisons' pair-unit tests (and, when present, the dose-response tests,
    the Holm summary and the power estimates), so it never claims more than they support; it says
    when the models barely trained and how the best one compares with the stronger length rule.
    """
    parts = verdict_parts(results)
    return " ".join([parts["headline"], *parts["cautions"], *parts["details"]])
