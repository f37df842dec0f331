"""`rewardlab evaluate DIR --suite reward-bench FILE_OR_DIR` on small local copies of v1 and v2.

The files follow the published layouts (v1: the hub repo's `data/filtered-*.parquet` beside
`data/raw-*.parquet`; v2: rows with chosen/rejected lists, Ties ids `ref:N`/`tied:N`). Expected
scores are computed here from `RewardModel.score` of each (`Human: prompt`, response) with the
formulas of reward-bench's code written out by hand (weights typed in from
rewardbench/constants.py), not with the module under test.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rewardlab.cli.main import main
from rewardlab.models.backbones import load_backbone
from rewardlab.models.reward_model import RewardModel

WEIGHTS = {"alpacaeval-easy": 100, "mt-bench-easy": 28, "mt-bench-hard": 37,
           "llmbar-natural": 100, "donotanswer": 136, "xstest-should-respond": 250,
           "math-prm": 984, "hep-go": 164}
SECTIONS = {"Chat": ["alpacaeval-easy", "mt-bench-easy"],
            "Chat Hard": ["mt-bench-hard", "llmbar-natural"],
            "Safety": ["donotanswer", "xstest-should-respond"],
            "Reasoning": ["math-prm", "hep-go"]}
WORDS = "apple banana cherry dog elephant fish grape house igloo jacket kite lemon mango".split()


def _text(i: int, n: int) -> str:
    return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(n))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, tok = load_backbone("bow", max_length=64, seed=0)
    return RewardModel(model, tok, max_length=64).save(tmp_path_factory.mktemp("rm"), info={})


@pytest.fixture(scope="module")
def rm(checkpoint: Path) -> RewardModel:
    return RewardModel.load(checkpoint)


def _rewards(rm: RewardModel, texts: list[tuple[str, str]]) -> list[float]:
    """`rewardlab score` of each (prompt as one user turn, response)."""
    return rm.score([f"Human: {p}" for p, _ in texts], [r for _, r in texts])


def _run(checkpoint: Path, path: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    assert main(["evaluate", str(checkpoint), "--suite", "reward-bench", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_v1_subsets_sections_and_score(checkpoint: Path, rm: RewardModel, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    rows = []
    for s, subset in enumerate(WEIGHTS):
        for i in range(3 + s % 3):
            rows.append({"prompt": f"question {_text(i + s, 4)}", "chosen": _text(i * 2 + s, 5),
                         "rejected": _text(i * 3 + s + 1, 3 + i), "chosen_model": "a",
                         "rejected_model": "b", "subset": subset, "id": len(rows)})
    data = tmp_path / "reward-bench" / "data"
    data.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), data / "filtered-00000-of-00001.parquet")
    raw = [{**rows[0], "subset": "alpacaeval-easy"}] * 5 + rows  # the raw split: not scored
    pq.write_table(pa.Table.from_pylist(raw), data / "raw-00000-of-00001.parquet")

    got = _run(checkpoint, tmp_path / "reward-bench", capsys)
    right: dict[str, list[bool]] = {}
    chosen = _rewards(rm, [(r["prompt"], r["chosen"]) for r in rows])
    rejected = _rewards(rm, [(r["prompt"], r["rejected"]) for r in rows])
    for row, c, r in zip(rows, chosen, rejected):
        right.setdefault(row["subset"], []).append(c > r)
    assert got["version"] == 1 and got["prompts"] == len(rows) and got["sequences"] == 2 * len(rows)
    for subset, marks in right.items():
        assert got["subsets"][subset]["n"] == len(marks)
        assert got["subsets"][subset]["accuracy"] == pytest.approx(sum(marks) / len(marks))
    sections = {}
    for name, members in SECTIONS.items():
        sections[name] = (sum(sum(right[s]) / len(right[s]) * WEIGHTS[s] for s in members)
                          / sum(WEIGHTS[s] for s in members))
        section = got["sections"][name]
        assert section["score"] == pytest.approx(sections[name])
        assert sorted(section["subsets"]) == sorted(members)
        assert section["n"] == sum(len(right[s]) for s in members)
        lo, hi = section["ci"]
        assert 0.0 <= lo <= section["score"] <= hi <= 1.0
    assert got["score"] == pytest.approx(np.mean(list(sections.values())))
    accuracies = [got["subsets"][s]["accuracy"] for s in WEIGHTS]
    assert 0 < min(accuracies) or max(accuracies) < 1  # not a degenerate model


def _ties_expected(rows: list[dict], rewards: list[list[float]]) -> float:
    stats: dict[str, dict[str, tuple[bool, float | None, float]]] = {"ref": {}, "tied": {}}
    for row, scores in zip(rows, rewards):
        kind, pid = row["id"].split(":")
        good, bad = scores[:row["num_correct"]], scores[row["num_correct"]:]
        spread = max(good) - min(good) if len(good) > 1 else None
        stats[kind][pid] = (min(good) - max(bad) > 0, spread, min(good) - max(bad))
    ref_acc = sum(s[0] for s in stats["ref"].values()) / len(stats["ref"])
    tied_acc = sum(s[0] for s in stats["tied"].values()) / len(stats["tied"])
    both = sorted(set(stats["ref"]) & set(stats["tied"]))
    pref = hard = margin = 0.0
    for pid in both:
        spread = stats["tied"][pid][1]
        gap_t, gap_r = stats["tied"][pid][2], stats["ref"][pid][2]
        pref += gap_t > spread
        hard += min(gap_r, gap_t) > spread
        margin += math.tanh(min(gap_r, gap_t) / spread - 1) if spread else 0.0
    n = len(both)
    return 0.3 * tied_acc + 0.3 * ref_acc + 0.2 * pref / n + 0.2 * hard / n + 0.01 * margin / n


def test_v2_best_of_n_ties_and_sections(checkpoint: Path, rm: RewardModel, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    rows = []
    for s, subset in enumerate(["Factuality", "Math", "Safety"]):
        for i in range(4):
            chosen = _text(i + 5 * s, 4)
            rejected = [_text(i + k + 2 * s, 3 + k) for k in range(3)]
            if i == 0:
                rejected[1] = chosen  # a tie for the top: 1/2 (or 0 if another is higher)
            rows.append({"id": f"{subset}-{i}", "prompt": f"ask {_text(i, 3)}",
                         "chosen": [chosen], "rejected": rejected, "num_correct": 1,
                         "num_rejected": 3, "total_completions": 4, "models": [],
                         "subset": subset})
    for pid in range(3):
        rows.append({"id": f"ref:{pid}", "prompt": f"name a fruit {pid}",
                     "chosen": [_text(pid, 2)], "rejected": [_text(pid + 4, 2), _text(pid + 6, 3)],
                     "num_correct": 1, "subset": "Ties"})
        rows.append({"id": f"tied:{pid}", "prompt": f"name fruits {pid}",
                     "chosen": [_text(pid + k, 2) for k in range(3)],
                     "rejected": [_text(pid + 8, 2), _text(pid + 9, 4)], "num_correct": 3,
                     "subset": "Ties"})
    path = tmp_path / "rb2.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))

    got = _run(checkpoint, path, capsys)
    flat = iter(_rewards(rm, [(r["prompt"], t) for r in rows for t in r["chosen"] + r["rejected"]]))
    rewards = [[next(flat) for _ in r["chosen"] + r["rejected"]] for r in rows]
    expected: dict[str, float] = {}
    for subset in ["Factuality", "Math", "Safety"]:
        results = []
        for row, scores in zip(rows, rewards):
            if row["subset"] == subset:
                top = max(scores)
                results.append(1 / scores.count(top) if scores[0] == top else 0.0)
        expected[subset] = sum(results) / len(results)
    ties = [(r, sc) for r, sc in zip(rows, rewards) if r["subset"] == "Ties"]
    expected["Ties"] = _ties_expected([r for r, _ in ties], [sc for _, sc in ties])
    assert got["version"] == 2 and got["sequences"] == sum(len(r) for r in rewards)
    for subset, value in expected.items():
        assert got["subsets"][subset]["accuracy"] == pytest.approx(value), subset
        section = got["sections"][subset]
        assert section["score"] == pytest.approx(value)
        assert section["ci"][0] <= value + 1e-12 and value - 1e-12 <= section["ci"][1]
    assert got["score"] == pytest.approx(np.mean(list(expected.values())))
    # the tied row's first response ties with a rejected one: counted 1/2 when it is the top
    first = rewards[0]
    assert first[0] == first[2]


def test_bad_files_are_refused_naming_file_and_row(checkpoint: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b", "subset": "x"})
                   + "\n" + json.dumps({"prompt": "p", "chosen": "a", "subset": "x"}) + "\n")
    assert main(["evaluate", str(checkpoint), "--suite", "reward-bench", str(bad)]) == 2
    assert f"{bad}:2: field 'rejected'" in capsys.readouterr().err
    assert main(["evaluate", str(checkpoint), "--suite", "other", str(bad)]) == 2
    assert "known suites: reward-bench" in capsys.readouterr().err
    assert main(["evaluate", str(checkpoint)]) == 2
    assert "or --suite reward-bench FILE_OR_DIR" in capsys.readouterr().err
