"""Decoder reward models end to end: train → checkpoint → score, and plain transformers + the
checkpoint's input rule reproduces `rewardlab score` (encoder, Qwen2/Llama with a chat template,
GPT-2 without one)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rewardlab.cli.main import main
from rewardlab.data.pairs import PreferencePair
from rewardlab.evaluation.evaluate import evaluate_reward_model
from rewardlab.models.input_rule import PAD_TOKEN
from rewardlab.models.reward_model import INFO_FILE, RewardModel
from rewardlab.training.loop import train_reward_model
from rewardlab.training.train_config import TrainConfig
from tests._tiny import SIGNAL, make_tiny_backbone, make_tiny_decoder, planted_pairs

ROWS = [("Human: question 1: apple kite", "wonderful dog"),
        ("Human: hi\n\nAssistant: hello there\n\nHuman: tell me about fish", "fish river stone"),
        ("Human: " + " ".join(["lemon mango"] * 60), f"tiger {SIGNAL}")]  # cut at max_length


def _quick(backbone: Path, out: Path, **overrides: Any) -> RewardModel:
    config = TrainConfig(model=str(backbone), epochs=1, batch_size=4, lr=3e-3, max_length=48,
                         max_steps=2, **overrides)
    return train_reward_model(planted_pairs(16), config=config, output_dir=out,
                              progress=False).model


def _cli_scores(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
                ) -> list[float]:
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in ROWS))
    capsys.readouterr()
    assert main(["score", str(checkpoint), "--file", str(rows), "--json"]) == 0
    return [row["reward"] for row in json.loads(capsys.readouterr().out)]


def _plain_scores(checkpoint: Path, rule: str) -> list[float]:
    """What a user writes from the model card: no rewardlab, one row at a time."""
    tok = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    scores = []
    for prompt, response in ROWS:
        if rule == "text-pair":
            inputs = tok(prompt, response, truncation="only_first", return_tensors="pt")
        else:
            if rule == "chat-template":
                turns = [t.split(": ", 1) for t in prompt.split("\n\n")]
                messages = [{"role": "user" if who == "Human" else "assistant", "content": text}
                            for who, text in turns] + [{"role": "assistant", "content": response}]
                ids = tok(tok.apply_chat_template(messages, tokenize=False),
                          add_special_tokens=False)["input_ids"]
            else:
                ids = tok(f"{prompt}\n\nAssistant: {response}{tok.eos_token}")["input_ids"]
            ids = ids[-48:]  # the card: keep the last max_length tokens (no BOS here)
            inputs = {"input_ids": torch.tensor([ids])}
        with torch.inference_mode():
            scores.append(model(**inputs).logits[0, 0].item())
    return scores


@pytest.mark.parametrize(("arch", "chat", "rule"), [
    ("bert", False, "text-pair"), ("qwen2", True, "chat-template"),
    ("llama", True, "chat-template"), ("gpt2", False, "plain-dialogue")])
def test_plain_transformers_reproduces_rewardlab_score(
        arch: str, chat: bool, rule: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    backbone = (make_tiny_backbone(tmp_path / "bb") if arch == "bert"
                else make_tiny_decoder(tmp_path / "bb", arch, chat=chat))
    rm = _quick(backbone, tmp_path / "m")
    assert rm.input_rule == rule
    info = json.loads((tmp_path / "m" / INFO_FILE).read_text())
    assert info["input_rule"] == rule and f"`{rule}`" in (tmp_path / "m" / "README.md").read_text()
    cli = _cli_scores(tmp_path / "m", tmp_path, capsys)
    assert cli == pytest.approx(_plain_scores(tmp_path / "m", rule), rel=1e-5, abs=1e-6)
    assert len(set(cli)) == 3  # three different inputs, three rewards


@pytest.fixture(scope="module")
def trained_qwen(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    root = tmp_path_factory.mktemp("qwen-run")
    backbone = make_tiny_decoder(root / "bb", "qwen2")
    pairs = planted_pairs(48)
    same = [PreferencePair(source_index=100 + i, split="train", prompt=f"tie {i}",
                           chosen="apple dog", rejected="apple dog") for i in range(3)]
    config = TrainConfig(model=str(backbone), epochs=3, batch_size=8, lr=3e-3, max_length=64,
                         logging_steps=1)
    result = train_reward_model(pairs + same, config=config, output_dir=root / "m",
                                progress=False)
    return root / "m", result


def test_decoder_training_learns_the_planted_signal(trained_qwen: tuple[Path, Any]) -> None:
    out, result = trained_qwen
    losses = [h["loss"] for h in result.history]
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])  # log 2 ≈ 0.69 at the start
    assert result.train_accuracy > 0.9
    rm = RewardModel.load(out)
    test = evaluate_reward_model(rm, planted_pairs(32, seed=7, split="test"), progress=False)
    assert test.metrics["accuracy"] > 0.85 and test.metrics["n_identical"] == 0


def test_identical_pairs_are_dropped_and_counted(trained_qwen: tuple[Path, Any]) -> None:
    out, result = trained_qwen
    info = json.loads((out / INFO_FILE).read_text())
    assert result.n_identical == info["n_identical"] == 3 and info["n_pairs"] == 51
    assert result.steps == info["steps"] == 3 * 6  # 48 pairs / 8 per step, the ties left out
    ties = [PreferencePair(source_index=0, split="test", prompt="x", chosen="a b", rejected="a b")]
    metrics = evaluate_reward_model(RewardModel.load(out), ties + planted_pairs(4, split="test"),
                                    progress=False).metrics
    assert metrics["n_identical"] == 1 and metrics["n"] == 5  # kept in evaluation, a tie


def test_checkpoint_carries_pad_eos_labels_and_reward_stats(trained_qwen: tuple[Path, Any]
                                                            ) -> None:
    out, result = trained_qwen
    config = json.loads((out / "config.json").read_text())
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.pad_token == PAD_TOKEN and config["pad_token_id"] == tok.pad_token_id
    assert config["eos_token_id"] == tok.eos_token_id != tok.pad_token_id
    assert config["id2label"] == {"0": "reward"}  # one output: num_labels=1
    stats = json.loads((out / INFO_FILE).read_text())["reward_stats"]
    chosen, rejected = result.model.score_pairs(planted_pairs(48) + [PreferencePair(
        source_index=100 + i, split="train", prompt=f"tie {i}", chosen="apple dog",
        rejected="apple dog") for i in range(3)])
    every = np.concatenate([chosen, rejected])
    assert stats["sequences"] == 102 and config["mean"] == pytest.approx(every.mean(), abs=1e-5)
    assert config["std"] == pytest.approx(every.std(ddof=1), abs=1e-5) == stats["std"]


@pytest.mark.parametrize("arch", ["qwen2", "gpt2"])
def test_left_and_right_padding_give_the_same_rewards(arch: str, tmp_path: Path) -> None:
    """The reward is read at the last real token either way (GPT-2: absolute positions too)."""
    rm = _quick(make_tiny_decoder(tmp_path / "bb", arch, chat=arch == "qwen2"), tmp_path / "m")
    prompts, responses = [p for p, _ in ROWS], [r for _, r in ROWS]
    rm.tokenizer.padding_side = "right"
    right = rm.score(prompts, responses, batch_size=3)
    rm.tokenizer.padding_side = "left"
    left = rm.score(prompts, responses, batch_size=3)
    single = [rm.score([p], [r])[0] for p, r in ROWS]  # no padding at all
    assert left == pytest.approx(right, abs=1e-5) and right == pytest.approx(single, abs=1e-5)


def test_cli_trains_a_decoder_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    """`rewardlab ingest` + `rewardlab train NAME -o m --model <tiny Qwen2 dir>` + `score`."""
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"chosen": f"\n\nHuman: {p.prompt}\n\nAssistant: {p.chosen}",
                                        "rejected": f"\n\nHuman: {p.prompt}\n\nAssistant: "
                                                    f"{p.rejected}"}) + "\n"
                            for p in planted_pairs(32)))
    db = f"sqlite:///{tmp_path}/t.db"
    assert main(["ingest", str(data), "--name", "toy", "--db", db, "--json"]) == 0
    backbone = make_tiny_decoder(tmp_path / "qwen", "qwen2")
    capsys.readouterr()
    assert main(["train", "toy", "-o", str(tmp_path / "m"), "--model", str(backbone),
                 "--epochs", "2", "--lr", "3e-3", "--max-length", "64", "--db", db,
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["train_pairs"] == 32 and summary["train_accuracy"] > 0.6
    assert RewardModel.load(tmp_path / "m").input_rule == "chat-template"
    good, bad = _cli_scores_pair(tmp_path / "m", capsys)
    assert good > bad


def _cli_scores_pair(checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> tuple[float, float]:
    capsys.readouterr()
    assert main(["score", str(checkpoint), "--prompt", "Human: question 3: kite", "--response",
                 f"dog {SIGNAL}", "--json"]) == 0
    good = json.loads(capsys.readouterr().out)["reward"]
    assert main(["score", str(checkpoint), "--prompt", "Human: question 3: kite", "--response",
                 "dog apple", "--json"]) == 0
    return good, json.loads(capsys.readouterr().out)["reward"]
