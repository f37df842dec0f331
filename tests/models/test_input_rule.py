"""input_rule.py + the decoder side of batching.py: one rule per backbone, messages as TRL's,
truncation that keeps the end, identical pairs counted, queries split back (serving)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase

from rewardlab.errors import ModelError
from rewardlab.models.backbones import load_backbone
from rewardlab.models.batching import encode_dialogues, encode_pairs, pad_rows
from rewardlab.models.input_rule import (
    PAD_TOKEN,
    choose_rule,
    dialogue_messages,
    render_input,
    render_plain,
    split_query,
)
from tests._tiny import make_tiny_backbone, make_tiny_decoder

# Qwen2's template (a default system turn) and a Llama-3-like one that trims contents
QWEN2_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant."
    "<|im_end|>\n' }}{% endif %}{% for message in messages %}{{ '<|im_start|>' + message['role'] "
    "+ '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
LLAMA3_TEMPLATE = (
    "{{ '<|begin_of_text|>' }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + "
    "'<|end_header_id|>\n\n' + m['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}")


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_decoder(tmp_path_factory.mktemp("qwen"), "qwen2")


@pytest.fixture(scope="module")
def chat_tok(qwen: Path) -> PreTrainedTokenizerBase:
    """The tiny Qwen2 tokenizer as rewardlab prepares it (a distinct pad token)."""
    return load_backbone(str(qwen), max_length=64, seed=0)[1]


def _with_template(tok: PreTrainedTokenizerBase, template: str | None) -> PreTrainedTokenizerBase:
    other = copy.deepcopy(tok)
    other.chat_template = template
    return other


def test_choose_rule_per_backbone(tmp_path: Path, qwen: Path) -> None:
    bert = make_tiny_backbone(tmp_path / "bert")
    assert choose_rule(AutoTokenizer.from_pretrained(bert), AutoConfig.from_pretrained(bert)) \
        == "text-pair"
    bow_model, bow_tok = load_backbone("bow", max_length=32, seed=0)
    assert choose_rule(bow_tok, bow_model.config) == "text-pair"
    tok, config = AutoTokenizer.from_pretrained(qwen), AutoConfig.from_pretrained(qwen)
    assert choose_rule(tok, config) == "chat-template"
    assert choose_rule(_with_template(tok, None), config) == "plain-dialogue"
    gpt2 = make_tiny_decoder(tmp_path / "gpt2", "gpt2", chat=False)
    assert choose_rule(AutoTokenizer.from_pretrained(gpt2), AutoConfig.from_pretrained(gpt2)) \
        == "plain-dialogue"


def test_dialogue_messages_is_trl_conversational_data() -> None:
    from trl.data_utils import is_conversational

    hh = "Human: hi\n\nAssistant: hello, say \"Human: x\" to me\n\nHuman: a joke?"
    messages = dialogue_messages(hh, "  Why did the chicken…")
    assert messages == [{"role": "user", "content": "hi"},
                        {"role": "assistant", "content": "hello, say \"Human: x\" to me"},
                        {"role": "user", "content": "a joke?"},
                        {"role": "assistant", "content": "  Why did the chicken…"}]
    assert is_conversational({"chosen": messages, "rejected": messages})
    assert dialogue_messages("no markers at all ", "ok") == [
        {"role": "user", "content": "no markers at all"}, {"role": "assistant", "content": "ok"}]
    assert dialogue_messages("", "ok")[0] == {"role": "user", "content": ""}
    # text before the first marker and repeated roles join one turn: templates demand alternation
    assert dialogue_messages("Be brief.\n\nHuman: a\n\nHuman: b", "c")[:1] == [
        {"role": "user", "content": "Be brief.\n\na\n\nb"}]


def test_plain_dialogue_render_and_response_start(chat_tok: PreTrainedTokenizerBase) -> None:
    text = render_plain(dialogue_messages("Human: hi\n\nAssistant: yo\n\nHuman: and?", "fine"),
                        eos="<eos>")
    assert text == "Human: hi\n\nAssistant: yo\n\nHuman: and?\n\nAssistant: fine<eos>"
    plain = _with_template(chat_tok, None)
    text, start = render_input("plain-dialogue", plain, "Human: hi", "fine")
    assert text == "Human: hi\n\nAssistant: fine<|endoftext|>" and text[start:] == "fine<|endoftext|>"


@pytest.mark.parametrize("template", [None, QWEN2_TEMPLATE, LLAMA3_TEMPLATE])
def test_chat_template_render_matches_apply_chat_template(chat_tok: PreTrainedTokenizerBase,
                                                          template: str | None) -> None:
    tok = chat_tok if template is None else _with_template(chat_tok, template)
    text, start = render_input("chat-template", tok, "Human: hi\n\nAssistant: yo\n\nHuman: ok?",
                               " sure ")
    messages = dialogue_messages("Human: hi\n\nAssistant: yo\n\nHuman: ok?", " sure ")
    assert text == tok.apply_chat_template(messages, tokenize=False)
    # the response part starts at the last assistant turn (Llama's trim: right after its header)
    assert text[start:].lstrip().startswith("sure") or text[start:].startswith("<|start_header_id")
    assert "ok?" not in text[start:]


def test_decoder_encoding_is_trls_tokenization(chat_tok: PreTrainedTokenizerBase) -> None:
    prompt, response = "Human: question 1: apple kite", "wonderful dog"
    enc = encode_dialogues(chat_tok, [prompt], [response], max_length=64, rule="chat-template")
    trl = chat_tok.apply_chat_template(dialogue_messages(prompt, response), tokenize=True,
                                       return_dict=True)["input_ids"]  # as TRL's _tokenize
    assert enc.input_ids == [trl] and enc.token_type_ids is None and not enc.truncated.any()
    plain = _with_template(chat_tok, None)
    enc = encode_dialogues(plain, [prompt], [response], max_length=64, rule="plain-dialogue")
    text = f"{prompt}\n\nAssistant: {response}"
    assert enc.input_ids == [plain(text + plain.eos_token)["input_ids"]]  # TRL: text + EOS
    assert enc.input_ids[0][-1] == plain.eos_token_id != plain.pad_token_id


def test_decoder_truncation_keeps_the_end_and_bos(chat_tok: PreTrainedTokenizerBase) -> None:
    long_prompt = "Human: " + " ".join(["apple banana"] * 40)
    enc = encode_dialogues(chat_tok, [long_prompt, "Human: hi"], ["wonderful kite", "ok"],
                           max_length=24, rule="chat-template")
    full = chat_tok.apply_chat_template(dialogue_messages(long_prompt, "wonderful kite"),
                                        tokenize=True, return_dict=True)["input_ids"]
    assert len(enc.input_ids[0]) == 24 and enc.input_ids[0] == full[-24:]
    assert enc.truncated.tolist() == [True, False] and not enc.response_truncated.any()
    assert "wonderful kite" in chat_tok.decode(enc.input_ids[0])
    bos = _with_template(chat_tok, LLAMA3_TEMPLATE)
    bos.add_special_tokens({"bos_token": "<|begin_of_text|>"})
    enc = encode_dialogues(bos, [long_prompt], ["wonderful kite"], max_length=24,
                           rule="chat-template")
    full = bos.apply_chat_template(dialogue_messages(long_prompt, "wonderful kite"),
                                   tokenize=True, return_dict=True)["input_ids"]
    assert enc.input_ids[0] == full[:1] + full[-23:] and full[0] == bos.bos_token_id


def test_pairs_identical_after_truncation_are_marked(chat_tok: PreTrainedTokenizerBase) -> None:
    tail = " ".join(["kite"] * 60)
    enc = encode_pairs(chat_tok, ["Human: a", "Human: b", "Human: c"],
                       [f"apple {tail}", "wonderful", "same"], [f"dog {tail}", "dog", "same"],
                       max_length=16, rule="chat-template")
    assert enc.identical.tolist() == [True, False, True]  # cut to the same end; equal texts
    assert enc.response_truncated.tolist() == [True, False, False]


def test_prepared_decoder_pad_differs_from_eos(qwen: Path) -> None:
    raw = AutoTokenizer.from_pretrained(qwen)
    assert raw.pad_token == raw.eos_token  # the tiny tokenizer pads with EOS, as many decoders
    model, tok = load_backbone(str(qwen), max_length=64, seed=0)
    assert tok.pad_token == PAD_TOKEN and tok.pad_token_id != tok.eos_token_id
    assert model.config.pad_token_id == tok.pad_token_id
    assert model.get_input_embeddings().weight.shape[0] >= len(tok)
    assert model.config.id2label == {0: "reward"}


def test_prepared_encoder_has_an_eos(tmp_path: Path) -> None:
    model, tok = load_backbone(str(make_tiny_backbone(tmp_path / "bert")), max_length=32, seed=0)
    assert tok.eos_token == tok.sep_token == "[SEP]"
    assert model.config.eos_token_id == tok.sep_token_id
    assert tok("a", "b")["input_ids"] == AutoTokenizer.from_pretrained(tmp_path / "bert")(
        "a", "b")["input_ids"]  # the text pair is unchanged


def test_pad_rows_positions_count_real_tokens() -> None:
    left = pad_rows([[5, 6, 7], [8]], None, pad_id=0, padding_side="left", position_ids=True)
    assert left["position_ids"].tolist() == [[0, 1, 2], [0, 0, 0]]
    right = pad_rows([[5, 6, 7], [8]], None, pad_id=0, position_ids=True)
    assert right["position_ids"][0].tolist() == [0, 1, 2] and right["position_ids"][1, 0] == 0


# --- split_query: the serving inverse -----------------------------------------------------------

def test_split_query_chat_template(chat_tok: PreTrainedTokenizerBase) -> None:
    prompt = "Human: hi\n\nAssistant: hello\n\nHuman: a joke?"
    text, _ = render_input("chat-template", chat_tok, prompt, "Why did…")
    assert split_query("chat-template", chat_tok, text) == (prompt, "Why did…")
    # as a policy's sequence ends: its EOS, then padding, no newline after the end of turn
    policy = text.removesuffix("\n") + chat_tok.pad_token * 3
    assert split_query("chat-template", chat_tok, policy) == (prompt, "Why did…")
    generation = chat_tok.apply_chat_template(dialogue_messages(prompt, "")[:-1], tokenize=False,
                                              add_generation_prompt=True)
    assert split_query("chat-template", chat_tok, generation + "Why did…<|im_end|>") == (
        prompt, "Why did…")
    left_padded = chat_tok.pad_token * 2 + text  # decoded from a left-padded batch
    assert split_query("chat-template", chat_tok, left_padded) == (prompt, "Why did…")


def test_split_query_plain_dialogue_as_a_policy_decodes_it(chat_tok: PreTrainedTokenizerBase
                                                           ) -> None:
    plain = _with_template(chat_tok, None)
    plain.add_special_tokens({"bos_token": "<|im_start|>"})  # a BOS the tokenizer itself adds
    decoded = f"{plain.pad_token}<|im_start|>Human: hi\n\nAssistant: hello{plain.eos_token}"
    assert split_query("plain-dialogue", plain, decoded) == ("Human: hi", "hello")


def test_split_query_errors_name_the_problem(chat_tok: PreTrainedTokenizerBase) -> None:
    with pytest.raises(ModelError, match="no assistant turn"):
        split_query("chat-template", chat_tok, "<|im_start|>user\nhi<|im_end|>\n")
    with pytest.raises(ModelError, match="does not start as the chat template"):
        split_query("chat-template", chat_tok, "<|im_start|>system\nBe terse.<|im_end|>\n")
    with pytest.raises(ModelError, match="no 'Assistant:' turn"):
        split_query("plain-dialogue", chat_tok, "Human: hi there")
    with pytest.raises(ModelError, match="unknown input rule"):
        split_query("xml", chat_tok, "Human: hi\n\nAssistant: x")  # type: ignore[arg-type]


@pytest.mark.parametrize("template", [QWEN2_TEMPLATE, LLAMA3_TEMPLATE])
def test_split_query_other_templates(chat_tok: PreTrainedTokenizerBase, template: str) -> None:
    tok = _with_template(chat_tok, template)
    prompt = "Human: hi\n\nAssistant: hello\n\nHuman: and you?"
    text, _ = render_input("chat-template", tok, prompt, "fine")
    assert split_query("chat-template", tok, text) == (prompt, "fine")


_content = st.text(alphabet="abcxyz ,.?!\n", min_size=1, max_size=12).map(str.strip).filter(bool)


@settings(max_examples=60, deadline=None)
@given(turns=st.lists(st.tuples(_content, _content), min_size=1, max_size=3),
       response=st.text(alphabet="abcxyz ,.?!\n", max_size=12))
def test_split_query_inverts_every_rule(chat_tok: PreTrainedTokenizerBase,
                                        turns: list[tuple[str, str]], response: str) -> None:
    """Render any dialogue by a rule, split the string back: the same messages come out."""
    flat = [f"Human: {u}\n\nAssistant: {a}" for u, a in turns]
    prompt = "\n\n".join(flat)[: -len(f"\n\nAssistant: {turns[-1][1]}")]
    messages = dialogue_messages(prompt, response)
    plain = _with_template(chat_tok, None)
    for rule, tok in (("chat-template", chat_tok), ("plain-dialogue", plain)):
        text, _ = render_input(rule, tok, prompt, response)  # type: ignore[arg-type]
        assert dialogue_messages(*split_query(rule, tok, text)) == messages  # type: ignore[arg-type]
    got = split_query("text-pair", plain, f"{prompt}\n\nAssistant: {response}")
    assert dialogue_messages(*got) == messages
