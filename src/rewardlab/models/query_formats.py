"""Queries as policies render them: one string of a chat family back into rewardlab's dialogue.

An RL trainer hands the reward model what its *policy* produced: the prompt rendered by the
policy's chat template, the response, and whatever special tokens the policy emitted (OpenRLHF
decodes with `skip_special_tokens=False`, so a Qwen policy's query ends with `<|im_end|>` and may
start with pad tokens). The reward model was trained on rewardlab's own input rule, which may be
another family's template, a plain HH dialogue or a text pair. So a query is read in two steps:
the policy's family is recognised by how the string *starts* (after BOS and pad tokens), its turns
are read into messages with that family's delimiters, and the messages become rewardlab's
(prompt, response): the HH prompt (`Human: …\\n\\nAssistant: …`, a system turn as a leading
paragraph, as `rewardlab.integrations.dialogue` writes trainer conversations) and the last
assistant turn, stripped. Scoring them by the checkpoint's own input rule then gives exactly the
reward `rewardlab score` gives the same prompt and response.

The families (`QUERY_FORMATS`), as their published chat templates render a dialogue:

* ``chatml`` (Qwen, many others): ``<|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\n…``
* ``llama3``: ``<|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\nhi<|eot_id|>…``
* ``gemma``: ``<bos><start_of_turn>user\\nhi<end_of_turn>\\n<start_of_turn>model\\n…`` (no system
  role: Gemma's templates write a system text at the start of the first user turn, so it is read
  as part of that turn)
* ``mistral``: ``<s>[INST] hi [/INST] hello</s>[INST] …`` (Llama-2's ``<<SYS>>`` block and
  ``[SYSTEM_PROMPT]`` read as a system turn; templates that fold the system text into a user turn
  give it as part of that turn)
* ``phi3``: ``<|user|>\\nhi<|end|>\\n<|assistant|>\\n…``
* ``hh``: plain ``Human: …\\n\\nAssistant: …`` dialogue (HH-RLHF, OpenRLHF without
  `--apply_chat_template`): split at the last ``Assistant:`` that starts a paragraph, the prompt
  kept as written.

>>> split_policy_query("<|im_start|>system\\nBe brief.<|im_end|>\\n<|im_start|>user\\nHi"
...                    "<|im_end|>\\n<|im_start|>assistant\\nHello!<|im_end|><|endoftext|>")
('Be brief.\\n\\nHuman: Hi', 'Hello!')
>>> split_policy_query("<s>[INST] Hi [/INST] Hello!</s>")
('Human: Hi', 'Hello!')
>>> split_policy_query("\\n\\nHuman: Hi\\n\\nAssistant: Hello!<|eot_id|>")
('Human: Hi', 'Hello!')
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from rewardlab.errors import ModelError

__all__ = [
    "QueryFormat",
    "QUERY_FORMATS",
    "FORMATS",
    "END_TOKENS",
    "START_TOKENS",
    "detect_format",
    "read_messages",
    "messages_to_prompt",
    "split_policy_query",
    "read_rendered_prompt",
    "strip_end_tokens",
    "known_formats_text",
]

Message = dict[str, str]


@dataclass(frozen=True)
class QueryFormat:
    """One chat family: how a rendered dialogue starts, where its turns begin, how they end."""

    name: str
    description: str
    starts: tuple[str, ...]        # a rendered dialogue begins with one of these (after BOS/pads)
    header: re.Pattern[str]        # the start of a turn; group 1 names its role
    roles: Mapping[str, str]       # group 1 → "system" | "user" | "assistant"
    end_of_turn: tuple[str, ...]   # removed from the end of every turn's text
    end_tokens: tuple[str, ...]    # what the family's policies end a sequence with


_CHATML = QueryFormat(
    "chatml", "ChatML (Qwen): <|im_start|>role\\n…<|im_end|>", ("<|im_start|>",),
    re.compile(r"<\|im_start\|>(\w+)\n"), {"system": "system", "user": "user",
                                           "assistant": "assistant"},
    ("<|im_end|>",), ("<|im_end|>", "<|endoftext|>"))
_LLAMA3 = QueryFormat(
    "llama3", "Llama 3: <|start_header_id|>role<|end_header_id|>\\n\\n…<|eot_id|>",
    ("<|start_header_id|>",), re.compile(r"<\|start_header_id\|>(\w+)<\|end_header_id\|>\n\n"),
    {"system": "system", "user": "user", "assistant": "assistant"},
    ("<|eot_id|>", "<|eom_id|>"), ("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"))
_GEMMA = QueryFormat(
    "gemma", "Gemma: <start_of_turn>user|model\\n…<end_of_turn>", ("<start_of_turn>",),
    re.compile(r"<start_of_turn>(\w+)\n"), {"system": "system", "user": "user",
                                            "model": "assistant", "assistant": "assistant"},
    ("<end_of_turn>",), ("<end_of_turn>", "<eos>"))
_MISTRAL = QueryFormat(
    "mistral", "Mistral / Llama 2: [INST] … [/INST] …</s>", ("[INST]", "[SYSTEM_PROMPT]"),
    re.compile(r"(\[INST\]|\[/INST\]|\[SYSTEM_PROMPT\])"),
    {"[INST]": "user", "[/INST]": "assistant", "[SYSTEM_PROMPT]": "system"},
    ("[/SYSTEM_PROMPT]",), ("</s>",))
_PHI3 = QueryFormat(
    "phi3", "Phi-3: <|user|>\\n…<|end|>\\n<|assistant|>\\n…", ("<|system|>", "<|user|>"),
    re.compile(r"<\|(system|user|assistant)\|>\n"), {"system": "system", "user": "user",
                                                     "assistant": "assistant"},
    ("<|end|>",), ("<|end|>", "<|endoftext|>"))
_HH = QueryFormat(
    "hh", "plain HH dialogue: Human: …\\n\\nAssistant: … (no chat template)", (),
    re.compile(r"(?:^|\n\n)(Human|Assistant):[ ]?"), {"Human": "user", "Assistant": "assistant"},
    (), ())

FORMATS: dict[str, QueryFormat] = {f.name: f for f in (_CHATML, _LLAMA3, _GEMMA, _MISTRAL, _PHI3,
                                                       _HH)}
QUERY_FORMATS: tuple[str, ...] = tuple(FORMATS)
# every family's end-of-sequence and common pad tokens: a policy's sequence may end with any
END_TOKENS: tuple[str, ...] = tuple(dict.fromkeys(
    [t for f in FORMATS.values() for t in f.end_tokens]
    + ["<pad>", "<|pad|>", "[PAD]", "<|finetune_right_pad_id|>"]))
# BOS tokens a query may start with (left pads too: END_TOKENS)
START_TOKENS: tuple[str, ...] = ("<|begin_of_text|>", "<bos>", "<s>", "<|startoftext|>")
_LLAMA2_SYSTEM = re.compile(r"^\s*<<SYS>>\n?(.*?)\n?<</SYS>>\s*", re.DOTALL)


def known_formats_text() -> str:
    """The formats a 422 names: `chatml (ChatML (Qwen): …), …`."""
    return "; ".join(f"{f.name} ({f.description})" for f in FORMATS.values())


def _strip_start(text: str, tokens: Iterable[str]) -> str:
    """Remove leading whitespace, BOS and pad tokens (a left-padded batch), in any order."""
    return _strip_repeated(text, tokens, at_end=False)


def strip_end_tokens(text: str, tokens: Iterable[str] = END_TOKENS) -> str:
    """`text` without trailing end/pad tokens and the whitespace between them.

    >>> strip_end_tokens("Hello!<|im_end|>\\n<|endoftext|><|endoftext|>")
    'Hello!'
    """
    return _strip_repeated(text, tokens, at_end=True)


def _strip_repeated(text: str, tokens: Iterable[str], *, at_end: bool) -> str:
    """Strip `tokens` (any order, any number, whitespace between) from one end of `text`; that
    end's whitespace goes with them, and stays where no token was there."""
    tokens = [t for t in tokens if t]
    changed = True
    while changed:
        changed = False
        stripped = text.rstrip() if at_end else text.lstrip()
        for token in tokens:
            if at_end and stripped.endswith(token):
                text, changed = stripped[:-len(token)], True
                break
            if not at_end and stripped.startswith(token):
                text, changed = stripped[len(token):], True
                break
    return text


def detect_format(query: str, *, start_tokens: Iterable[str] = ()) -> QueryFormat | None:
    """The family whose rendering `query` starts with (after BOS/pads); `hh` for a plain dialogue
    with an `Assistant:` turn; None when nothing matches."""
    text = _strip_start(query, [*START_TOKENS, *END_TOKENS, *start_tokens])
    for fmt in FORMATS.values():
        if fmt.starts and text.startswith(fmt.starts):
            return fmt
    return _HH if _HH.header.search(text) else None


def read_messages(query: str, fmt: QueryFormat, *, end_tokens: Iterable[str] = ()
                  ) -> list[Message]:
    """The turns of a query rendered in family `fmt` (not `hh`), each text stripped of its end of
    turn, the end tokens and surrounding whitespace. ModelError when it is not such a rendering."""
    # a BOS ends a turn too where the template opens every turn with one (Llama 2: `</s><s>[INST]`)
    ends = [*fmt.end_of_turn, *END_TOKENS, *START_TOKENS, *end_tokens]
    text = _strip_start(query, [*START_TOKENS, *END_TOKENS, *end_tokens])
    heads = list(fmt.header.finditer(text))
    if not heads or text[:heads[0].start()].strip():
        raise ModelError(f"query does not start as a {fmt.name} rendering ({fmt.description}); "
                         f"known formats: {known_formats_text()}")
    messages: list[Message] = []
    for i, head in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        role = fmt.roles.get(head.group(1))
        if role is None:
            raise ModelError(f"query has a {head.group(1)!r} turn; a reward model scores "
                             f"system, user and assistant turns only")
        messages.append({"role": role, "content": strip_end_tokens(text[head.end():end],
                                                                   ends).strip()})
    return _llama2_system(messages) if fmt is _MISTRAL else messages


def _llama2_system(messages: list[Message]) -> list[Message]:
    """Llama 2's `[INST] <<SYS>>\\nsys\\n<</SYS>>\\n\\nhi [/INST]`: the block as a system turn."""
    if messages and messages[0]["role"] == "user":
        block = _LLAMA2_SYSTEM.match(messages[0]["content"])
        if block:
            rest = messages[0]["content"][block.end():]
            return [{"role": "system", "content": block.group(1).strip()},
                    {"role": "user", "content": rest.strip()}, *messages[1:]]
    return messages


def messages_to_prompt(messages: Sequence[Mapping[str, str]]) -> str:
    """rewardlab's HH prompt of a conversation: a system turn as a leading paragraph, user turns
    `Human: …`, assistant turns `Assistant: …`, joined by a blank line.

    >>> messages_to_prompt([{"role": "system", "content": "Be kind."},
    ...                     {"role": "user", "content": "Hi"}])
    'Be kind.\\n\\nHuman: Hi'
    """
    markers = {"user": "Human: ", "assistant": "Assistant: ", "system": ""}
    return "\n\n".join(markers[m["role"]] + m["content"] for m in messages)


def _split_hh(query: str, ends: Sequence[str]) -> tuple[str, str]:
    """An HH query at its last `Assistant:` paragraph: the prompt as written, the response
    without trailing end tokens (as `input_rule.split_query` splits the plain rules)."""
    marker = next(reversed(list(_HH.header.finditer(query))), None)
    if marker is None or marker.group(1) != "Assistant":
        raise ModelError(f"query has no 'Assistant:' turn (at the start of a paragraph) after its "
                         f"last 'Human:' turn: nothing to score; known formats: "
                         f"{known_formats_text()}")
    return query[:marker.start()].strip(), strip_end_tokens(query[marker.end():], ends)


def split_policy_query(query: str, *, fmt: QueryFormat | None = None,
                       end_tokens: Iterable[str] = ()) -> tuple[str, str]:
    """(prompt, response) of a policy's query in family `fmt` (None: detected), such that
    scoring them by any input rule scores that dialogue. ModelError (naming the known formats)
    when the query is in none of them or has no assistant turn to score."""
    ends = [*END_TOKENS, *end_tokens]
    fmt = fmt or detect_format(query, start_tokens=end_tokens)
    if fmt is None:
        raise ModelError(f"query is in no known format; known formats: {known_formats_text()}")
    if fmt is _HH:
        return _split_hh(_strip_start(query, [*START_TOKENS, *ends]), ends)
    messages = read_messages(query, fmt, end_tokens=end_tokens)
    if messages[-1]["role"] != "assistant":
        raise ModelError(f"query ends with a {messages[-1]['role']} turn, not an assistant "
                         f"turn: nothing to score")
    return messages_to_prompt(messages[:-1]), messages[-1]["content"]


def read_rendered_prompt(text: str) -> str | None:
    """The HH prompt of a prompt rendered by a known chat family (a trailing empty assistant turn,
    the generation prompt, dropped); None when `text` is no such rendering (e.g. plain text).

    >>> read_rendered_prompt("<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n")
    'Human: Hi'
    >>> read_rendered_prompt("Hi there") is None
    True
    """
    fmt = detect_format(text)
    if fmt is None or fmt is _HH:
        return None
    messages = read_messages(text, fmt)
    if messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
        messages = messages[:-1]
    return messages_to_prompt(messages)
