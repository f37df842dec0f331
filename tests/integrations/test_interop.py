"""Checkpoints in the field's tools: TRL's RewardTrainer continues training a MiniLM-architecture
and a decoder checkpoint trained by rewardlab (the README's recipe), and OpenRLHF's last-token
pooling scores the decoder checkpoint as `rewardlab score` does."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rewardlab.models.input_rule import dialogue_messages
from rewardlab.models.reward_model import RewardModel
from rewardlab.training.loop import train_reward_model
from rewardlab.training.train_config import TrainConfig
from tests._tiny import make_tiny_backbone, make_tiny_decoder, planted_pairs


def _trained(backbone: Path, out: Path) -> RewardModel:
    config = TrainConfig(model=str(backbone), epochs=1, batch_size=4, lr=3e-3, max_length=48,
                         max_steps=2)
    return train_reward_model(planted_pairs(16), config=config, output_dir=out,
                              progress=False).model


def _segment_collator(pad_token_id: int) -> Any:
    """The README's collator: TRL's, plus the encoder's segment ids (the text pair's B part)."""
    from trl.trainer.reward_trainer import DataCollatorForPreference

    class WithSegments(DataCollatorForPreference):
        def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
            out = super().torch_call(examples)
            types = [e["chosen_token_type_ids"] for e in examples] + [
                e["rejected_token_type_ids"] for e in examples]
            seg = torch.zeros_like(out["input_ids"])
            for i, row in enumerate(types):
                seg[i, :len(row)] = torch.tensor(row)
            out["token_type_ids"] = seg
            return out

    return WithSegments(pad_token_id=pad_token_id)


def _continue_in_trl(checkpoint: Path, rows: list[dict[str, Any]], out: Path, **kw: Any
                     ) -> list[float]:
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    args = RewardConfig(output_dir=str(out), max_steps=3, per_device_train_batch_size=4,
                        learning_rate=1e-3, logging_steps=1, save_strategy="no",
                        report_to="none", bf16=False, use_cpu=True, disable_tqdm=True,
                        dataloader_num_workers=0, **kw.pop("args", {}))
    trainer = RewardTrainer(model=str(checkpoint), args=args,
                            train_dataset=Dataset.from_list(rows), **kw)
    trainer.train()
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def test_minilm_checkpoint_continues_training_in_trl(tmp_path: Path) -> None:
    rm = _trained(make_tiny_backbone(tmp_path / "bb"), tmp_path / "m")
    assert rm.input_rule == "text-pair" and rm.tokenizer.eos_token == "[SEP]"
    # exactly rewardlab's inputs: the rows pre-tokenized by the checkpoint's rule
    pairs = planted_pairs(12, seed=3)
    enc = rm.encode_pairs(pairs)
    assert enc.chosen.token_type_ids is not None and enc.rejected.token_type_ids is not None
    rows = [{"chosen_ids": c, "rejected_ids": r, "chosen_token_type_ids": ct,
             "rejected_token_type_ids": rt} for c, r, ct, rt in
            zip(enc.chosen.input_ids, enc.rejected.input_ids, enc.chosen.token_type_ids,
                enc.rejected.token_type_ids)]
    losses = _continue_in_trl(tmp_path / "m", rows, tmp_path / "trl",
                              data_collator=_segment_collator(rm.tokenizer.pad_token_id),
                              args={"remove_unused_columns": False})
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    # plain text rows too: TRL appends the EOS token, which a BERT tokenizer lacks by default
    text_rows = [{"prompt": p.prompt_text, "chosen": p.chosen, "rejected": p.rejected}
                 for p in pairs]
    losses = _continue_in_trl(tmp_path / "m", text_rows, tmp_path / "trl-text")
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)


@pytest.fixture(scope="module")
def decoder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RewardModel]:
    root = tmp_path_factory.mktemp("interop-qwen")
    return root / "m", _trained(make_tiny_decoder(root / "bb", "qwen2"), root / "m")


def test_decoder_checkpoint_continues_training_in_trl(decoder: tuple[Path, RewardModel],
                                                      tmp_path: Path) -> None:
    checkpoint, rm = decoder
    assert rm.input_rule == "chat-template"
    # TRL's conversational preference data: the same messages rewardlab renders
    rows = [{"chosen": dialogue_messages(p.prompt_text, p.chosen),
             "rejected": dialogue_messages(p.prompt_text, p.rejected)}
            for p in planted_pairs(12, seed=3)]
    losses = _continue_in_trl(checkpoint, rows, tmp_path / "trl")
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)


def _openrlhf_rewards(checkpoint: Path, queries: list[str]) -> tuple[list[float], list[float]]:
    """openrlhf/models/model.py `get_llm_for_sequence_regression` + cli/serve_rm.py, in a few
    lines: left padding, no special tokens added, positions from the attention mask, the value
    head `score` read at the last position of the mask; then (r - config.mean) / config.std."""
    tok = AutoTokenizer.from_pretrained(checkpoint, padding_side="left")
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    batch = tok(queries, return_tensors="pt", add_special_tokens=False, padding=True)
    mask = batch["attention_mask"]
    eos_indices = mask.size(1) - 1 - mask.long().fliplr().argmax(dim=1, keepdim=True)
    position_ids = mask.long().cumsum(-1) - 1
    position_ids.masked_fill_(mask == 0, 1)
    with torch.inference_mode():
        hidden = getattr(model, model.base_model_prefix)(
            batch["input_ids"], attention_mask=mask, position_ids=position_ids)["last_hidden_state"]
        values = model.score(hidden).squeeze(-1)  # OpenRLHF's value_head_prefix="score"
    reward = values.gather(dim=1, index=eos_indices).squeeze(1)
    normalized = (reward - model.config.mean) / model.config.std
    return reward.tolist(), normalized.tolist()


def test_openrlhf_pooling_scores_like_rewardlab(decoder: tuple[Path, RewardModel]) -> None:
    checkpoint, _ = decoder
    rm = RewardModel.load(checkpoint)
    dialogues = [("Human: question 1: apple kite", "wonderful dog"),
                 ("Human: hi\n\nAssistant: hello\n\nHuman: fish?", "fish river stone ocean"),
                 ("Human: tiger", "ok")]
    tok = rm.tokenizer
    queries = [tok.apply_chat_template(dialogue_messages(p, r), tokenize=False)
               for p, r in dialogues]
    ours = rm.score([p for p, _ in dialogues], [r for _, r in dialogues])
    raw, normalized = _openrlhf_rewards(checkpoint, queries)
    assert raw == pytest.approx(ours, abs=1e-5)
    stats = rm.info["reward_stats"]
    assert normalized == pytest.approx([(r - stats["mean"]) / stats["std"] for r in ours], abs=1e-4)
    # the serving route: OpenRLHF's query string → split_query → score gives the same rewards
    split = [rm.split_query(q) for q in queries]
    assert split == dialogues
    assert rm.score([p for p, _ in split], [r for _, r in split]) == pytest.approx(ours, abs=1e-6)
