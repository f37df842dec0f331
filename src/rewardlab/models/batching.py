"""Tokenize once, batch by length, pad per batch: the data side of training and scoring.

How a (prompt, response) becomes tokens is the backbone's input rule (`rewardlab.models.input_rule`).
Encoders ("text-pair"): the tokenizer text pair `(prompt_text, response)`. Truncation keeps the
response and the *end* of the prompt (the tokenizer's `truncation_side` is "left", strategy
"only_first"); only when the response alone does not fit the window is it cut too (strategy
"longest_first", which is what a plain `tokenizer(prompt, response, truncation=True)` does).
Decoders ("chat-template", "plain-dialogue"): the rendered dialogue; truncation keeps its *end*
(the last `max_length` tokens, after a leading BOS, which stays), so the prompt is cut from the
left and the reward is still read at the end of the response; a response longer than the window
loses its start. Both kinds are counted, and so are the pairs whose two sides come out
token-identical (`PairEncoding.identical`): training drops them, evaluation reports them.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from transformers import PreTrainedTokenizerBase

from rewardlab.models.input_rule import InputRule, render_input

__all__ = [
    "Encoded",
    "PairEncoding",
    "encode_texts",
    "encode_dialogues",
    "encode_pairs",
    "length_grouped_batches",
    "sorted_batches",
    "pad_flat", "pad_rows",
]


@dataclass
class Encoded:
    """Token ids of N (prompt, response) texts, unpadded."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None  # None when the tokenizer has no segment ids
    truncated: npt.NDArray[np.bool_]  # (N,) some tokens were dropped
    response_truncated: npt.NDArray[np.bool_]  # (N,) the response itself did not fit the window

    @property
    def lengths(self) -> npt.NDArray[np.int64]:
        return np.fromiter((len(ids) for ids in self.input_ids), dtype=np.int64,
                           count=len(self.input_ids))

    def subset(self, idx: Sequence[int]) -> Encoded:
        """Rows `idx`, in that order."""
        types = [self.token_type_ids[i] for i in idx] if self.token_type_ids is not None else None
        rows = np.asarray(idx, dtype=np.int64)
        return Encoded([self.input_ids[i] for i in idx], types, self.truncated[rows],
                       self.response_truncated[rows])


@dataclass
class PairEncoding:
    """Both sides of N preference pairs; row i of `chosen` and of `rejected` is pair i."""

    chosen: Encoded
    rejected: Encoded

    def __len__(self) -> int:
        return len(self.chosen.input_ids)

    def subset(self, idx: Sequence[int]) -> PairEncoding:
        """Pairs `idx`, in that order."""
        return PairEncoding(self.chosen.subset(idx), self.rejected.subset(idx))

    @property
    def lengths(self) -> np.ndarray:
        """(N,) the longer side of each pair: what a pair costs in a padded batch."""
        return np.maximum(self.chosen.lengths, self.rejected.lengths)

    @property
    def truncated(self) -> np.ndarray:
        return self.chosen.truncated | self.rejected.truncated

    @property
    def response_truncated(self) -> np.ndarray:
        return self.chosen.response_truncated | self.rejected.response_truncated

    @property
    def identical(self) -> npt.NDArray[np.bool_]:
        """(N,) both sides are the same tokens (e.g. after truncation): no preference to learn."""
        c, r = self.chosen, self.rejected
        same = [a == b and (c.token_type_ids is None or r.token_type_ids is None
                            or c.token_type_ids[i] == r.token_type_ids[i])
                for i, (a, b) in enumerate(zip(c.input_ids, r.input_ids))]
        return np.array(same, dtype=bool)


def _token_counts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> np.ndarray:
    """(N,) tokens per text without special tokens; each distinct text is tokenized once."""
    unique = list(dict.fromkeys(texts))
    # verbose=False: over-long texts are expected here, truncation comes next
    ids = tokenizer(unique, add_special_tokens=False, verbose=False)["input_ids"] if unique else []
    count = {t: len(i) for t, i in zip(unique, ids)}
    return np.array([count[t] for t in texts], dtype=np.int64)


def encode_texts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                 responses: Sequence[str], *, max_length: int,
                 prompt_tokens: np.ndarray | None = None,
                 rule: InputRule = "text-pair") -> Encoded:
    """Tokenize (prompt, response) pairs in batch by `rule`, truncating to `max_length` tokens.

    For "text-pair" the tokenizer must have `truncation_side="left"` (see
    `rewardlab.models.backbones.configure_tokenizer`).
    `prompt_tokens` (N,) are the prompts' token counts when the caller has them already.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    if rule != "text-pair":
        return encode_dialogues(tokenizer, prompts, responses, max_length=max_length, rule=rule)
    n = len(prompts)
    p_len = _token_counts(tokenizer, prompts) if prompt_tokens is None else prompt_tokens
    r_len = _token_counts(tokenizer, responses)
    special = tokenizer.num_special_tokens_to_add(pair=True)
    truncated = p_len + r_len + special > max_length
    # "only_first" must leave at least one prompt token, else the fast tokenizer raises for the batch
    response_truncated = truncated & (r_len + special >= max_length)
    ids: list[list[int]] = [[] for _ in range(n)]
    types: list[list[int]] | None = [[] for _ in range(n)]
    for strategy, mask in (("only_first", ~response_truncated), ("longest_first", response_truncated)):
        rows = np.flatnonzero(mask)
        if len(rows) == 0:
            continue
        out = tokenizer([prompts[int(i)] for i in rows], [responses[int(i)] for i in rows],
                        truncation=strategy, max_length=max_length)
        seg = out.get("token_type_ids")
        if seg is None:
            types = None
        for k, i in enumerate(rows):
            ids[i] = out["input_ids"][k]
            if types is not None:
                types[i] = seg[k]
    return Encoded(ids, types, truncated, response_truncated)


def encode_dialogues(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                     responses: Sequence[str], *, max_length: int, rule: InputRule) -> Encoded:
    """A decoder's inputs: each dialogue rendered by `rule`, tokenized, cut to its last tokens.

    chat-template text is tokenized without special tokens (the template wrote them), the
    plain-dialogue text with them, as TRL's RewardTrainer does; a leading BOS survives truncation.
    """
    rendered = [render_input(rule, tokenizer, p, r) for p, r in zip(prompts, responses)]
    out = tokenizer([text for text, _ in rendered], add_special_tokens=rule == "plain-dialogue",
                    return_offsets_mapping=True, verbose=False) if rendered else {
        "input_ids": [], "offset_mapping": []}
    n = len(rendered)
    ids: list[list[int]] = []
    truncated, response_truncated = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    for i, (row, offsets) in enumerate(zip(out["input_ids"], out["offset_mapping"])):
        head = 1 if row and tokenizer.bos_token_id is not None and row[0] == tokenizer.bos_token_id \
            else 0  # the BOS a decoder was trained to see first
        keep = max_length - head
        start = rendered[i][1]
        response_tokens = sum(1 for s, e in offsets if s >= start and e > s)
        truncated[i], response_truncated[i] = len(row) > max_length, response_tokens > keep
        ids.append(row[:head] + row[len(row) - keep:] if len(row) > max_length else row)
    return Encoded(ids, None, truncated, response_truncated)


def encode_pairs(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                 chosen: Sequence[str], rejected: Sequence[str], *, max_length: int,
                 rule: InputRule = "text-pair") -> PairEncoding:
    """Encode both sides of N pairs that share their prompt.

    For text pairs the prompts are counted once for both sides: they are the long texts (the whole
    conversation so far); a second count was 17% of encoding the HH sample (0.19 of 1.1 s).
    """
    if rule != "text-pair":
        return PairEncoding(
            encode_dialogues(tokenizer, prompts, chosen, max_length=max_length, rule=rule),
            encode_dialogues(tokenizer, prompts, rejected, max_length=max_length, rule=rule))
    p_len = _token_counts(tokenizer, prompts)
    return PairEncoding(
        encode_texts(tokenizer, prompts, chosen, max_length=max_length, prompt_tokens=p_len),
        encode_texts(tokenizer, prompts, rejected, max_length=max_length, prompt_tokens=p_len))


def length_grouped_batches(lengths: np.ndarray, *, batch_size: int, seed: int, epoch: int,
                           mega_factor: int = 50) -> list[list[int]]:
    """Seeded, shuffled batches of similar length (HF's LengthGroupedSampler idea).

    Shuffle, cut into mega-batches of `mega_factor * batch_size`, sort each by length so a batch pads
    little, then shuffle the order of the batches. Same (seed, epoch) → same batches.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    mega = batch_size * mega_factor
    batches: list[list[int]] = []
    for start in range(0, len(order), mega):
        chunk = order[start:start + mega]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[j:j + batch_size].tolist() for j in range(0, len(chunk), batch_size)]
    return [batches[k] for k in rng.permutation(len(batches))]


def sorted_batches(lengths: np.ndarray, *, batch_size: int) -> list[list[int]]:
    """Batches of indices in descending length: the least padding, for inference."""
    order = np.argsort(-lengths, kind="stable")
    return [order[j:j + batch_size].tolist() for j in range(0, len(order), batch_size)]


def pad_rows(ids: Sequence[list[int]], types: Sequence[list[int]] | None, *, pad_id: int,
             pad_type_id: int = 0, padding_side: str = "right",
             device: torch.device | None = None,
             position_ids: bool = False) -> dict[str, torch.Tensor]:
    """Pad R rows to the longest one: `input_ids`, `attention_mask` (and `token_type_ids`), (R, T).

    `position_ids` adds positions counted over the real tokens (0 at each row's first one), so a
    left-padded decoder row sees the positions it sees unpadded (what OpenRLHF passes, too).
    The rows are laid end to end once and the batch filled by array indexing (`pad_flat`): a
    `torch.tensor` per row was 40% of a bow training step (benchmarks/ranking_steps.py).

    >>> pad_rows([[101, 7, 102], [101, 102]], None, pad_id=0)["input_ids"].tolist()
    [[101, 7, 102], [101, 102, 0]]
    """
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))  # (R,)
    start = np.cumsum(lengths) - lengths  # (R,) where each row begins in the flat array

    def flat(rows: Sequence[list[int]]) -> npt.NDArray[np.int64]:
        return np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64,
                           count=int(lengths.sum()))

    return pad_flat(flat(ids), flat(types) if types else None, start, lengths, pad_id=pad_id,
                    pad_type_id=pad_type_id, padding_side=padding_side, device=device,
                    position_ids=position_ids)


def pad_flat(ids: npt.NDArray[np.int64], types: npt.NDArray[np.int64] | None,
             start: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64], *, pad_id: int,
             pad_type_id: int = 0, padding_side: str = "right", device: torch.device | None = None,
             position_ids: bool = False) -> dict[str, torch.Tensor]:
    """`pad_rows` of rows stored end to end: row r is `ids[start[r]:start[r] + lengths[r]]`
    (`types` alike, or None). One array gather, no per-row loop."""
    width = int(lengths.max())
    col = np.arange(width)[None, :] - ((width - lengths)[:, None] if padding_side == "left"
                                       else 0)  # (R, T) place of each cell in its row
    real = (col >= 0) & (col < lengths[:, None])  # (R, T)
    src = np.where(real, start[:, None] + col, 0)  # (R, T) where a real cell's token sits
    mask = torch.from_numpy(real.astype(np.int64))
    batch = {"input_ids": torch.from_numpy(np.where(real, ids[src], pad_id)),
             "attention_mask": mask}
    if types is not None:
        batch["token_type_ids"] = torch.from_numpy(np.where(real, types[src], pad_type_id))
    if position_ids:
        batch["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)  # (R, T)
    return {k: v.to(device) for k, v in batch.items()} if device is not None else batch
