"""Training on rated prompts (issue 32): each response forwarded once per step, the tie model learned,
saved and reloaded, listwise and all-pairs rankings learned, contradictions refused; the pair path
unchanged."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import rewardlab.training.loop as loop
from rewardlab.cli.main import main
from rewardlab.data.rated import RatedPrompt
from rewardlab.data.sources import read_source
from rewardlab.data.synthetic import read_synthetic_rated
from rewardlab.errors import ModelError
from rewardlab.evaluation.rated import evaluate_rated
from rewardlab.models.reward_model import RewardModel
from rewardlab.training.grouped import pairwise_expansion, train_on_rated
from rewardlab.training.loop import train_reward_model
from rewardlab.training.ties import all_pairs_loss, pair_outcome_probs, tie_model_of
from rewardlab.training.train_config import TrainConfig

SPEC = "synthetic:n={n},k=4,ties=0.2,test_n={test_n},seed=0"


def _config(**overrides: Any) -> TrainConfig:
    base: dict[str, Any] = {"model": "bow", "precision": "fp32", "seed": 0, "max_length": 64,
                            "batch_size": 8}
    return TrainConfig(**{**base, **overrides})


def _prompts(n: int, split: str = "train", test_n: int = 0) -> list[RatedPrompt]:
    return read_synthetic_rated(SPEC.format(n=n, test_n=test_n or n), split=split).prompts  # type: ignore[arg-type]


@pytest.fixture
def counted_rows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Rows of every TRAINING forward of the next backbone loaded (scoring forwards not counted)."""
    rows: list[int] = []
    load = loop.load_backbone

    def counting_load(*args: Any, **kwargs: Any) -> Any:
        model, tokenizer = load(*args, **kwargs)

        def hook(module: torch.nn.Module, _args: Any, inputs: dict[str, Any]) -> None:
            if module.training:
                rows.append(int(inputs["input_ids"].shape[0]))

        model.register_forward_pre_hook(hook, with_kwargs=True)
        return model, tokenizer

    monkeypatch.setattr(loop, "load_backbone", counting_load)
    return rows


def test_each_response_is_forwarded_once_per_step(counted_rows: list[int]) -> None:
    prompts = _prompts(24)
    result = train_on_rated(prompts, config=_config(epochs=2, batch_size=4), progress=False)
    # 6 steps an epoch, one forward each, of its 4 prompts × 4 responses: every response once
    assert counted_rows == [16] * 12
    assert result.steps == 12 and result.n_prompts == 24
    assert result.n_pairs + result.n_ties == 24 * 6  # K(K-1)/2 pairs a prompt, from 4 forwards
    expansion = pairwise_expansion(prompts)
    assert len(expansion) == result.n_pairs
    counted_rows.clear()
    train_reward_model(expansion, config=_config(epochs=2, batch_size=4), progress=False)
    # the pairwise expansion forwards 2 rows per decided pair: each response once per decided pair
    # it is in (K-1 = 3 without ties; here 2.3 on average), against once per step above
    assert sum(counted_rows) == 2 * 2 * len(expansion) > 2 * (2 * 24 * 4)


def test_all_pairs_loss_takes_tie_labels_between_different_scores() -> None:
    rewards = torch.tensor([[2.0, 0.0, 1.0]])
    scores = torch.tensor([[3.0, 1.0, 2.0]])
    tied = torch.tensor([[False, False, True]])  # (1, 2) labelled a tie though scores differ
    dropped = all_pairs_loss(rewards, scores, tied=tied)
    pairs_02 = all_pairs_loss(rewards[:, [0, 1]], scores[:, [0, 1]])
    pairs_03 = all_pairs_loss(rewards[:, [0, 2]], scores[:, [0, 2]])
    assert dropped.item() == pytest.approx((pairs_02.item() + pairs_03.item()) / 2)
    soft = all_pairs_loss(rewards, scores, tied=tied, ties="soft")
    half = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(-1.0), torch.tensor(0.5))
    assert soft.item() == pytest.approx((2 * dropped.item() + half.item()) / 3)


def test_tie_model_recovers_the_tie_share_and_round_trips(tmp_path: Path) -> None:
    prompts = _prompts(400, test_n=200)
    result = train_on_rated(prompts, config=_config(epochs=4, ties="model"), output_dir=tmp_path,
                            progress=False)
    test = _prompts(400, split="test", test_n=200)
    metrics = evaluate_rated(result.model, test)
    share = metrics["tie_share"]
    assert share["observed"] == pytest.approx(0.2, abs=0.04)  # 1,200 test pairs drawn at 0.2
    # measured 0.200 (predicted) vs 0.206 (observed) on this seed; ±0.05 is the bar
    assert share["predicted"] == pytest.approx(share["observed"], abs=0.05)
    reloaded = RewardModel.load(tmp_path)
    saved = json.loads((tmp_path / "rewardlab.json").read_text())["ties"]
    assert saved["model"] == "davidson" and saved["parameter"] == result.tie_parameter
    tie = tie_model_of(reloaded.info)
    assert tie is not None and tie.value.item() == pytest.approx(result.tie_parameter, rel=1e-12)
    assert "tie" in (tmp_path / "README.md").read_text().lower()
    a, b = [test[0].responses[0]] * 2, [test[0].responses[1], test[0].responses[0]]
    texts = ["Human: " + test[0].prompt] * 2
    probs = pair_outcome_probs(reloaded, texts, a, b)
    assert np.allclose(probs, pair_outcome_probs(result.model, texts, a, b))
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert probs[1, 1] == pytest.approx(saved["p_tie_at_equal"])  # a response against itself


@pytest.mark.parametrize("ranking", ["pairs", "listwise"])
def test_rankings_reach_kendall_tau_against_hidden_quality(ranking: str) -> None:
    result = train_on_rated(_prompts(400, test_n=200), config=_config(epochs=4, ranking=ranking),
                            progress=False)
    metrics = evaluate_rated(result.model, _prompts(400, split="test", test_n=200))
    assert metrics["kendall_tau"]["value"] >= 0.7, metrics["kendall_tau"]  # measured ~0.9 here
    assert metrics["best_of_k_accuracy"]["value"] >= 0.6
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_soft_ties_and_margins_train() -> None:
    prompts = _prompts(32)
    soft = train_on_rated(prompts, config=_config(ties="soft"), progress=False)
    margin = train_on_rated(prompts, config=_config(margin_from_scores=True), progress=False)
    drop = train_on_rated(prompts, config=_config(), progress=False)
    # the same data, three losses: three different trained models
    losses = {soft.train_loss, margin.train_loss, drop.train_loss}
    assert len(losses) == 3 and all(np.isfinite(list(losses)))
    assert soft.model.info["rated"]["ties_dropped"] == 0 < drop.model.info["rated"]["ties_dropped"]


@pytest.mark.parametrize(("options", "message"), [
    ({"ranking": "listwise", "ties": "soft"}, "ties soft trains pair outcomes"),
    ({"tie_model": "rao-kupper"}, "tie_model rao-kupper applies to --ties model"),
    ({"margin_from_scores": True, "ties": "model"}, "margin_from_scores is a pairwise BT margin"),
    ({"ties": "maybe"}, "ties must be one of drop, soft, model"),
])
def test_contradicting_options_are_refused_in_one_line(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelError, match=message) as info:
        _config(**options)
    assert "\n" not in str(info.value)


def test_margin_from_scores_is_refused_on_votes() -> None:
    vote = dataclasses.replace(_prompts(1)[0], kind="vote")
    with pytest.raises(ModelError, match="needs ratings; this data has vote prompts"):
        train_on_rated([vote], config=_config(margin_from_scores=True), progress=False)


def test_rated_flags_on_plain_pairs_are_refused_by_the_cli(tmp_path: Path, sample_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path}/cli.db"
    assert main(["ingest", str(sample_path), "--name", "hh", "--db", db, "--json"]) == 0
    capsys.readouterr()
    for flags, said in ((["--ties", "model"], "--ties model needs rated data"),
                        (["--ranking", "listwise"], "--ranking listwise needs rated data"),
                        (["--margin-from-scores"], "--margin-from-scores needs rated data")):
        assert main(["train", "hh", "-o", str(tmp_path / "m"), "--model", "bow", *flags,
                     "--db", db]) == 2
        err = capsys.readouterr().err.strip()
        assert said in err and len(err.splitlines()) == 1, err
    assert main(["train", "hh", "-o", str(tmp_path / "m"), "--model", "bow", "--tie-model",
                 "rao-kupper", "--db", db]) == 2
    assert "--tie-model rao-kupper applies to --ties model" in capsys.readouterr().err


# The pair path's history on the bundled sample, recorded with the code before issue 32's training
# change (loop.py before `_load_model`/`_prepare`); the change must leave it as it was.
PAIR_HISTORY_BEFORE: list[list[float]] = [
    [0.6931478381156921, 0.5],
    [0.6931372284889221, 0.625],
    [0.6931608319282532, 0.125],
    [0.693148672580719, 0.25],
    [0.6931395530700684, 0.75],
    [0.6931609511375427, 0.375],
    [0.6931390166282654, 0.625],
    [0.6931341290473938, 0.625],
    [0.6931206583976746, 0.625],
    [0.6931141018867493, 0.875],
    [0.6931365728378296, 0.5],
    [0.6931217312812805, 0.625],
    [0.6930620074272156, 1.0],
    [0.6929199695587158, 1.0],
    [0.692977786064148, 1.0],
    [0.692946195602417, 0.875],
    [0.6929622292518616, 1.0],
    [0.6928143501281738, 0.75],
    [0.6928965449333191, 1.0],
    [0.6929085850715637, 0.75],
    [0.692912220954895, 0.875],
    [0.6928316950798035, 0.875],
    [0.6928400993347168, 0.875],
    [0.6928262114524841, 1.0],
]


def test_the_pair_path_is_unchanged_on_the_bundled_sample() -> None:
    pairs = [p for p in read_source("hh-rlhf-sample").pairs if p.split == "train"][:96]
    result = train_reward_model(pairs, config=_config(epochs=2, logging_steps=1), progress=False)
    history = [x for h in result.history for x in (h["loss"], h["accuracy"])]
    # exact on the machine that recorded it; 1e-6 leaves room for another CPU's float rounding
    # while any change to batches, order or loss would move these by far more
    assert history == pytest.approx([x for h in PAIR_HISTORY_BEFORE for x in h], rel=1e-6, abs=0)


def test_train_and_score_a_rated_dataset_from_the_cli(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    db, out = f"sqlite:///{tmp_path}/rated.db", tmp_path / "m"
    spec = "synthetic:n=48,k=4,ties=0.2,test_n=16,seed=0"
    assert main(["ingest", spec, "--name", "syn", "--db", db, "--json"]) == 0
    capsys.readouterr()
    assert main(["train", "syn", "-o", str(out), "--model", "bow", "--precision", "fp32",
                 "--ties", "model", "--tie-model", "rao-kupper", "--db", db, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    train = _prompts(48, test_n=16)
    assert summary["train_prompts"] == 48 and summary["ties"] == sum(len(p.ties) for p in train)
    assert summary["train_pairs"] == 48 * 6 - summary["ties"] and summary["tie_parameter"] > 1
    card = (out / "README.md").read_text()
    assert "tie model | rao-kupper, parameter" in card
    rows = tmp_path / "pairs.jsonl"
    rows.write_text(json.dumps({"prompt": "Human: hi", "chosen": "helpful", "rejected": "rude"}))
    assert main(["score", str(out), "--file", str(rows), "--json"]) == 0
    [scored] = json.loads(capsys.readouterr().out)
    assert scored["p_win"] + scored["p_tie"] + scored["p_loss"] == pytest.approx(1.0)
    assert main(["train", "syn", "-o", str(tmp_path / "m2"), "--model", "bow", "--select", "clean",
                 "--db", db]) == 2
    err = capsys.readouterr().err.strip()
    assert "--select and --max-pairs act on plain pairs" in err and len(err.splitlines()) == 1


def test_ragged_prompts_and_vote_ties_train_in_one_batch(counted_rows: list[int]) -> None:
    three = _prompts(4)
    vote_tie = RatedPrompt(90, "train", "Pick one.", ("helpful honest", "honest helpful"),
                           (0.5, 0.5), (0, 1), ((0, 1),), kind="vote")
    vote_win = RatedPrompt(91, "train", "Pick one.", ("clear kind", "rude vague"), (1.0, 0.0),
                           (0, 1), kind="vote")
    prompts = [vote_tie, *three, vote_win]
    model = train_on_rated(prompts, config=_config(ties="model"), progress=False)
    assert counted_rows == [2 + 4 * 4 + 2]  # one batch: every response of K = 2, 4, 4, 4, 4, 2
    assert model.n_ties == 1 + sum(len(p.ties) for p in three)
    assert np.isfinite(model.train_loss)
    counted_rows.clear()
    listwise = train_on_rated(prompts, config=_config(ranking="listwise"), progress=False)
    # the tied vote has no decided pair: listwise leaves that prompt out (5 rankings of 6)
    assert listwise.model.info["rated"]["prompts"] == 5 and counted_rows == [4 * 4 + 2]
