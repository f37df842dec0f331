"""The shared figure style: it applies while a figure is drawn and never leaks into rcParams."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

from rewardlab.experiment.teaching import plot_bt_curves, plot_detector_quality, plot_quality_vs_reward
from rewardlab.report.build import write_report
from rewardlab.report.style import REPORT_RC, TEACHING_RC, styled
from tests._results_fixture import PNG_MAGIC, build_results


def _rc_inside(rc: dict[str, Any]) -> dict[str, Any]:
    @styled(rc)
    def inside() -> dict[str, Any]:
        now = {str(key): value for key, value in matplotlib.rcParams.items()}
        return {key: now[key] for key in rc}

    return inside()


def test_styled_sets_the_style_only_inside_the_call() -> None:
    before = dict(matplotlib.rcParams)
    assert _rc_inside(REPORT_RC) == REPORT_RC
    assert _rc_inside(TEACHING_RC) == TEACHING_RC
    assert dict(matplotlib.rcParams) == before


def test_teaching_and_report_figures_leave_rcparams_unchanged(tmp_path: Path) -> None:
    before = dict(matplotlib.rcParams)
    rng = np.random.default_rng(0)
    quality = rng.normal(size=50)  # (50,)
    paths = [plot_bt_curves(tmp_path / "teach" / "bt.png"),
             plot_detector_quality({"oof_margin": {"precision": 0.8, "recall": 0.7, "flagged": 9,
                                                   "true_issues": 10}}, tmp_path / "teach" / "dq.png")]
    corr = plot_quality_vs_reward(quality, quality + rng.normal(size=50), tmp_path / "teach" / "q.png")
    assert 0.0 < corr < 1.0
    written = write_report(build_results(n_test=60, seeds=(0,)), tmp_path / "report")
    paths += [p for p in written.values() if p.suffix == ".png"]
    assert len(paths) >= 8
    for path in paths:
        assert path.read_bytes()[:8] == PNG_MAGIC, path
    changed = sorted(k for k in before if matplotlib.rcParams[k] != before[k])
    assert not changed, changed
