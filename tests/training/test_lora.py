"""training/lora.py on a tiny Qwen2: LoRA trains adapter + head only, saves a merged plain checkpoint
(and the adapter form on request), resumes exactly; weight dtype and gradient checkpointing."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rewardlab.cli.main import main
from rewardlab.errors import ModelError
from rewardlab.evaluation.evaluate import evaluate_reward_model
from rewardlab.models.backbones import load_backbone
from rewardlab.models.reward_model import RewardModel
from rewardlab.training.checkpoint import CHECKPOINTS
from rewardlab.training.loop import TrainResult, train_reward_model
from rewardlab.training.lora import (
    ADAPTER_DIR,
    adapt_for_training,
    check_weight_dtype,
    head_modules,
    trainable_parameters,
)
from rewardlab.training.train_config import LORA_LR, TrainConfig
from tests._tiny import make_tiny_backbone, make_tiny_decoder, planted_pairs

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def decoder(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(make_tiny_decoder(tmp_path_factory.mktemp("tiny-qwen2")))


@pytest.fixture(scope="module")
def pairs() -> list:
    return planted_pairs(32, seed=0)


def lora_config(model: str, **overrides: object) -> TrainConfig:
    values = {"model": model, "lora_r": 8, "epochs": 4, "batch_size": 4, "lr": 1e-2,
              "max_length": 64, "logging_steps": 1, "seed": 7, "precision": "fp32"}
    return TrainConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def trained(decoder: str, pairs: list, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    out = tmp_path_factory.mktemp("lora") / "rm"
    return train_reward_model(pairs, config=lora_config(decoder, save_adapter=True),
                              output_dir=out, progress=False)


def test_only_the_adapter_and_the_score_head_train(decoder: str) -> None:
    model, _ = load_backbone(decoder, max_length=64, seed=0)
    c = model.config
    d, kv = c.hidden_size, c.num_key_value_heads * (c.hidden_size // c.num_attention_heads)
    wrapped, _ = adapt_for_training(model, lora_config(decoder), device=CPU)
    # per layer: q_proj (A: r×d, B: d×r) and v_proj (A: r×d, B: kv×r); plus the score head (1×d)
    expected = c.num_hidden_layers * (8 * d + d * 8 + 8 * d + kv * 8) + d
    assert trainable_parameters(wrapped) == expected == 2 * (256 + 256 + 256 + 128) + 32
    names = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert all("lora_" in n or ".score." in n for n in names), names
    assert any(".score." in n for n in names) and head_modules(model) == ["score"]


def test_lora_run_learns_and_saves_a_merged_plain_checkpoint(trained: TrainResult,
                                                              decoder: str) -> None:
    assert trained.history[-1]["loss"] < trained.history[0]["loss"] - 0.3
    assert evaluate_reward_model(trained.model,
                                 planted_pairs(24, seed=99, split="test")).metrics["accuracy"] >= 0.9
    out = trained.output_dir
    assert out is not None
    merged = AutoModelForSequenceClassification.from_pretrained(out)  # plain transformers, no peft
    assert type(merged).__name__ == "Qwen2ForSequenceClassification"
    assert not [k for k in merged.state_dict() if "lora" in k or "modules_to_save" in k]
    test = planted_pairs(12, seed=5, split="test")
    reloaded = RewardModel.load(out)
    for a, b in zip(trained.model.score_pairs(test), reloaded.score_pairs(test)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    info = json.loads((out / "rewardlab.json").read_text())
    assert info["config"]["lora_r"] == 8 and info["lr"] == 1e-2


def test_the_merge_changed_only_the_adapted_weights_and_the_head(trained: TrainResult,
                                                                 decoder: str) -> None:
    assert trained.output_dir is not None
    base = load_file(str(Path(decoder) / "model.safetensors"))
    after = load_file(str(trained.output_dir / "model.safetensors"))
    changed = {k for k in base if k in after and after[k].shape == base[k].shape
               and not torch.equal(base[k], after[k])}
    adapted = {k for k in base if k.endswith(("q_proj.weight", "v_proj.weight"))}
    assert changed == adapted | {"score.weight"}, changed ^ (adapted | {"score.weight"})
    emb = "model.embed_tokens.weight"  # the input rule may add a pad row; the old rows stay put
    assert torch.equal(after[emb][: base[emb].shape[0]], base[emb])


def test_the_adapter_form_scores_like_the_merged_model(trained: TrainResult, decoder: str) -> None:
    from peft import PeftModel

    out = trained.output_dir
    assert out is not None
    adapter = out / ADAPTER_DIR
    assert (adapter / "adapter_model.safetensors").is_file()
    adapter_config = json.loads((adapter / "adapter_config.json").read_text())
    assert adapter_config["r"] == 8 and adapter_config["lora_alpha"] == 16
    assert "score" in adapter_config["modules_to_save"]
    tok = AutoTokenizer.from_pretrained(out)
    base = AutoModelForSequenceClassification.from_pretrained(decoder, num_labels=1)
    base.resize_token_embeddings(len(tok), mean_resizing=False)  # as training did for its pad token
    base.config.pad_token_id = tok.pad_token_id
    unmerged = RewardModel(PeftModel.from_pretrained(base, adapter), tok, max_length=64,
                           input_rule=trained.model.input_rule)
    test = planted_pairs(12, seed=5, split="test")
    for a, b in zip(unmerged.score_pairs(test), trained.model.score_pairs(test)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_lora_resume_equals_uninterrupted(decoder: str, pairs: list, tmp_path: Path) -> None:
    config = lora_config(decoder, epochs=1, save_steps=3)  # 8 steps
    full = train_reward_model(pairs, config=config, output_dir=tmp_path / "a", progress=False)
    stopped = train_reward_model(pairs, config=dataclasses.replace(config, max_steps=5),
                                 output_dir=tmp_path / "b", progress=False)
    state = load_file(str(tmp_path / "b" / CHECKPOINTS / "step-0000005" / "model.safetensors"))
    assert any("lora_A" in k for k in state) and any("modules_to_save" in k for k in state)
    assert not stopped.complete
    resumed = train_reward_model(pairs, config=config, output_dir=tmp_path / "b", resume=True,
                                 progress=False)
    assert resumed.complete and resumed.history == full.history
    a, b = full.model.model.state_dict(), resumed.model.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_decoder_steps_are_one_length_grouped_forward_per_batch(trained: TrainResult,
                                                                decoder: str, pairs: list) -> None:
    """Chosen and rejected of a batch go through the model together, in batches of similar length."""
    calls: list[tuple[int, int, int]] = []  # (rows, width, real tokens) of each training forward

    def record(module: torch.nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        mask = kwargs.get("attention_mask")
        if module.training and mask is not None and type(module).__name__.startswith("Qwen2For"):
            calls.append((mask.shape[0], mask.shape[1], int(mask.sum())))

    hook = torch.nn.modules.module.register_module_forward_hook(record, with_kwargs=True)
    try:
        result = train_reward_model(pairs, config=lora_config(decoder, epochs=1), progress=False)
    finally:
        hook.remove()
    assert [rows for rows, _, _ in calls] == [8] * result.steps == [8] * 8  # 2 × 4 pairs, 1 each
    enc = trained.model.encode_pairs(pairs)
    in_order = [(enc.chosen.lengths[i:i + 4], enc.rejected.lengths[i:i + 4]) for i in range(0, 32, 4)]
    padded = sum(8 * max(c.max(), r.max()) for c, r in in_order)
    real = sum(c.sum() + r.sum() for c, r in in_order)
    assert sum(t for _, _, t in calls) == real  # every token trained once, no row dropped
    assert sum(n * w for n, w, _ in calls) < padded  # grouping by length pads less than data order


def test_gradient_checkpointing_recomputes_and_learns_the_same(decoder: str, pairs: list) -> None:
    model, tok = load_backbone(decoder, max_length=64, seed=0)
    wrapped, finish = adapt_for_training(model, lora_config(decoder, gradient_checkpointing=True),
                                         device=CPU)
    calls = []
    attention = model.model.layers[0].self_attn  # inside the checkpointed layer: recomputed
    attention.register_forward_hook(lambda *_: calls.append(1))
    batch = tok(["apple kite", "wonderful river stone"], padding=True, return_tensors="pt")
    wrapped.train()
    wrapped(**batch).logits.sum().backward()
    assert len(calls) == 2  # forward, then again in the backward: activations were not kept
    plain = finish(wrapped)  # merged, checkpointing off, the KV cache setting back
    assert not plain.is_activation_checkpointing and plain.config.use_cache
    config = lora_config(decoder, epochs=1)
    plain = train_reward_model(pairs, config=config, progress=False)
    checkpointed = train_reward_model(
        pairs, config=dataclasses.replace(config, gradient_checkpointing=True), progress=False)
    np.testing.assert_allclose([h["loss"] for h in checkpointed.history],
                               [h["loss"] for h in plain.history], rtol=1e-5)


def test_gradient_checkpointing_takes_the_stock_forward_for_bert(pairs: list,
                                                                 tmp_path: Path) -> None:
    bert = str(make_tiny_backbone(tmp_path / "bert"))  # would run packed, which skips checkpointing
    config = TrainConfig(model=bert, epochs=1, batch_size=8, lr=3e-3, max_length=64,
                         logging_steps=1, precision="fp32")
    packed = train_reward_model(pairs, config=config, progress=False)
    stock = train_reward_model(pairs, config=dataclasses.replace(config, gradient_checkpointing=True),
                               progress=False)
    np.testing.assert_allclose([h["loss"] for h in stock.history],
                               [h["loss"] for h in packed.history], rtol=1e-4)


def test_bf16_weights_load_train_and_save_in_bf16(decoder: str, pairs: list, tmp_path: Path) -> None:
    config = lora_config(decoder, epochs=1, torch_dtype="bf16")
    result = train_reward_model(pairs, config=config, output_dir=tmp_path / "m", progress=False)
    assert result.model.model.dtype == torch.bfloat16
    saved = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert {t.dtype for t in saved.values()} == {torch.bfloat16}
    assert all(np.isfinite(h["loss"]) for h in result.history)


def test_lora_defaults_and_lr() -> None:
    assert TrainConfig(lora_r=8).resolved_lr() == LORA_LR
    assert TrainConfig(lora_r=8, lora_target_modules="q_proj, k_proj").target_modules() == [
        "q_proj", "k_proj"]
    assert TrainConfig(lora_r=8, lora_target_modules="all-linear").target_modules() == "all-linear"


@pytest.mark.parametrize("overrides, needle", [
    ({"save_adapter": True}, "save_adapter applies to a LoRA adapter"),
    ({"lora_alpha": 16}, "lora_alpha applies to a LoRA adapter"),
    ({"lora_r": -1}, "lora_r must be at least 0"),
    ({"lora_r": 8, "lora_dropout": 1.0}, "lora_dropout must be in [0, 1)"),
    ({"lora_r": 8, "lora_target_modules": " , "}, "names no module"),
    ({"lora_r": 8, "model": "bow"}, "not 'bow'"),
    ({"torch_dtype": "fp16"}, "add --lora-r"),
    ({"torch_dtype": "fp16", "lora_r": 8, "precision": "bf16"}, "two half formats"),
    ({"torch_dtype": "int8"}, "torch_dtype must be one of"),
    ({"center_rewards_coefficient": -0.1}, "center_rewards_coefficient"),
    ({"lora_alpha": 0, "lora_r": 8}, "lora_alpha must be positive"),
    ({"lora_dropout": float("nan"), "lora_r": 8}, "lora_dropout must be a finite number"),
])
def test_scale_options_are_validated_first(overrides: dict, needle: str) -> None:
    with pytest.raises(ModelError) as e:
        TrainConfig(**overrides)
    assert needle in str(e.value)


def test_fp16_weights_need_a_gpu_and_unknown_modules_are_named(decoder: str) -> None:
    with pytest.raises(ModelError, match="fp16 needs a CUDA GPU"):
        check_weight_dtype(TrainConfig(torch_dtype="fp16", lora_r=8), device=CPU)
    model, _ = load_backbone(decoder, max_length=64, seed=0)
    linear = "down_proj, gate_proj, k_proj, o_proj, q_proj, score, up_proj, v_proj"
    with pytest.raises(ModelError, match=f"--lora-target-modules: no module named 'nope' in "
                                         f"Qwen2ForSequenceClassification; its linear layers: {linear}$"):
        adapt_for_training(model, lora_config(decoder, lora_target_modules="nope"), device=CPU)


def test_cli_refuses_fp16_weights_on_cpu_before_any_work(decoder: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": p.prompt, "chosen": p.chosen,
                                          "rejected": p.rejected})
                              for p in planted_pairs(8)) + "\n")
    db = f"sqlite:///{tmp_path}/t.db"
    assert main(["ingest", str(data), "--name", "d", "--db", db, "--json"]) == 0
    capsys.readouterr()
    out = tmp_path / "m"
    assert main(["train", "d", "-o", str(out), "--model", decoder, "--lora-r", "8",
                 "--torch-dtype", "fp16", "--db", db]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rewardlab: error: ") and "fp16 needs a CUDA GPU" in err, err
    assert "Traceback" not in err and not (out / "model.safetensors").exists()
