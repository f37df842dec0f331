"""write_report on a realistic synthetic results dict: files, valid PNGs, self-contained HTML."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from rewardlab.evaluation.metrics import preference_metrics
from rewardlab.evaluation.stats import compare_runs, notebook_table, overall_verdict, summarize_runs
from rewardlab.report.build import write_report
from rewardlab.report.render import escape_markdown

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# (condition, shift of the reward margin, train pairs): clean-remove is genuinely a bit better.
CONDITIONS = [("unfiltered", 0.0, 1050), ("clean-remove", 0.18, 1013), ("clean-flip", 0.05, 1050),
              ("random", -0.02, 1013)]
DESCRIPTIONS = {"unfiltered": "all 1050 train pairs (37 flagged, kept as they are)",
                "clean-remove": "37 flagged pairs removed",
                "clean-flip": "37 flagged pairs flipped",
                "random": "37 pairs removed at random (as many as clean removes)"}


def _history(rng: np.random.Generator, shift: float, steps: int = 120) -> list[dict]:
    t = np.arange(1, steps + 1)
    loss = 0.693 - (0.12 + shift / 3) * (1 - np.exp(-t / 40)) + rng.normal(0, 0.05, steps)
    acc = 0.5 + (0.15 + shift / 3) * (1 - np.exp(-t / 40)) + rng.normal(0, 0.08, steps)
    return [{"step": int(s), "loss": float(lo), "accuracy": float(np.clip(a, 0, 1)), "lr": 2e-5}
            for s, lo, a in zip(t, loss, acc)]


def _run(seed: int, shift: float, train_pairs: int, base: np.ndarray, lengths: tuple,
         subsets: list[str]) -> dict:
    rng = np.random.default_rng(1000 * seed + int(1000 * shift) + train_pairs)
    gap = base + shift + rng.normal(0, 0.35, base.size)  # (P,) shared difficulty + seed noise
    common = rng.normal(0, 1, base.size)
    chosen, rejected = common + gap / 2, common - gap / 2
    test = preference_metrics(chosen, rejected, chosen_lengths=lengths[0],
                              rejected_lengths=lengths[1], subsets=subsets)
    return {"seed": seed, "train_pairs": train_pairs, "flagged_in_train": 37,
            "train_loss": 0.62 - shift / 10, "train_accuracy": 0.66 + shift / 10, "seconds": 31.5,
            "checkpoint": None, "n_truncated": 12, "history": _history(rng, shift), "test": test,
            "test_chosen_rewards": chosen.tolist(), "test_rejected_rewards": rejected.tolist()}


def build_results(*, n_test: int = 462, seeds: tuple[int, ...] = (0, 1, 2),
                  teaching_dir: Path | None = None) -> dict:
    """A results dict shaped exactly like experiment.run_comparison's, from simulated models."""
    rng = np.random.default_rng(0)
    base = rng.normal(0.35, 1.0, n_test)
    lengths = (rng.integers(20, 900, n_test), rng.integers(20, 900, n_test))
    subsets = ["harmless-base" if i % 3 else "helpful-base" for i in range(n_test)]
    conditions = {}
    for name, shift, n_train in CONDITIONS:
        runs = [_run(s, shift, n_train, base, lengths, subsets) for s in seeds]
        conditions[name] = {"treatment": name.split("-")[1] if "-" in name else None,
                            "description": DESCRIPTIONS[name], "runs": runs,
                            "summary": summarize_runs(runs)}
    comparisons = [compare_runs(t, conditions[t]["runs"], b, conditions[b]["runs"])
                   for t in conditions if t.startswith("clean-") for b in ("unfiltered", "random")]
    results = {
        "rewardlab_version": "0.1.0", "created": "2025-01-01T12:00:00+00:00", "seconds": 412.0,
        "config": {"train": "harmless-sample.jsonl.gz", "test": None, "preset": "quick",
                   "seeds": list(seeds), "conditions": list(conditions),
                   "treatments": ["remove", "flip"], "detectors": ["empty_response", "length_ratio",
                                                                   "duplicate_pair"],
                   "train_config": {"model": "minilm", "epochs": 1, "batch_size": 8, "lr": 2e-5,
                                    "max_length": 256, "precision": "auto"}, "max_pairs": 1050},
        "data": {"train": {"dataset": "harmless-sample", "source": "harmless-sample.jsonl.gz",
                           "pairs": 1050, "fingerprint": "ab" * 32},
                 "test": {"dataset": "harmless-sample", "pairs": n_test, "fingerprint": "cd" * 32}},
        "flags": {"detectors": {
            "empty_response": {"flagged": 4, "rate": 4 / 1050, "threshold": 0.0,
                               "threshold_kind": "fixed"},
            "length_ratio": {"flagged": 25, "rate": 25 / 1050, "threshold": 8.0,
                             "threshold_kind": "fixed"},
            "duplicate_pair": {"flagged": 11, "rate": 11 / 1050, "threshold": None,
                               "threshold_kind": "data"}},
            "union": {"flagged": 37, "rate": 37 / 1050}},
        "conditions": conditions, "comparisons": comparisons,
    }
    if teaching_dir is not None:
        results["teaching"] = _teaching(teaching_dir)
    results["notebook_table"] = notebook_table(conditions)
    results["verdict"] = overall_verdict(results)
    return results


def _teaching(out_dir: Path) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(4, 3), dpi=100)
    ax = fig.add_subplot()
    x = np.linspace(-5, 5, 50)
    ax.plot(x, 1 / (1 + np.exp(-x)))
    ax.set_title("P(chosen preferred) vs margin")
    path = out_dir / "teach_bt_curves.png"
    fig.savefig(path)
    return {"noise": 0.2, "injected_flips": 210, "oracle_accuracy": 0.91, "recovered_fraction": 0.8,
            "best_treatment": "clean-remove", "quality_reward_corr": 0.93,
            "detector_quality": {"oof_margin": {"precision": 0.81, "recall": 0.74, "f1": 0.77,
                                                "flagged": 192}},
            "figures": {"bt_curves": str(path)}}


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path.name} is not a PNG"
    return struct.unpack(">II", data[16:24])  # IHDR width, height


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict[str, Path]]:
    out = tmp_path_factory.mktemp("report")
    results = build_results(teaching_dir=out / "teach")
    return results, write_report(results, out)


EXPECTED = {"results", "markdown", "html", "accuracy", "comparisons", "margins", "training_curves",
            "reliability", "flags", "notebook_table"}


def test_every_file_exists_and_pngs_are_sensible(report) -> None:
    _, paths = report
    assert EXPECTED <= set(paths)
    for name, path in paths.items():
        assert path.is_file() and path.stat().st_size > 0, name
        if path.suffix == ".png":
            width, height = _png_size(path)
            assert 400 <= width <= 2000 and 150 <= height <= 1500, (name, width, height)


def test_results_json_round_trips(report) -> None:
    results, paths = report
    loaded = json.loads(paths["results"].read_text())
    assert loaded["verdict"] == results["verdict"]
    assert set(loaded["conditions"]) == {c for c, _, _ in CONDITIONS}
    assert "NaN" not in paths["results"].read_text()


def test_html_is_self_contained_and_says_the_answer(report) -> None:
    results, paths = report
    text = paths["html"].read_text()
    assert "http://" not in text and "https://" not in text
    srcs = re.findall(r'src="([^"]*)"', text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    # every figure except the notebook table's image (shown as a real table), plus the teaching one
    assert len(srcs) == len(EXPECTED) - 4 + 1
    assert "<link" not in text and "<script" not in text
    assert results["verdict"].split(":")[0] in text
    assert "Does cleaning the preference data give a better reward model?" in text
    row = results["notebook_table"][1]
    assert f"{100 * row['test_accuracy']:.2f}%" in text and f"{row['total']:,.0f}" in text
    assert "oof_margin" in text and "0.810" in text  # teaching precision/recall table


def test_markdown_links_figures_and_lists_comparisons(report) -> None:
    results, paths = report
    md = paths["markdown"].read_text()
    for name in ("accuracy.png", "comparisons.png", "notebook_table.png",
                 "teach/teach_bt_curves.png"):
        assert f"]({name})" in md
    for comp in results["comparisons"]:
        assert escape_markdown(comp["verdict"]) in md


def test_report_without_optional_parts(tmp_path: Path) -> None:
    results = build_results(n_test=60, seeds=(0,))
    results["flags"] = {"detectors": {}, "union": {"flagged": 0, "rate": 0.0}}
    for cond in results["conditions"].values():
        for run in cond["runs"]:
            run["history"] = []
    results["seconds"] = float("nan")  # NaN must become null, not break the JSON
    paths = write_report(results, tmp_path)
    assert "flags" not in paths and "training_curves" not in paths
    assert json.loads(paths["results"].read_text())["seconds"] is None
    assert "t over test pairs (1 seed" in paths["html"].read_text()  # the CI kind is stated


HOSTILE = "<script>alert(1)</script> | *x* _y_ `z` [a](b)"


def _hostile_results() -> dict:
    """Data-derived text (dataset, source path, model, detector, subset) that is markup."""
    results = build_results(n_test=60, seeds=(0,))
    results["data"]["train"].update(dataset=f"ds {HOSTILE}", source=f"dir/{HOSTILE}.jsonl")
    results["config"]["train_config"]["model"] = f"model {HOSTILE}"
    flags = results["flags"]["detectors"]
    flags[f"det {HOSTILE}"] = flags.pop("length_ratio")
    for cond in results["conditions"].values():
        for run in cond["runs"]:
            by = run["test"]["accuracy_by_subset"]
            by[f"sub {HOSTILE}"] = by.pop("helpful-base")
    return results


def test_text_from_the_data_is_escaped_in_html(tmp_path: Path) -> None:
    text = write_report(_hostile_results(), tmp_path)["html"].read_text()
    assert "<script" not in text and "<em>x</em>" not in text and "<code>z</code>" not in text
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt; | *x* _y_ `z` [a](b)"
    for where in ("dir/", "model ", "det ", "sub "):  # source path, model, detector, subset
        assert where + escaped in text, where


def _unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def test_text_from_the_data_is_escaped_in_markdown(tmp_path: Path) -> None:
    text = write_report(_hostile_results(), tmp_path)["markdown"].read_text()
    # the Reproduce section's ```json block shows the config verbatim, as code (JSON-quoted, so no
    # line of it can start a ``` that would close the fence); everything before it is prose/tables
    md, _, code = text.partition("```json\n")
    assert code.count("```") == 1 and '"model": "model <script>' in code
    assert "<script>" not in md and "</script>" not in md and "*x*" not in md and "`z`" not in md
    escaped = r"\<script\>alert(1)\</script\> \| \*x\* \_y\_ \`z\` \[a\](b)"
    for where in ("dir/", "model ", "det ", "sub "):
        assert where + escaped in md, where
    for line in md.splitlines():  # every table row keeps its column count
        if line.startswith("| Detector |"):
            header_pipes = _unescaped_pipes(line)
        if line.startswith("| det "):
            assert _unescaped_pipes(line) == header_pipes


def test_markdown_escape_round_trips_through_the_html_renderer() -> None:
    from rewardlab.report.render import Section, escape_markdown, render_html

    page = render_html([Section("t", [f"**bold** then {escape_markdown(HOSTILE)}"])], {})
    assert "<strong>bold</strong> then &lt;script&gt;alert(1)&lt;/script&gt; | *x* _y_ `z` " \
           "[a](b)" in page
