"""The model card: README.md in every checkpoint, written by `RewardModel.save`.

It says what a user of the directory needs and nothing they would have to guess: the base model,
the data (pairs, fingerprint, what truncation did), the input rule with the exact lines of plain
transformers that reproduce `rewardlab score`, the run's metrics, and how to load the checkpoint in
transformers, TRL (continue training) and OpenRLHF (`config.mean`/`config.std`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from transformers import PretrainedConfig

from rewardlab._version import __version__
from rewardlab.models.input_rule import InputRule, is_encoder

__all__ = ["CARD_FILE", "model_card", "write_model_card"]

CARD_FILE = "README.md"

_RULE_TEXT: dict[InputRule, str] = {
    "text-pair": "the tokenizer text pair `(prompt, response)` (segment A = the conversation so "
                 "far, segment B = the reply); the reward is the classifier output on the pooled "
                 "first token. Truncation keeps the response and the end of the prompt.",
    "chat-template": "the dialogue as chat messages (the HH-RLHF turns `Human:`/`Assistant:` → "
                     "`user`/`assistant`, the response as the last assistant turn), rendered with "
                     "`tokenizer.apply_chat_template(messages, tokenize=False)` and tokenized "
                     "without adding special tokens, as TRL's RewardTrainer does for "
                     "conversational data; the reward is read at the last token. Truncation keeps "
                     "the end (the prompt is cut from the left).",
    "plain-dialogue": "the turns as plain text, `Human: …` / `Assistant: …` separated by a blank "
                      "line, then the EOS token, tokenized with the tokenizer's special tokens "
                      "(TRL's rule for non-conversational data); the reward is read at the last "
                      "token (EOS). Truncation keeps the end (the prompt is cut from the left).",
}

_LOAD = '''from transformers import AutoModelForSequenceClassification, AutoTokenizer

tok = AutoTokenizer.from_pretrained("{path}")
model = AutoModelForSequenceClassification.from_pretrained("{path}").eval()
'''

_SNIPPETS: dict[InputRule, str] = {
    "text-pair": '''prompt, response = "Human: How do I bake bread?", "Mix flour, water and yeast."
inputs = tok(prompt, response, truncation="only_first", return_tensors="pt")
reward = model(**inputs).logits[0, 0].item()''',
    "chat-template": '''messages = [{{"role": "user", "content": "How do I bake bread?"}},
            {{"role": "assistant", "content": "Mix flour, water and yeast."}}]
text = tok.apply_chat_template(messages, tokenize=False)
inputs = tok(text, add_special_tokens=False, return_tensors="pt")
reward = model(**inputs).logits[0, 0].item()''',
    "plain-dialogue": '''text = "Human: How do I bake bread?\\n\\nAssistant: Mix flour, water and yeast."
inputs = tok(text + tok.eos_token, return_tensors="pt")  # TRL's rule for plain text: + EOS
reward = model(**inputs).logits[0, 0].item()''',
}


_TRUNCATION: dict[InputRule, str] = {
    "text-pair": "Inputs longer than {n} tokens: the saved tokenizer cuts at {n} "
                 "(`model_max_length`) from the left, so `truncation=\"only_first\"` above keeps "
                 "the response and the end of the prompt; a response that alone does not fit is "
                 "cut too (`truncation=True`).",
    "chat-template": "Inputs longer than {n} tokens: rewardlab keeps the last {n} tokens (after a "
                     "leading BOS, which stays): `ids = ids[:1] + ids[-({n} - 1):]` when `ids[0]` "
                     "is BOS, else `ids[-{n}:]`.",
    "plain-dialogue": "Inputs longer than {n} tokens: rewardlab keeps the last {n} tokens (after "
                      "a leading BOS, which stays): `ids = ids[:1] + ids[-({n} - 1):]` when "
                      "`ids[0]` is BOS, else `ids[-{n}:]`.",
}


def write_model_card(path: Path, *, info: dict[str, Any], rule: InputRule, max_length: int,
                     config: PretrainedConfig) -> Path:
    """Write `path/README.md` for the checkpoint just saved there (`RewardModel.save` calls it):
    `info` is its rewardlab.json, `config` the model's."""
    card = path / CARD_FILE
    card.write_text(model_card(info, rule=rule, max_length=max_length, config=config, path=path),
                    encoding="utf-8")
    return card


def model_card(info: dict[str, Any], *, rule: InputRule, max_length: int,
               config: PretrainedConfig, path: Path | str = "DIR") -> str:
    """The card's markdown (YAML front matter for the hub, then the sections)."""
    train = info.get("config", {})
    base = str(train.get("model") or getattr(config, "_name_or_path", "") or "?")
    sections = [
        _front_matter(base),
        f"# Reward model `{Path(path).name}`\n\nA Bradley-Terry reward model (one scalar output, "
        f"`num_labels=1`, `id2label = {{0: \"reward\"}}`) trained with "
        f"rewardlab {info.get('rewardlab_version', __version__)}: higher "
        f"reward = the preferred response.",
        _training_section(base, info),
        f"## Input rule: `{rule}`\n\nThe model scores {_RULE_TEXT[rule]} Score it exactly so (this "
        f"reproduces `rewardlab score`):\n\n```python\n{_LOAD.format(path=path)}"
        f"{_SNIPPETS[rule].format()}\n```\n\n{_TRUNCATION[rule].format(n=max_length)}",
        _metrics_section(info),
        _loading_section(rule, encoder=is_encoder(config), path=path),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


def _front_matter(base: str) -> str:
    lines = ["---", "library_name: transformers", "pipeline_tag: text-classification",
             "tags:", "- reward-model", "- rewardlab", "- bradley-terry"]
    if base and not Path(base).is_absolute() and "/" in base:  # a hub id, not a local directory
        lines.append(f"base_model: {base}")
    return "\n".join(lines + ["---"])


def _training_section(base: str, info: dict[str, Any]) -> str:
    if not info.get("config"):
        return ""
    config = info["config"]
    rows = [("base model", f"`{base}`"),
            ("training pairs", f"{info.get('n_pairs', '?'):,}" if isinstance(info.get("n_pairs"), int)
             else "?"),
            ("data fingerprint", f"`{info.get('data_fingerprint', '?')}` (sha256 over the pairs)"),
            ("pairs truncated at max_length", f"{info.get('n_truncated', 0)} (response cut: "
                                               f"{info.get('n_response_truncated', 0)})"),
            ("pairs dropped (token-identical sides)", str(info.get("n_identical", 0))),
            ("epochs / batch size / lr", f"{config.get('epochs')} / {config.get('batch_size')} / "
                                         f"{info.get('lr', config.get('lr'))}"),
            ("max_length", str(config.get("max_length"))),
            ("precision / processes", f"{info.get('precision', '?')} / "
                                      f"{info.get('num_processes', 1)}"),
            ("steps", f"{info.get('steps', '?')} of {info.get('total_steps', '?')}")]
    rows += _rated_rows(info)
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return (f"## Training\n\n| | |\n|---|---|\n{table}\n\nThe full configuration and history are "
            f"in `rewardlab.json`.")


def _rated_rows(info: dict[str, Any]) -> list[tuple[str, str]]:
    """A run on rated prompts (issue 32): its ranking loss, ties, and the tie model it learned."""
    rated, ties = info.get("rated"), info.get("ties")
    rows = []
    if isinstance(rated, dict):
        config = info.get("config", {})
        rows.append(("rated prompts / ties / ranking",
                     f"{rated.get('prompts')} / {rated.get('ties')} ({config.get('ties')}) / "
                     f"{rated.get('ranking')}"))
    if isinstance(ties, dict):
        rows.append(("tie model", f"{ties.get('model')}, parameter {_number(ties.get('parameter'))}, "
                                  f"P(tie) at equal rewards {_number(ties.get('p_tie_at_equal'))}"))
    return rows


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) and math.isfinite(value) else str(value)


def _metrics_section(info: dict[str, Any]) -> str:
    rows: list[tuple[str, Any]] = [(k, info[k]) for k in ("train_loss", "train_accuracy")
                                   if k in info]
    stats = info.get("reward_stats")
    if stats:
        rows += [("reward mean on the train set", stats["mean"]),
                 ("reward std on the train set", stats["std"])]
    evaluation = info.get("eval") or {}
    rows += [(f"{evaluation.get('split', 'test')} {k}", evaluation[k])
             for k in ("accuracy", "reward_gap_mean", "nll", "ece") if k in evaluation]
    if not rows:
        return ""
    table = "\n".join(f"| {k.replace('_', ' ')} | {_number(v)} |" for k, v in rows)
    note = (f"\n\nReward mean/std are over {stats['sequences']:,} responses (both sides of "
            f"{stats['pairs']:,} train pairs) and are saved as `config.mean`/`config.std`."
            if stats else "")
    return f"## Metrics\n\n| metric | value |\n|---|---|\n{table}{note}"


def _loading_section(rule: InputRule, *, encoder: bool, path: Path | str) -> str:
    trl_data = ("conversational rows, e.g. `{\"chosen\": [user, assistant], \"rejected\": [user, "
                "assistant]}` messages" if rule == "chat-template" else
                "the rows pre-tokenized by this input rule (`chosen_ids`/`rejected_ids` columns; "
                "see rewardlab's README, \"Continue training in TRL\")")
    parts = [
        "## Load it elsewhere",
        f"- **transformers**: `AutoModelForSequenceClassification.from_pretrained(\"{path}\")` "
        f"and its tokenizer, as above.",
        f"- **TRL** (continue training): `RewardTrainer(model=\"{path}\", args=RewardConfig(...), "
        f"train_dataset=...)` with {trl_data}. Pad and EOS tokens are set in the tokenizer and "
        f"the config.",
    ]
    if encoder:
        parts.append("- **OpenRLHF** reads decoder reward models (last-token value head named "
                     "`score`); for this encoder use `rewardlab serve` as OpenRLHF's remote reward "
                     "model (`--remote_rm_url http://HOST:PORT/get_reward`).")
    else:
        parts.append(f"- **OpenRLHF**: `--reward_pretrain {path}` (value head `score`, reward at "
                     f"the last token of the attention mask); `--normalize_reward` uses "
                     f"`config.mean`/`config.std`. Or serve it: `rewardlab serve {path}` and "
                     f"`--remote_rm_url http://HOST:PORT/get_reward`.")
    parts.append(f"- **rewardlab**: `rewardlab score {path} --prompt 'Human: …' --response '…'`.")
    return "\n".join(parts)
