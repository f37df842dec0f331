"""Loss options as TRL's RewardTrainer has them: a per-pair `margin` read from a data column (through
files and the store), and reward centering (`--center-rewards-coefficient`); numbers by hand."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import pytest
import torch
from accelerate.utils import set_seed

from rewardlab.data.sources import read_source
from rewardlab.models.backbones import load_backbone
from rewardlab.models.reward_model import RewardModel
from rewardlab.store.store import Store
from rewardlab.training.loop import bradley_terry_loss, train_reward_model
from rewardlab.training.train_config import TrainConfig
from tests._tiny import make_tiny_backbone, planted_pairs


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_loss_with_per_pair_margins_and_centering_by_hand() -> None:
    chosen, rejected, margins = [2.0, -1.0, 0.5], [0.5, 0.0, 1.5], [1.0, 0.0, -0.5]
    rewards = torch.tensor(chosen + rejected)  # (2B,) chosen rows first
    bt = [-_log_sigmoid(c - r - m) for c, r, m in zip(chosen, rejected, margins)]
    center = sum((c + r) ** 2 for c, r in zip(chosen, rejected)) / 3  # (2.5² + 1² + 2²) / 3
    got = bradley_terry_loss(rewards, margin=torch.tensor(margins), center_coefficient=0.01)
    assert float(got) == pytest.approx(sum(bt) / 3 + 0.01 * center, rel=1e-6)
    assert center == pytest.approx(11.25 / 3)
    # a number margin is the same margin for every pair; no coefficient, no centering term
    same = bradley_terry_loss(rewards, margin=torch.tensor([0.3] * 3))
    assert float(same) == pytest.approx(float(bradley_terry_loss(rewards, margin=0.3)), rel=1e-7)
    plain = [-_log_sigmoid(c - r) for c, r in zip(chosen, rejected)]
    assert float(bradley_terry_loss(rewards)) == pytest.approx(sum(plain) / 3, rel=1e-6)


def test_centering_with_smoothing_adds_to_the_conservative_loss() -> None:
    rewards = torch.tensor([1.0, 3.0])  # one pair: chosen 1, rejected 3
    eps = torch.tensor([0.2])
    d = 1.0 - 3.0 - 0.5
    expected = -0.8 * _log_sigmoid(d) - 0.2 * _log_sigmoid(-d) + 0.1 * (1.0 + 3.0) ** 2
    got = bradley_terry_loss(rewards, margin=0.5, smoothing=eps, center_coefficient=0.1)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def _rows(n: int, margins: list[float | None]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for p, m in zip(planted_pairs(n), margins):
        row: dict[str, object] = {"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}
        if m is not None:
            row["margin"] = m
        rows.append(row)
    return rows


def _jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_a_margin_column_gives_each_pair_its_margin(tmp_path: Path) -> None:
    result = read_source(str(_jsonl(tmp_path / "m.jsonl", _rows(3, [0.5, 2, -1.25]))))
    assert [p.margin for p in result.pairs] == [0.5, 2.0, -1.25]
    assert result.pairs[0].meta == {"margin": 0.5}
    without = read_source(str(_jsonl(tmp_path / "n.jsonl", _rows(3, [None] * 3))))
    assert [p.margin for p in without.pairs] == [None] * 3
    # the margin is part of the pair's content: another margin is another pair
    assert result.pairs[0].content_hash != without.pairs[0].content_hash


def test_bad_margins_reject_their_rows_with_the_reason(tmp_path: Path) -> None:
    rows = _rows(5, [1.0, None, None, None, None])
    rows[1]["margin"], rows[2]["margin"], rows[3]["margin"] = None, "wide", True
    rows[4]["margin"] = 1e400  # json.dumps writes Infinity
    result = read_source(str(_jsonl(tmp_path / "bad.jsonl", rows)))
    assert [p.source_index for p in result.pairs] == [0]
    assert result.rejected == [(1, "field 'margin' is null"),
                               (2, "field 'margin' is 'wide', expected a number"),
                               (3, "field 'margin' is bool, expected a number"),
                               (4, "field 'margin' is inf, expected a finite number")]


def test_csv_margins_are_numbers_and_an_empty_cell_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["prompt", "chosen", "rejected", "margin"])
        writer.writeheader()
        writer.writerows(_rows(2, [0.75, 0.0]) + [{**_rows(1, [None])[0], "margin": ""}])
    result = read_source(str(path))
    assert [p.margin for p in result.pairs] == [0.75, 0.0]
    assert result.rejected == [(2, "field 'margin' is '', expected a number")]


def test_margins_survive_the_store(db_url: str, tmp_path: Path) -> None:
    source = read_source(str(_jsonl(tmp_path / "m.jsonl", _rows(4, [0.5, 1.0, 0.0, 3.5]))))
    with Store(db_url) as store:
        store.ingest("d", source)
        assert [p.margin for p in store.load_pairs("d")] == [0.5, 1.0, 0.0, 3.5]


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(make_tiny_backbone(tmp_path_factory.mktemp("tiny-bert")))


def test_training_uses_the_data_margins_and_centering(bert: str, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """The first step's loss (all pairs in one batch, before any update) equals the hand-computed
    TRL loss of the untrained model's rewards: data margin + --margin, plus C · mean((r_c + r_r)²)."""
    margins = [0.25 * (i % 5) - 0.5 for i in range(15)] + [None]  # the last pair has none: 0
    pairs = read_source(str(_jsonl(tmp_path / "m.jsonl", _rows(16, margins)))).pairs
    config = TrainConfig(model=bert, batch_size=16, max_steps=1, max_length=64, precision="fp32",
                         logging_steps=1, seed=3, margin=0.1, center_rewards_coefficient=0.05)
    with caplog.at_level(logging.WARNING, logger="rewardlab"):
        result = train_reward_model(pairs, config=config, progress=False)
    assert "1 of 16 training pairs have no margin" in caplog.text
    set_seed(config.seed)
    model, tok = load_backbone(bert, max_length=64, seed=config.seed)
    chosen, rejected = RewardModel(model, tok, max_length=64).score_pairs(pairs)
    bt = [-_log_sigmoid(c - r - 0.1 - (m or 0.0)) for c, r, m in zip(chosen, rejected, margins)]
    center = sum((c + r) ** 2 for c, r in zip(chosen, rejected)) / 16
    assert result.history[0]["loss"] == pytest.approx(sum(bt) / 16 + 0.05 * center, rel=1e-5)
    # and without them the same step's loss is the plain BT loss of the same rewards
    plain = train_reward_model([p for p in planted_pairs(16)], progress=False,
                               config=TrainConfig(model=bert, batch_size=16, max_steps=1,
                                                  max_length=64, precision="fp32", seed=3))
    by_hand = sum(-_log_sigmoid(c - r) for c, r in zip(chosen, rejected)) / 16
    assert plain.history[0]["loss"] == pytest.approx(by_hand, rel=1e-5)
