"""Issue 35.6: the report as an ML researcher reads it, top to bottom.

Each test pins one reading: the baseline is the stronger length rule, near-untrained models are
called so, intervals mean something, the sentences do not contradict each other, the Answer is a
line + a table + the detail, the flags chart and the notebook table say what their captions say,
one unit per quantity everywhere, and the bundled sample knows its subset.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest

from rewardlab.evaluation.crossed import format_p
from rewardlab.evaluation.learning import (
    BARELY_TRAINED_NATS,
    LN2,
    condition_learning,
    stronger_length_baseline,
)
from rewardlab.evaluation.stats import mean_ci, overall_verdict, with_multiplicity
from rewardlab.evaluation.verdict import claims_difference
from rewardlab.report import figures
from rewardlab.report.build import build_sections, notebook_cells
from rewardlab.report.render import Table, render_markdown
from tests._results_fixture import build_results

LONGER, SHORTER = 0.423, 0.577  # HH-RLHF harmless-base: the shorter reply is chosen more often


def _results(*, barely: bool, n_test: int = 200) -> dict[str, Any]:
    """Two seeds on the harmless-base length split; `barely`: train loss 0.686-0.689, ~ln 2."""
    results = build_results(n_test=n_test, seeds=(0, 1))
    for i, cond in enumerate(results["conditions"].values()):
        for run in cond["runs"]:
            run["test"]["longer_wins_accuracy"] = LONGER
            run["test"]["shorter_wins_accuracy"] = SHORTER
            if barely:  # the 0.686-0.689, one value per condition
                run["train_loss"] = 0.686 + i / 1000
    results = with_multiplicity(results)
    results["verdict"] = overall_verdict(results)
    return results


def _markdown(results: dict[str, Any], tmp_path: Path) -> str:
    return render_markdown(build_sections(results), {}, tmp_path)  # text only, no figures


def _section(markdown: str, title: str) -> str:
    return markdown.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


@pytest.fixture(scope="module")
def barely() -> dict[str, Any]:
    return _results(barely=True)


# ---------------------------------------------------------------- the baseline

def test_the_baseline_is_the_stronger_length_rule(barely: dict[str, Any], tmp_path: Path) -> None:
    assert stronger_length_baseline({"longer_wins_accuracy": LONGER,
                                     "shorter_wins_accuracy": SHORTER}) == {
        "rule": "shorter", "accuracy": SHORTER}
    md = _markdown(barely, tmp_path)
    answer = _section(md, "Answer")
    assert "vs 'always prefer the shorter' (57.7%), points" in answer
    accuracy = barely["conditions"]["clean-remove"]["summary"]["accuracy_mean"]
    row = next(line for line in answer.splitlines() if line.startswith("| clean-remove |"))
    assert f"| {100 * (accuracy - SHORTER):+.1f} |" in row  # points over 57.7%, not over 42.3%
    best = max(c["summary"]["accuracy_mean"] for c in barely["conditions"].values())
    assert ("points above always preferring the shorter reply (57.7%)" in answer
            and f"is {100 * (best - SHORTER):.1f} points above" in answer)
    assert "57.7%" in _section(md, "Does the model just reward length?")


def test_the_accuracy_figure_draws_the_stronger_rule(barely: dict[str, Any], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = _capture(monkeypatch)
    figures.plot_accuracy(barely, tmp_path / "accuracy.png")
    texts = [t.get_text() for t in drawn[0].axes[0].texts]
    assert any("always prefer the shorter response: 57.7%" in t for t in texts)
    assert not any("longer" in t for t in texts)


def _capture(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Keep the figures the plot functions would save, to read what they drew."""
    drawn: list[Any] = []
    monkeypatch.setattr(figures, "save", lambda fig, path, **kw: drawn.append(fig) or path)
    return drawn


# ---------------------------------------------------------------- how much each model learned

def test_the_criterion_is_a_calibrated_60_40_model() -> None:
    entropy_60 = -(0.6 * math.log(0.6) + 0.4 * math.log(0.4))
    assert BARELY_TRAINED_NATS == pytest.approx(LN2 - entropy_60) == pytest.approx(0.0201, abs=1e-4)
    run = {"test": {"accuracy": 0.64, "reward_gap_mean": 0.03, "nll": 0.69}}
    just_above = condition_learning([{**run, "train_loss": LN2 - 0.019}], None)
    just_below = condition_learning([{**run, "train_loss": LN2 - 0.021}], None)
    assert just_above["barely_trained"] and not just_below["barely_trained"]
    learning = condition_learning([{**run, "train_loss": 0.686}, {**run, "train_loss": 0.688}],
                                  {"rule": "shorter", "accuracy": SHORTER})
    assert learning["train_loss"] == pytest.approx(0.687)
    assert learning["loss_drop"] == pytest.approx(LN2 - 0.687)
    assert learning["mean_margin"] == pytest.approx(0.03)
    assert learning["over_length_baseline"] == pytest.approx(0.64 - SHORTER)


def test_near_untrained_models_are_called_so(barely: dict[str, Any], tmp_path: Path) -> None:
    md = _markdown(barely, tmp_path)
    answer = _section(md, "Answer")
    assert re.search(r"Caution: every model barely trained \(train loss 0\.686–0\.689 against "
                     r"ln 2 = 0\.693 for guessing, mean test margin [-\d.–]+; barely = less than "
                     r"0\.020 nats below ln 2\)", answer)
    assert "Caution: every model barely trained" in barely["verdict"]  # the console says it too
    learned = _section(md, "How much each model learned")
    rows = [line for line in learned.splitlines() if line.startswith("| unfiltered |")]
    assert rows and rows[0].endswith("| barely |")
    assert "less than 0.020 nats below ln 2" in learned and "H(0.6)" in learned
    # read top to bottom: the caution comes before any comparison is read
    assert md.index("barely trained") < md.index("## Is the difference real?")


def test_trained_models_get_no_caution(tmp_path: Path) -> None:
    trained = _results(barely=False)  # train loss 0.60-0.62: well below ln 2
    md = _markdown(trained, tmp_path)
    assert "Caution" not in md and "barely trained (" not in md
    rows = [line for line in _section(md, "Answer").splitlines() if line.startswith("| random |")]
    assert rows and rows[0].endswith("| yes |")


# ---------------------------------------------------------------- intervals and wording

def test_condition_interval_has_the_test_pairs_and_the_seeds(barely: dict[str, Any],
                                                             tmp_path: Path) -> None:
    summary = barely["conditions"]["unfiltered"]["summary"]
    accs = [r["test"]["accuracy"] for r in barely["conditions"]["unfiltered"]["runs"]]
    assert summary["accuracy_ci_kind"] == "t over test pairs and seeds (crossed)"
    lo, hi = summary["accuracy_ci"]
    p, n = summary["accuracy_mean"], 200
    assert lo < p < hi
    assert (hi - lo) / 2 == pytest.approx(1.96 * math.sqrt(p * (1 - p) / n), rel=0.3)
    assert mean_ci(accs)[2] != pytest.approx(lo)  # not the old t over 2 seeds
    md = _markdown(barely, tmp_path)
    assert "(t over seeds)" not in md and "12.7" not in md
    assert "(t over test pairs and seeds (crossed))" in _section(md, "Test accuracy")


def test_pooled_tests_and_per_seed_counts_do_not_contradict(barely: dict[str, Any]) -> None:
    verdict, mult = barely["verdict"], barely["multiplicity"]
    assert mult["tests"] == 4
    assert re.search(r"McNemar p < 0\.05 in \d of 2 seeds", verdict)
    assert (f"this report makes 4 tests, so about 0.2 would have a 95% CI excluding 0 by chance "
            f"alone: {mult['significant']} of the 4 did, {mult['significant_holm']} after Holm's "
            f"correction") in verdict
    assert "with the test pair as the unit and the seeds' variance included" in verdict
    assert "not further tests" in verdict and "CMH" not in verdict
    assert not re.search(r"; \d+ did,", verdict)  # the old "…by chance alone; 0 did"


def test_tests_cis_holm_counts_and_verdict_agree(barely: dict[str, Any], tmp_path: Path) -> None:
    """Issue 29: one source for every number; 'better'/'worse' iff the CI excludes 0; the Holm
    count counts only those; the headline claims only what survives Holm."""
    comps = barely["comparisons"]
    excluding = 0
    for comp in comps:
        lo, hi = comp["test"]["ci"]
        excludes = lo > 0 or hi < 0
        excluding += excludes
        assert excludes == (comp["test"]["p"] < 0.05)
        assert excludes == any(w in comp["verdict"] for w in (" better than ", " worse than "))
    mult = barely["multiplicity"]
    assert mult["significant"] == excluding
    firm = sum(c["p_holm"] < 0.05 for c in comps)
    assert mult["significant_holm"] == firm and claims_difference(barely) == (firm > 0)
    headline = barely["verdict"].split(".")[0]
    against_unfiltered = any(c["p_holm"] < 0.05 for c in comps if c["baseline"] == "unfiltered")
    assert headline.startswith(("Yes", "No:", "No improvement")) == against_unfiltered
    md = _section(_markdown(barely, tmp_path), "Is the difference real?")
    for comp in comps:
        lo, hi = comp["test"]["ci"]
        assert f"{100 * lo:+.1f} to {100 * hi:+.1f}" in md and format_p(comp["test"]["p"]) in md


def test_the_strength_share_says_what_bounds_it(tmp_path: Path) -> None:
    """Issue 29.6: 38.2% below 0 from 61.8%-accurate heads is what their errors alone give."""
    results = _results(barely=False)
    results["strength"] = {"detector": "preference_strength", "pairs": 1512,
                           "mean_margin": [0.5, -0.2, 0.1], "strength": None,
                           "share_negative": 0.382, "held_out_accuracy": 0.618,
                           "reference": {"dataset": "Anthropic HH-RLHF", "share": 0.25,
                                         "source": "Secrets of RLHF, part II (Wang et al., 2024)"}}
    verdict = overall_verdict(results)
    assert "38.2% of the 1,512 training pairs have a negative mean margin" in verdict
    assert "61.8% accurate on pairs they never trained on" in verdict
    assert "a judge with accuracy a puts about 1 − a of the pairs below 0" in verdict
    assert "from fine-tuned reward-model ensembles" in verdict
    section = _section(_markdown(results, tmp_path), "Preference strength")
    assert "61.8% accurate on pairs they never trained on (1 − that = 38.2%)" in section
    assert "not comparable as measures of label noise" in section


def test_calibration_caption_explains_both_directions(barely: dict[str, Any]) -> None:
    caption = next(b.caption for s in build_sections(barely) if s.title == "Calibration"
                   for b in s.blocks if hasattr(b, "caption"))
    assert "Below it a model is over-confident" in caption
    assert "above it under-confident (right more often than it is sure)" in caption


def test_reliability_figure_names_both_directions(barely: dict[str, Any], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = _capture(monkeypatch)
    figures.plot_reliability(barely, tmp_path / "reliability.png")
    texts = " ".join(t.get_text() for t in drawn[0].axes[0].texts)
    assert "above: under-confident" in texts and "below: over-confident" in texts


# ---------------------------------------------------------------- the Answer's shape

def test_answer_is_a_line_a_table_then_the_detail(barely: dict[str, Any],
                                                  tmp_path: Path) -> None:
    answer = next(s for s in build_sections(barely) if s.title == "Answer")
    headline, table, *detail = answer.blocks
    assert isinstance(headline, str) and headline.startswith("**") and headline.endswith("**")
    assert ". " not in headline.strip("*").rstrip(".") and len(headline.split()) < 40
    assert isinstance(table, Table) and [r[0] for r in table.rows] == list(barely["conditions"])
    assert table.headers[0] == "Condition" and "Trained?" in table.headers
    assert detail and all(isinstance(b, str) for b in detail)
    md = _section(_markdown(barely, tmp_path), "Answer").strip().splitlines()
    assert md[0].startswith("> **") and md[2].startswith("| Condition |")


# ---------------------------------------------------------------- charts and tables

def test_flags_chart_puts_the_union_on_top(barely: dict[str, Any], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = _capture(monkeypatch)
    figures.plot_flags(barely, tmp_path / "flags.png")
    ax = drawn[0].axes[0]
    labels = {tick.get_text(): y for tick, y in zip(ax.get_yticklabels(), ax.get_yticks())}
    assert max(labels, key=labels.__getitem__) == "any detector (union)"
    caption = next(b.caption for s in build_sections(barely) for b in s.blocks
                   if getattr(b, "name", "") == "flags")
    assert "the top bar is their union" in caption


def test_notebook_table_counts_are_counts(barely: dict[str, Any], tmp_path: Path) -> None:
    cells = notebook_cells(barely["conditions"])
    runs = [(name, r) for name, c in barely["conditions"].items() for r in c["runs"]]
    assert len(cells) == len(runs) == 8  # one row per run, as the notebook had
    for row, (name, run) in zip(cells, runs):
        assert row[:2] == [name, str(run["seed"])]
        assert row[6] == str(run["test"]["correct"]) and row[7] == "200"  # integers, no ".5"
    table = _section(_markdown(barely, tmp_path), "Results in the original notebook's format")
    assert "| Condition | Seed |" in table and not re.search(r"\| \d+\.5 \|", table)


# ---------------------------------------------------------------- one unit each

def test_console_prints_points_and_percent(barely: dict[str, Any]) -> None:
    from rewardlab.cli.data import _render_flag
    from rewardlab.cli.experiment import _render_compare

    text = _render_compare(barely, Path("out"))
    comp = barely["comparisons"][0]
    diff, (lo, hi) = comp["test"]["diff"], comp["test"]["ci"]
    assert "Δacc (points)" in text and f"{100 * diff:+.1f}" in text
    assert f"{100 * lo:+.1f} to {100 * hi:+.1f}" in text
    # the p the verdict reads (test pairs the unit) is printed, McNemar's only as per-seed detail
    from rewardlab.evaluation.crossed import format_p

    assert format_p(comp["test"]["p"]) in text and "McNemar p per seed" in text
    acc = barely["conditions"]["unfiltered"]["summary"]["accuracy_mean"]
    assert f"{100 * acc:.1f}%" in text and f"{acc:.4g}" not in text
    flag = _render_flag("hh", 1050, [{"detector": "length_ratio", "flagged": 25,
                                      "rate": 25 / 1050, "threshold": 8.0,
                                      "threshold_kind": "fixed"}], {})
    assert "2.4%" in flag and "0.02381" not in flag


def test_report_prints_points_and_percent(barely: dict[str, Any], tmp_path: Path) -> None:
    md = _markdown(barely, tmp_path)
    flags = _section(md, "What the detectors flagged")
    assert r"| length\_ratio | 25 | 2.4% |" in flags
    comp = barely["comparisons"][0]
    assert f"| {100 * comp['test']['diff']:+.1f} |" in _section(md, "Is the difference real?")


# ---------------------------------------------------------------- the sample's subset

def test_the_bundled_sample_knows_its_subset(tmp_path: Path) -> None:
    from rewardlab.data.sources import SAMPLE, read_source
    from rewardlab.store.store import Store

    result = read_source(SAMPLE, limit=40)
    assert {p.subset for p in result.pairs} == {"harmless-base"}
    counts = Store(f"sqlite:///{tmp_path / 'rl.db'}").ingest("sample", result)
    assert set(counts.by_group) == {"train/harmless-base", "test/harmless-base"}


def test_report_header_names_the_subset(tmp_path: Path) -> None:
    one = _results(barely=True)
    for cond in one["conditions"].values():
        for run in cond["runs"]:
            run["test"]["accuracy_by_subset"] = {
                "harmless-base": {"n": 200, "accuracy": run["test"]["accuracy"]}}
    header = _markdown(one, tmp_path).split("\n## ", 1)[0]
    assert "subset harmless-base (1,050 pairs)" in header


def test_training_curves_draw_the_barely_trained_line(barely: dict[str, Any], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = _capture(monkeypatch)
    figures.plot_training_curves(barely, tmp_path / "training_curves.png")
    levels = [line.get_ydata()[0] for line in drawn[0].axes[0].get_lines()
              if line.get_linestyle() in ("--", ":")]
    assert levels == pytest.approx([LN2, LN2 - BARELY_TRAINED_NATS])
