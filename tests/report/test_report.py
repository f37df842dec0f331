"""write_report on a realistic synthetic results dict: files, valid PNGs, self-contained HTML."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

from rewardlab.report.build import write_report
from rewardlab.report.render import escape_markdown
from tests._results_fixture import CONDITIONS, PNG_MAGIC, build_results


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
