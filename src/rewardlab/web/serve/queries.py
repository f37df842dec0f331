"""How `/get_reward` reads a query: the policy's chat family, then the checkpoint's own rule.

A query is the policy's rendering (`rewardlab.models.query_formats`): its family is detected per
query, or fixed by `--query-format FAMILY`, or read off the policy's own tokenizer
(`--policy-tokenizer DIR`: its chat template's family and its EOS/pad/BOS tokens; a template of
no known family is read with its own delimiters, probed as `input_rule.split_query` probes the
checkpoint's). A query in no known family falls back to the checkpoint's own split (its template,
or the `Assistant:` marker). The (prompt, response) found is scored by the checkpoint's input rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from rewardlab.errors import ModelError
from rewardlab.models.input_rule import split_query
from rewardlab.models.query_formats import (
    FORMATS,
    QueryFormat,
    detect_format,
    known_formats_text,
    read_messages,
    split_policy_query,
)
from rewardlab.models.reward_model import RewardModel

__all__ = ["QueryReader", "make_query_reader"]

Splitter = Callable[[str], tuple[str, str]]
_PROBE = ("RWLPROBEUSER", "RWLPROBEASSISTANT")


@dataclass(frozen=True)
class QueryReader:
    """Splits one `/get_reward` query into (prompt, response); see the module doc."""

    format: QueryFormat | None   # None: detected per query
    end_tokens: tuple[str, ...]  # the checkpoint's and the policy's own EOS/pad/BOS tokens
    own_split: Splitter          # the checkpoint's own split (its template or `Assistant:`)
    policy_split: Splitter | None = None  # a policy template of no known family
    source: str = "detected per query"

    def split(self, query: str) -> tuple[str, str]:
        if self.policy_split is not None:
            return self.policy_split(query)
        if self.format is not None:
            return split_policy_query(query, fmt=self.format, end_tokens=self.end_tokens)
        fmt = detect_format(query, start_tokens=self.end_tokens)
        if fmt is not None:
            return split_policy_query(query, fmt=fmt, end_tokens=self.end_tokens)
        try:
            return self.own_split(query)
        except ModelError as e:
            raise ModelError(f"{e}; known formats: {known_formats_text()}") from e

    def facts(self) -> dict[str, Any]:
        """What `/info` says under "queries"."""
        return {"format": self.format.name if self.format else "auto", "source": self.source,
                "formats": {f.name: f.description for f in FORMATS.values()},
                "end_tokens": list(self.end_tokens)}


def _own_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[str, ...]:
    return tuple(t for t in (tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token)
                 if isinstance(t, str) and t)


def _load_policy_tokenizer(directory: str) -> PreTrainedTokenizerBase:
    if not (Path(directory) / "tokenizer_config.json").is_file():
        raise ModelError(f"--policy-tokenizer {directory}: no tokenizer_config.json there (give "
                         f"the policy's local checkpoint or tokenizer directory)")
    try:
        tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(directory)
    except (OSError, ValueError) as e:
        raise ModelError(f"--policy-tokenizer {directory}: cannot load "
                         f"({type(e).__name__}: {str(e)[:200]})") from e
    return tokenizer


def _policy_family(tokenizer: PreTrainedTokenizerBase) -> QueryFormat | None:
    """The known family the policy's template renders, None when it is none of them."""
    if not getattr(tokenizer, "chat_template", None):
        return FORMATS["hh"]
    messages = [{"role": "user", "content": _PROBE[0]},
                {"role": "assistant", "content": _PROBE[1]}]
    try:
        text = str(tokenizer.apply_chat_template(messages, tokenize=False))
    except Exception as e:  # noqa: BLE001 - jinja raises anything a template author wrote
        raise ModelError(f"--policy-tokenizer: its chat template cannot render a dialogue "
                         f"({type(e).__name__})") from e
    fmt = detect_format(text, start_tokens=_own_tokens(tokenizer))
    if fmt is None or fmt.name == "hh":
        return None
    read = read_messages(text, fmt, end_tokens=_own_tokens(tokenizer))
    return fmt if [m["content"] for m in read[-2:]] == list(_PROBE) else None


def make_query_reader(model: RewardModel, *, query_format: str = "auto",
                      policy_tokenizer: str | None = None) -> QueryReader:
    """The reader for `serve`'s `--query-format` and `--policy-tokenizer`."""
    own = _own_tokens(model.tokenizer)
    forced = FORMATS[query_format] if query_format != "auto" else None
    if policy_tokenizer is None:
        return QueryReader(forced, own, model.split_query,
                           source=f"--query-format {query_format}" if forced else
                           "detected per query")
    policy = _load_policy_tokenizer(policy_tokenizer)
    ends = tuple(dict.fromkeys([*own, *_own_tokens(policy)]))
    family = forced or _policy_family(policy)
    source = f"--policy-tokenizer {policy_tokenizer}"
    if family is not None:
        return QueryReader(family, ends, model.split_query, source=f"{source} ({family.name})")

    def by_policy_template(query: str) -> tuple[str, str]:
        return split_query("chat-template", policy, query)

    return QueryReader(None, ends, model.split_query, by_policy_template,
                       source=f"{source} (its own template)")
