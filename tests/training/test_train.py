"""train.py on tiny models: it learns, it saves a plain HF checkpoint, it resumes exactly."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rewardlab.errors import ModelError
from rewardlab.evaluation.evaluate import evaluate_reward_model
from rewardlab.models.reward_model import INFO_FILE, RewardModel
from rewardlab.training.checkpoint import CHECKPOINTS
from rewardlab.training.loop import TrainResult, bradley_terry_loss, train_reward_model
from rewardlab.training.train_config import TrainConfig
from tests._tiny import make_tiny_backbone, planted_pairs


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(make_tiny_backbone(tmp_path_factory.mktemp("tiny-bert")))


@pytest.fixture(scope="module")
def pairs() -> list:
    return planted_pairs(32, seed=0)


def tiny_config(backbone: str, **overrides: object) -> TrainConfig:
    values = {"model": backbone, "epochs": 4, "batch_size": 8, "lr": 3e-3, "max_length": 64,
              "logging_steps": 1, "seed": 7}
    return TrainConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def trained(backbone: str, pairs: list, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    out = tmp_path_factory.mktemp("run") / "rm"
    # a random tiny BERT sits on the log 2 plateau for ~20 steps, then finds the planted word
    config = tiny_config(backbone, epochs=8, batch_size=4)
    return train_reward_model(pairs, config=config, output_dir=out, progress=False)


def test_training_learns_the_planted_signal(trained: TrainResult, pairs: list) -> None:
    first, last = trained.history[0], trained.history[-1]
    assert last["loss"] < first["loss"] - 0.3
    assert trained.train_accuracy >= 0.9 > first["accuracy"] - 0.2
    assert trained.steps == 64 and trained.complete and trained.n_pairs == 32
    assert [h["step"] for h in trained.history] == list(range(1, 65))
    held_out = planted_pairs(24, seed=99, split="test")
    assert evaluate_reward_model(trained.model, held_out).metrics["accuracy"] >= 0.9


def test_checkpoint_is_a_plain_hf_reward_model(trained: TrainResult) -> None:
    out = trained.output_dir
    assert out is not None and not (out / CHECKPOINTS).exists()
    info = json.loads((out / INFO_FILE).read_text())
    for key in ("config", "data_fingerprint", "n_pairs", "n_truncated", "history", "train_loss",
                "train_accuracy", "rewardlab_version"):
        assert key in info
    assert info["config"]["max_length"] == 64 and info["n_pairs"] == 32
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.num_labels == 1 and model.config.pad_token_id == tok.pad_token_id
    long_prompt = "Human: " + "tell me about the river and the stone " * 20
    prompts = ["Human: hi there", "Human: what is a kite?", long_prompt]
    responses = ["wonderful apple", "a kite flies", "the river wonderful"]
    rm = RewardModel.load(out)
    with torch.inference_mode():
        plain = [model(**tok(p, r, truncation=True, return_tensors="pt")).logits[0, 0].item()
                 for p, r in zip(prompts, responses)]
    # one sequence per forward: bit-identical; batched: padding reorders float sums only slightly
    assert rm.score(prompts, responses, batch_size=1) == plain
    np.testing.assert_allclose(rm.score(prompts, responses), plain, rtol=1e-5, atol=1e-5)
    assert trained.model.score(prompts, responses, batch_size=1) == plain


def test_truncation_keeps_the_response_and_is_counted(backbone: str, tmp_path: Path) -> None:
    pairs = planted_pairs(16, seed=1, prompt_words=(3, 6))
    long = planted_pairs(4, seed=2, prompt_words=(80, 90))  # > 64 tokens with the response
    result = train_reward_model(pairs + long, config=tiny_config(backbone, epochs=1),
                                output_dir=tmp_path / "rm", progress=False)
    assert result.n_truncated == 4 and result.n_response_truncated == 0
    assert json.loads((tmp_path / "rm" / INFO_FILE).read_text())["n_truncated"] == 4
    enc = result.model.encode([long[0].prompt_text], [long[0].chosen])
    text = result.model.tokenizer.decode(enc.input_ids[0], skip_special_tokens=True)
    assert len(enc.input_ids[0]) == 64 and enc.truncated[0]
    assert text.endswith(long[0].chosen) and "question" not in text  # prompt start was cut


def test_resume_after_interruption_equals_uninterrupted(backbone: str, pairs: list,
                                                        tmp_path: Path) -> None:
    config = tiny_config(backbone, epochs=2, save_steps=3, batch_size=4)  # 16 steps
    full = train_reward_model(pairs, config=config, output_dir=tmp_path / "a", progress=False)
    stopped = train_reward_model(pairs, config=dataclasses.replace(config, max_steps=7),
                                 output_dir=tmp_path / "b", progress=False)
    assert not stopped.complete and stopped.steps == 7
    assert (tmp_path / "b" / CHECKPOINTS / "step-0000007").is_dir()
    resumed = train_reward_model(pairs, config=config, output_dir=tmp_path / "b", resume=True,
                                 progress=False)
    assert resumed.complete and resumed.steps == 16
    assert resumed.history == full.history
    assert (resumed.train_loss, resumed.train_accuracy) == (full.train_loss, full.train_accuracy)
    a, b = full.model.model.state_dict(), resumed.model.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    again = train_reward_model(pairs, config=config, output_dir=tmp_path / "b", resume=True,
                               progress=False)  # finished: nothing left to train
    assert again.history == full.history and again.seconds == 0.0


def test_resume_refuses_other_settings(backbone: str, pairs: list, tmp_path: Path) -> None:
    config = tiny_config(backbone, epochs=1, max_steps=2)
    train_reward_model(pairs, config=config, output_dir=tmp_path, progress=False)
    with pytest.raises(ModelError, match="lr="):
        train_reward_model(pairs, config=dataclasses.replace(config, lr=1e-4),
                           output_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(ModelError, match="training pairs"):
        train_reward_model(pairs[:-1], config=config, output_dir=tmp_path, resume=True,
                           progress=False)


@pytest.mark.parametrize("precision", ["fp32", "auto"])  # auto = bf16 where the CPU has it
def test_same_seed_same_numbers(backbone: str, pairs: list, precision: str) -> None:
    config = tiny_config(backbone, epochs=1, precision=precision)
    runs = [train_reward_model(pairs, config=config, progress=False) for _ in range(2)]
    other = train_reward_model(pairs, config=dataclasses.replace(config, seed=8), progress=False)
    evals = [evaluate_reward_model(r.model, pairs) for r in (*runs, other)]
    assert runs[0].history == runs[1].history and runs[0].train_loss == runs[1].train_loss
    assert evals[0].metrics == evals[1].metrics
    assert np.array_equal(evals[0].chosen_rewards, evals[1].chosen_rewards)
    assert not np.array_equal(evals[0].chosen_rewards, evals[2].chosen_rewards)


def test_per_pair_smoothing_overrides_config(backbone: str, pairs: list) -> None:
    config = tiny_config(backbone, epochs=1, label_smoothing=0.3)
    zero = train_reward_model(pairs, config=config, smoothing=[0.0] * len(pairs), progress=False)
    plain = train_reward_model(pairs, config=dataclasses.replace(config, label_smoothing=0.0),
                               progress=False)
    smoothed = train_reward_model(pairs, config=config, progress=False)
    assert zero.history == plain.history != smoothed.history
    with pytest.raises(ModelError, match="smoothing has 3 values"):
        train_reward_model(pairs, config=config, smoothing=[0.1] * 3, progress=False)


def test_bradley_terry_loss() -> None:
    rewards = torch.tensor([2.0, -1.0, 0.5, 0.0])  # chosen (2.0, -1.0), rejected (0.5, 0.0)
    d = torch.tensor([1.5, -1.0])
    expected = -torch.nn.functional.logsigmoid(d - 0.5).mean()
    assert torch.allclose(bradley_terry_loss(rewards, margin=0.5), expected)
    eps = torch.tensor([0.1, 0.0])
    soft = (-(0.9 * torch.nn.functional.logsigmoid(d[0])) - 0.1 * torch.nn.functional.logsigmoid(
        -d[0]) - torch.nn.functional.logsigmoid(d[1])) / 2
    assert torch.allclose(bradley_terry_loss(rewards, smoothing=eps), soft)


def test_config_fields_have_help_and_defaults() -> None:
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("help") and f.default is not dataclasses.MISSING, f.name
    assert TrainConfig().resolved_lr() == 2e-5
    with pytest.raises(ModelError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ModelError, match="precision"):
        TrainConfig(precision="fp8")


def test_bow_backbone_trains_and_reloads(pairs: list, tmp_path: Path) -> None:
    result = train_reward_model(pairs, config=TrainConfig(model="bow", epochs=3, max_length=64),
                                output_dir=tmp_path, progress=False)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    reloaded = RewardModel.load(tmp_path)
    prompts, responses = [p.prompt_text for p in pairs[:4]], [p.chosen for p in pairs[:4]]
    assert reloaded.score(prompts, responses) == result.model.score(prompts, responses)
