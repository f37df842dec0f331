"""batching.py: encoding with truncation that keeps the response, padding, and batch plans.

Complements tests/models/test_model.py (one truncated row, one pad case, one length-grouped plan) with
exact boundaries, row order across the two truncation strategies, and Hypothesis properties that
must hold for any input.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from rewardlab.models.backbones import configure_tokenizer, minilm_path
from rewardlab.models.batching import (
    encode_pairs,
    encode_texts,
    length_grouped_batches,
    pad_rows,
    sorted_batches,
)

# Single- and multi-wordpiece words ("tokenization" = 2 pieces, "unbelievably" = 5), punctuation.
WORDS = ("apple", "river", "stone", "tokenization", "unbelievably", "hello,", "Human:", "42", "naïve")


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerBase:
    return configure_tokenizer(AutoTokenizer.from_pretrained(minilm_path()), max_length=64)


def _ids(tok: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def _segments(ids: list[int], types: list[int]) -> tuple[list[int], list[int]]:
    """(prompt tokens, response tokens) of one encoded row, special tokens stripped."""
    first = [i for i, t in zip(ids, types) if t == 0]
    second = [i for i, t in zip(ids, types) if t == 1]
    return first[1:-1], second[:-1]  # [CLS] prompt [SEP] | response [SEP]


def test_a_row_that_exactly_fills_the_window_is_not_truncated(tok: PreTrainedTokenizerBase) -> None:
    response, fits, one_more = "apple river", "stone hello, 42", "tokenization stone hello, 42"
    n_fit = len(_ids(tok, fits)) + 2 + 3  # prompt + response + [CLS] [SEP] [SEP]
    assert len(_ids(tok, one_more)) == len(_ids(tok, fits)) + 2  # "tokenization": 2 pieces
    enc = encode_texts(tok, [fits, one_more], [response, response], max_length=n_fit)
    assert enc.truncated.tolist() == [False, True]
    assert enc.response_truncated.tolist() == [False, False]
    assert enc.lengths.tolist() == [n_fit, n_fit]
    # the two tokens too many are the prompt's first ones: the end of the prompt is kept
    prompt_part, response_part = _segments(enc.input_ids[1], enc.token_type_ids[1])
    assert prompt_part == _ids(tok, fits) and response_part == _ids(tok, response)


def test_token_types_mark_prompt_then_response(tok: PreTrainedTokenizerBase) -> None:
    enc = encode_texts(tok, ["Human: hello, river"], ["unbelievably naïve"], max_length=64)
    ids, types = enc.input_ids[0], enc.token_type_ids[0]
    p, r = _ids(tok, "Human: hello, river"), _ids(tok, "unbelievably naïve")
    assert ids == [tok.cls_token_id, *p, tok.sep_token_id, *r, tok.sep_token_id]
    assert types == [0] * (len(p) + 2) + [1] * (len(r) + 1)


def test_rows_keep_their_order_across_both_truncation_strategies(
        tok: PreTrainedTokenizerBase) -> None:
    """Rows are split into an only_first and a longest_first call; each must land back in place."""
    prompts = ["apple", " ".join(["stone"] * 30), "river", "Human: hi", "42"]
    responses = ["river", "apple", " ".join(["unbelievably"] * 5), "stone stone", ""]
    enc = encode_texts(tok, prompts, responses, max_length=12)
    assert enc.truncated.tolist() == [False, True, True, False, False]
    assert enc.response_truncated.tolist() == [False, False, True, False, False]
    for i, (p, r) in enumerate(zip(prompts, responses)):
        alone = encode_texts(tok, [p], [r], max_length=12)
        assert enc.input_ids[i] == alone.input_ids[0] and enc.token_type_ids[i] == alone.token_type_ids[0]
    # a response that alone overflows is cut from its start, like the prompt (left truncation)
    _, response_part = _segments(enc.input_ids[2], enc.token_type_ids[2])
    assert len(enc.input_ids[2]) == 12 and response_part == _ids(tok, responses[2])[-len(response_part):]


def test_response_that_exactly_fills_the_window_falls_back_to_longest_first(
        tok: PreTrainedTokenizerBase) -> None:
    """only_first would have to leave zero prompt tokens (the fast tokenizer raises on that)."""
    response = " ".join(["apple"] * 9)  # 9 tokens + 3 special = 12
    enc = encode_texts(tok, ["river stone"], [response], max_length=12)
    assert enc.truncated[0] and enc.response_truncated[0] and len(enc.input_ids[0]) == 12


def test_encode_pairs_is_both_sides_encoded_alone(tok: PreTrainedTokenizerBase) -> None:
    prompts = ["apple river", " ".join(["stone"] * 20), "Human: 42"]
    chosen = ["hello, river", "apple", " ".join(["naïve"] * 20)]
    rejected = ["stone", " ".join(["river"] * 8), "apple"]
    enc = encode_pairs(tok, prompts, chosen, rejected, max_length=16)
    for side, texts in ((enc.chosen, chosen), (enc.rejected, rejected)):
        alone = encode_texts(tok, prompts, texts, max_length=16)
        assert side.input_ids == alone.input_ids and side.token_type_ids == alone.token_type_ids
        assert side.truncated.tolist() == alone.truncated.tolist()
        assert side.response_truncated.tolist() == alone.response_truncated.tolist()
    assert len(enc) == 3
    assert enc.lengths.tolist() == np.maximum(enc.chosen.lengths, enc.rejected.lengths).tolist()
    assert enc.truncated.tolist() == [False, True, True]
    assert enc.response_truncated.tolist() == [False, False, True]  # only the chosen side's


def test_given_prompt_counts_are_used_as_is(tok: PreTrainedTokenizerBase) -> None:
    prompts, responses = ["apple river stone", "stone " * 9], ["42", "river"]
    counted = encode_texts(tok, prompts, responses, max_length=8)
    passed = encode_texts(tok, prompts, responses, max_length=8, prompt_tokens=np.array([3, 9]))
    assert passed.input_ids == counted.input_ids and passed.token_type_ids == counted.token_type_ids
    assert passed.truncated.tolist() == counted.truncated.tolist() == [False, True]


def test_empty_and_mismatched_inputs(tok: PreTrainedTokenizerBase) -> None:
    empty = encode_texts(tok, [], [], max_length=8)
    assert empty.input_ids == [] and empty.lengths.tolist() == [] and empty.truncated.tolist() == []
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        encode_texts(tok, ["a", "b"], ["c"], max_length=8)


_text = st.lists(st.sampled_from(WORDS), max_size=12).map(" ".join)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(_text, _text), min_size=1, max_size=4),
       max_length=st.integers(4, 24))
def test_encoding_property(tok: PreTrainedTokenizerBase, rows: list[tuple[str, str]],
                           max_length: int) -> None:
    """For any texts: rows fit the window, untruncated rows are the plain tokenization, truncated
    rows keep the end of the prompt and, while it fits, the whole response; both are counted."""
    prompts, responses = [p for p, _ in rows], [r for _, r in rows]
    enc = encode_texts(tok, prompts, responses, max_length=max_length)
    for i, (p, r) in enumerate(rows):
        p_ids, r_ids, ids = _ids(tok, p), _ids(tok, r), enc.input_ids[i]
        full = len(p_ids) + len(r_ids) + 3
        assert bool(enc.truncated[i]) == (full > max_length)
        assert len(ids) == min(full, max_length) and len(enc.token_type_ids[i]) == len(ids)
        prompt_part, response_part = _segments(ids, enc.token_type_ids[i])
        assert prompt_part == p_ids[len(p_ids) - len(prompt_part):]  # a suffix: the end survives
        if not enc.truncated[i]:  # (batch form: a single-call tok(p, "") drops the empty pair)
            assert ids == tok([p], [r])["input_ids"][0]
        elif not enc.response_truncated[i]:
            assert response_part == r_ids and len(prompt_part) >= 1
        else:  # only here may the response be cut, and then it really was
            assert len(r_ids) + 3 >= max_length
            assert response_part == r_ids[len(r_ids) - len(response_part):]


# ---------------------------------------------------------------- padding


def test_pad_rows_right_and_left_with_token_types() -> None:
    ids, types = [[5, 6, 7], [8], [9, 10]], [[0, 1, 1], [1], [0, 1]]
    right = pad_rows(ids, types, pad_id=3, pad_type_id=2)
    assert right["input_ids"].tolist() == [[5, 6, 7], [8, 3, 3], [9, 10, 3]]
    assert right["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert right["token_type_ids"].tolist() == [[0, 1, 1], [1, 2, 2], [0, 1, 2]]
    left = pad_rows(ids, types, pad_id=3, pad_type_id=2, padding_side="left")
    assert left["input_ids"].tolist() == [[5, 6, 7], [3, 3, 8], [3, 9, 10]]
    assert left["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]
    assert left["token_type_ids"].tolist() == [[0, 1, 1], [2, 2, 1], [2, 0, 1]]
    assert {v.dtype for v in (*right.values(), *left.values())} == {torch.long}
    on_cpu = pad_rows(ids, None, pad_id=0, device=torch.device("cpu"))
    assert set(on_cpu) == {"input_ids", "attention_mask"}
    assert torch.equal(on_cpu["attention_mask"], right["attention_mask"])


@given(rows=st.lists(st.lists(st.integers(1, 30_000), min_size=1, max_size=12), min_size=1,
                     max_size=8),
       side=st.sampled_from(["right", "left"]))
def test_padding_is_undone_by_the_mask(rows: list[list[int]], side: str) -> None:
    types = [[k % 2 for k in range(len(r))] for r in rows]
    batch = pad_rows(rows, types, pad_id=0, pad_type_id=0, padding_side=side)
    width = max(len(r) for r in rows)
    assert batch["input_ids"].shape == (len(rows), width)
    for i, row in enumerate(rows):
        mask = batch["attention_mask"][i].bool()
        assert batch["input_ids"][i][mask].tolist() == row and int(mask.sum()) == len(row)
        assert batch["token_type_ids"][i][mask].tolist() == types[i]
        assert not batch["input_ids"][i][~mask].any()  # padding is pad_id
        real = torch.nonzero(mask).flatten().tolist()  # contiguous, on the chosen side
        assert real == (list(range(width - len(row), width)) if side == "left"
                        else list(range(len(row))))


# ---------------------------------------------------------------- batch plans


def test_sorted_batches_longest_first_ties_in_index_order() -> None:
    lengths = np.array([3, 9, 3, 7, 9, 1, 3])
    batches = sorted_batches(lengths, batch_size=3)
    assert batches == [[1, 4, 3], [0, 2, 6], [5]]
    assert sorted_batches(np.array([], dtype=np.int64), batch_size=4) == []
    assert sorted_batches(lengths, batch_size=100) == [[1, 4, 3, 0, 2, 6, 5]]


@st.composite
def _lengths(draw: st.DrawFn) -> np.ndarray:
    """Any number of rows, 0 to several mega-batches (a drawn size spreads wider than a list's)."""
    n = draw(st.integers(0, 250))
    return np.array(draw(st.lists(st.integers(1, 64), min_size=n, max_size=n)), dtype=np.int64)


@given(lengths=_lengths(), batch_size=st.integers(1, 12), seed=st.integers(0, 2**31),
       epoch=st.integers(0, 5), mega_factor=st.integers(1, 3))
@example(lengths=np.array([], dtype=np.int64), batch_size=4, seed=0, epoch=0, mega_factor=1)
@example(lengths=np.full(8, 5), batch_size=8, seed=0, epoch=0, mega_factor=1)  # ties, one batch
@example(lengths=np.arange(1, 104), batch_size=5, seed=3, epoch=1, mega_factor=2)  # 11 mega-batches
def test_length_grouped_batches_cover_every_index_once(lengths: np.ndarray, batch_size: int,
                                                       seed: int, epoch: int,
                                                       mega_factor: int) -> None:
    batches = length_grouped_batches(lengths, batch_size=batch_size, seed=seed, epoch=epoch,
                                     mega_factor=mega_factor)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))  # every index exactly once
    assert all(1 <= len(b) <= batch_size for b in batches)
    assert all(type(i) is int for i in flat)
    # only the last batch of each mega-batch can be short
    n_mega = -(-len(lengths) // (batch_size * mega_factor))
    assert sum(len(b) < batch_size for b in batches) <= n_mega
    # within a batch, lengths descend (cut from a length-sorted mega-batch)
    assert all(np.all(np.diff(lengths[b]) <= 0) for b in batches)
    again = length_grouped_batches(lengths, batch_size=batch_size, seed=seed, epoch=epoch,
                                   mega_factor=mega_factor)
    assert again == batches


def test_length_grouped_batches_change_with_seed_and_epoch() -> None:
    lengths = np.arange(64) % 17 + 1
    plans = {(s, e): length_grouped_batches(lengths, batch_size=4, seed=s, epoch=e)
             for s in (0, 1) for e in (0, 1)}
    as_tuples = {k: tuple(map(tuple, v)) for k, v in plans.items()}
    assert len(set(as_tuples.values())) == 4  # each (seed, epoch) its own order
