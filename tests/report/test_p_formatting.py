"""One p-value format (issue 28 item 5): the report, the console table and the verdict print a p
alike: three decimals, '< 0.001' below it, '1' from 0.995 up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rewardlab.cli.experiment import _render_compare
from rewardlab.evaluation.crossed import format_p, p_value
from rewardlab.report.build import _mcnemar_cell


def _results(p_seeds: list[float]) -> Any:
    summary = {"train_pairs": 10, "accuracy_mean": 0.6, "accuracy_std": 0.01,
               "accuracy_ci": [0.5, 0.7], "reward_gap_mean": 0.1}
    return {"conditions": {"unfiltered": {"summary": summary}},
            "comparisons": [{"treated": "clean-remove", "baseline": "unfiltered",
                             "test": {"diff": 0.01, "ci": [-0.01, 0.03], "p": 0.30},
                             "mcnemar": [{"seed": s, "b": 3, "c": 5, "p": p}
                                         for s, p in enumerate(p_seeds)]}],
            "verdict": "v", "seconds": 1.0}


def test_console_and_report_print_each_seed_s_p_alike() -> None:
    results = _results([0.0421, 0.00004, 0.9981])
    console = _render_compare(results, Path("out"))
    # console: the column headed p; before it printed 0.0421, 4e-05, 0.998
    assert "0.042, < 0.001, 1" in console and "4e-05" not in console
    report = _mcnemar_cell(results["comparisons"][0])
    assert report == "seed 0: 3 vs 5, p = 0.042; seed 1: 3 vs 5, p < 0.001; seed 2: 3 vs 5, p = 1"
    assert [format_p(p) for p in (0.0421, 0.00004, 0.9981)] == [
        f"p = {p_value(0.0421)}", f"p {p_value(0.00004)}", f"p = {p_value(0.9981)}"]
