"""`models.query_formats`: a policy's rendering back into rewardlab's (prompt, response).

A Hypothesis property renders random conversations the way each family's template writes them
(spelled out here from the published templates) and checks the split gives back the HH prompt and
the response, with and without the policy's end tokens, BOS and pads; unit cases cover the
detection, the errors and the adapters' prompt reading.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewardlab.errors import ModelError
from rewardlab.models.query_formats import (
    QUERY_FORMATS,
    detect_format,
    read_rendered_prompt,
    split_policy_query,
    strip_end_tokens,
)

ROLE = {"user": "Human: ", "assistant": "Assistant: ", "system": ""}


def _render(family: str, turns: list[tuple[str, str]]) -> str:
    """The dialogue as the family's template renders it (without BOS)."""
    if family == "chatml":
        return "".join(f"<|im_start|>{r}\n{c}<|im_end|>\n" for r, c in turns)
    if family == "llama3":
        return "".join(f"<|start_header_id|>{r}<|end_header_id|>\n\n{c}<|eot_id|>" for r, c in turns)
    if family == "gemma":
        return "".join(f"<start_of_turn>{'model' if r == 'assistant' else r}\n{c}<end_of_turn>\n"
                       for r, c in turns)
    if family == "phi3":
        return "".join(f"<|{r}|>\n{c}<|end|>\n" for r, c in turns)
    if family == "mistral":
        return "".join(f"[INST] {c} [/INST]" if r == "user" else f"{c}</s>" for r, c in turns)
    return "\n\n".join(ROLE[r] + c for r, c in turns)  # hh


words = st.text(alphabet="abcdefghij XYZ.,?!'\n", min_size=1, max_size=30).map(str.strip).filter(
    lambda s: bool(s) and "\n\n" not in s)


@st.composite
def conversations(draw: st.DrawFn) -> tuple[list[tuple[str, str]], str]:
    n = draw(st.integers(0, 2))
    turns = [("system", draw(words))] if draw(st.booleans()) else []
    for _ in range(n):
        turns += [("user", draw(words)), ("assistant", draw(words))]
    turns.append(("user", draw(words)))
    return turns, draw(words)


@settings(max_examples=150, deadline=None)
@given(family=st.sampled_from(QUERY_FORMATS), conversation=conversations(),
       ends=st.sampled_from(["", "<|im_end|>", "<|eot_id|><|end_of_text|>", "</s>", "<pad><pad>"]),
       bos=st.sampled_from(["", "<s>", "<|begin_of_text|>", "<bos>", "<|endoftext|>"]))
def test_split_recovers_prompt_and_response(family: str,
                                            conversation: tuple[list[tuple[str, str]], str],
                                            ends: str, bos: str) -> None:
    turns, response = conversation
    if family in ("mistral", "gemma", "hh"):  # no system role of their own: the HH lead paragraph
        turns = [t for t in turns if t[0] != "system"]
    query = bos + _render(family, [*turns, ("assistant", response)]) + ends
    prompt = "\n\n".join(ROLE[r] + c for r, c in turns)
    assert detect_format(query) is not None and detect_format(query).name == family
    assert split_policy_query(query) == (prompt, response)


def test_errors_name_the_problem_and_the_formats() -> None:
    with pytest.raises(ModelError, match="known formats: chatml"):
        split_policy_query("no markers here")
    with pytest.raises(ModelError, match="ends with a user turn"):
        split_policy_query("<|im_start|>user\nhi<|im_end|>\n")
    with pytest.raises(ModelError, match="'ipython' turn"):
        split_policy_query("<|start_header_id|>ipython<|end_header_id|>\n\nx<|eot_id|>"
                           "<|start_header_id|>assistant<|end_header_id|>\n\ny")
    with pytest.raises(ModelError, match="not start as a llama3 rendering"):
        from rewardlab.models.query_formats import FORMATS
        split_policy_query("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo",
                           fmt=FORMATS["llama3"])


def test_llama2_system_block_and_left_pads() -> None:
    query = ("</s></s><s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello </s><s>[INST] "
             "More? [/INST] Sure.</s></s>")
    assert split_policy_query(query) == ("Be brief.\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: More?",
                                         "Sure.")


def test_rendered_prompts_and_completions_for_the_adapters() -> None:
    assert read_rendered_prompt("<bos><start_of_turn>user\nHi<end_of_turn>\n"
                                "<start_of_turn>model\n") == "Human: Hi"
    assert read_rendered_prompt("Human: Hi") is None  # HH text stays as the adapters read it
    assert strip_end_tokens("fine<|end|>\n<|endoftext|>") == "fine"
    assert strip_end_tokens("a </s> in the middle</s>") == "a </s> in the middle"
