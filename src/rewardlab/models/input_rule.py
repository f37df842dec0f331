"""The model input rule: how a (prompt, response) becomes one token sequence, per kind of backbone.

A reward model is only as good as the agreement between how it was trained and how it is asked, so
rewardlab has exactly one rule per kind of backbone, records it in the checkpoint (`rewardlab.json`
`"input_rule"` and the model card) and applies it in training, `rewardlab score`, evaluation and
serving alike. The prompt is the conversation so far in the HH-RLHF form
(`"Human: …\\n\\nAssistant: …\\n\\nHuman: …"`; a prompt without turn markers is one user turn).

* ``"text-pair"`` (encoders: BERT-family, `bow`): the tokenizer text pair `(prompt, response)`,
  ``tok(prompt, response)``; the reward is read at the pooled first token.
* ``"chat-template"`` (decoders whose tokenizer has a chat template): the dialogue as messages, the
  response as the last assistant turn (`dialogue_messages`, the shape of TRL's conversational
  reward data), rendered with ``tok.apply_chat_template(messages, tokenize=False)`` and tokenized
  with ``add_special_tokens=False`` (the template writes its own BOS), exactly as TRL's
  RewardTrainer tokenizes conversational data.
* ``"plain-dialogue"`` (decoders without a chat template): the turns as plain text with role
  markers, separated by a blank line, then the EOS token, tokenized with the tokenizer's own
  special tokens (TRL's rule for non-conversational data: text + EOS)::

      Human: How do I bake bread?\\n\\nAssistant: Mix flour, water and yeast…<eos>

Decoders read the reward at the last real token. Their pad token must therefore differ from every
token that can end an input (EOS above all): transformers' `*ForSequenceClassification` pools the
rightmost token that is not the pad token, OpenRLHF the last position of the attention mask, and
the two agree only then. `prepare_special_tokens` sees to it when a backbone is loaded (a new
`<|pad|>` token when the tokenizer has none of its own), and gives encoders an EOS token (their
[SEP]), which TRL's RewardTrainer needs.

`split_query` is the inverse for serving: OpenRLHF sends prompt and response as one string, as the
policy produced it.

>>> dialogue_messages("Human: hi\\n\\nAssistant: hello\\n\\nHuman: a joke?", "Why did…")
[{'role': 'user', 'content': 'hi'}, {'role': 'assistant', 'content': 'hello'}, \
{'role': 'user', 'content': 'a joke?'}, {'role': 'assistant', 'content': 'Why did…'}]
>>> render_plain(dialogue_messages("hi", "hello"), eos="</s>")
'Human: hi\\n\\nAssistant: hello</s>'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

from rewardlab.data.pairs import ASSISTANT, HUMAN, parse_dialogue
from rewardlab.errors import ModelError

__all__ = [
    "InputRule",
    "INPUT_RULES",
    "PAD_TOKEN",
    "REWARD_LABEL",
    "choose_rule",
    "is_encoder",
    "dialogue_messages",
    "render_plain",
    "render_input",
    "split_query",
    "prepare_special_tokens",
]

InputRule = Literal["text-pair", "chat-template", "plain-dialogue"]
INPUT_RULES: tuple[InputRule, ...] = ("text-pair", "chat-template", "plain-dialogue")
PAD_TOKEN = "<|pad|>"  # added to a decoder's tokenizer that has no pad token distinct from EOS
REWARD_LABEL = "reward"  # id2label of the one output: {0: "reward"}

_BOW_MODEL_TYPE = "rewardlab-bow"
_ROLES = {HUMAN: "user", ASSISTANT: "assistant"}
_MARKERS = {"user": HUMAN, "assistant": ASSISTANT}
# the last assistant marker at the start of a paragraph (as HH parsing reads turns)
_ASSISTANT_RE = re.compile(r"(?:^|\n\n)Assistant:[ ]?")


def is_encoder(config: PretrainedConfig) -> bool:
    """BERT-family encoders (every masked-LM architecture transformers knows), encoder-decoders
    and `bow`: they read a text pair and pool their first token."""
    model_type = getattr(config, "model_type", "")
    return (model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES or model_type == _BOW_MODEL_TYPE
            or bool(getattr(config, "is_encoder_decoder", False)))


def choose_rule(tokenizer: PreTrainedTokenizerBase, config: PretrainedConfig) -> InputRule:
    """The input rule for a backbone: text-pair for encoders, else chat-template when the
    tokenizer has one, else plain-dialogue."""
    if is_encoder(config):
        return "text-pair"
    return "chat-template" if getattr(tokenizer, "chat_template", None) else "plain-dialogue"


def dialogue_messages(prompt: str, response: str) -> list[dict[str, str]]:
    """The HH dialogue `prompt` + `response` as user/assistant messages, `response` the last one.

    Turns are read as HH-RLHF parsing reads them (a marker counts only at the start of a
    paragraph; turn texts are stripped); text before the first marker, or a prompt without
    markers, is a user turn; consecutive turns of one role are joined by a blank line, since many
    chat templates refuse roles that do not alternate. The response is kept verbatim.
    """
    turns = parse_dialogue(prompt)
    first = re.search(r"(?:^|\n\n)(?:Human|Assistant):", prompt)
    lead = (prompt[:first.start()] if first else prompt).strip()
    messages: list[dict[str, str]] = [{"role": "user", "content": lead}] if lead or not turns else []
    for turn in turns:
        role = _ROLES[turn.role]
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] = f"{messages[-1]['content']}\n\n{turn.text}"
        else:
            messages.append({"role": role, "content": turn.text})
    messages.append({"role": "assistant", "content": response})
    return messages


def render_plain(messages: list[dict[str, str]], *, eos: str) -> str:
    """The plain-dialogue text: `Role: content` turns joined by a blank line, then `eos`."""
    return "\n\n".join(f"{_MARKERS[m['role']]}: {m['content']}" for m in messages) + eos


def render_input(rule: InputRule, tokenizer: PreTrainedTokenizerBase, prompt: str,
                 response: str) -> tuple[str, int]:
    """(text, start) for a decoder rule: the text to tokenize and the character where the
    response begins in it, so truncation can tell the response from the prompt."""
    messages = dialogue_messages(prompt, response)
    if rule == "plain-dialogue":
        eos = tokenizer.eos_token or ""
        text = render_plain(messages, eos=eos)
        return text, len(text) - len(eos) - len(response)
    if rule != "chat-template":
        raise ValueError(f"render_input is for decoder rules, not {rule!r}")
    text = _apply_template(tokenizer, messages)
    shape = _TemplateShape.of(tokenizer)
    start = len(text) - len(shape.closing) - len(response) if shape is not None else -1
    if start >= 0 and text.startswith(response, start):
        return text, start  # the template writes the last turn as `response + closing`
    # another shape: the response starts after what the head of the conversation renders to
    head = _apply_template(tokenizer, messages[:-1])
    return text, next((i for i, (a, b) in enumerate(zip(text, head)) if a != b),
                      min(len(text), len(head)))


def _apply_template(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> str:
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception as e:  # noqa: BLE001 - jinja raises anything a template author wrote
        raise ModelError(f"the chat template cannot render the dialogue "
                         f"({type(e).__name__}: {str(e).strip()[:200]})") from e
    return str(text)


# --- serving: one string back into (prompt, response) --------------------------------------------

def split_query(rule: InputRule, tokenizer: PreTrainedTokenizerBase, query: str
                ) -> tuple[str, str]:
    """(prompt, response) of one string holding both, as a policy produced it (OpenRLHF's
    `/get_reward` queries), such that scoring (prompt, response) scores that string.

    chat-template: the string is read with the template's own delimiters (found by rendering a
    probe dialogue), split at the start of its last assistant turn, and the turns before it are
    written back as an HH prompt. plain-dialogue and text-pair: split at the last "Assistant:"
    marker. Leading pad tokens (a left-padded batch) go, and so does a leading BOS the plain rules
    do not write as text; trailing EOS/pad tokens and the template's end of turn are removed from
    the response.

    >>> from rewardlab.models.backbones import load_backbone
    >>> _, tok = load_backbone("bow", max_length=64, seed=0)  # the MiniLM tokenizer: EOS = [SEP]
    >>> split_query("text-pair", tok, "Human: hi\\n\\nAssistant: hello[SEP]")
    ('Human: hi', 'hello')
    """
    query = _strip_start(tokenizer, query, bos=rule != "chat-template")
    if rule == "chat-template":
        shape = _TemplateShape.of(tokenizer)
        if shape is None:
            raise ModelError(_PROBE_ERRORS[str(tokenizer.chat_template)])
        turns = shape.read(query)
        prompt = "\n\n".join(f"{_MARKERS[m['role']]}: {m['content']}" for m in turns[:-1])
        response = _strip_end(tokenizer, shape.without_closing(_strip_end(tokenizer,
                                                                          turns[-1]["content"])))
        return prompt, response
    if rule not in INPUT_RULES:
        raise ModelError(f"unknown input rule {rule!r}; known: {', '.join(INPUT_RULES)}")
    marker = next(reversed(list(_ASSISTANT_RE.finditer(query))), None)
    if marker is None:
        raise ModelError("query has no 'Assistant:' turn (at the start of a paragraph): cannot "
                         "tell the response from the prompt")
    return query[:marker.start()].strip(), _strip_end(tokenizer, query[marker.end():])


def _strip_start(tokenizer: PreTrainedTokenizerBase, text: str, *, bos: bool) -> str:
    """Remove leading pad tokens, then (when `bos`) one leading BOS token."""
    pad = tokenizer.pad_token
    while pad and text.startswith(pad):
        text = text[len(pad):]
    if bos and tokenizer.bos_token and text.startswith(tokenizer.bos_token):
        text = text[len(tokenizer.bos_token):]
    return text


def _strip_end(tokenizer: PreTrainedTokenizerBase, text: str) -> str:
    """Remove trailing EOS / pad tokens (a policy's sequence ends with them)."""
    ends = [t for t in {tokenizer.eos_token, tokenizer.pad_token} if t]
    stripped = True
    while stripped:
        stripped = False
        for end in ends:
            if text.endswith(end):
                text, stripped = text[:-len(end)], True
    return text


_PROBE = ("RWLPROBEU0", "RWLPROBEA0", "RWLPROBEU1", "RWLPROBEA1")


@dataclass(frozen=True)
class _TemplateShape:
    """A chat template's delimiters: opening + u + user_to_assistant + a + assistant_to_user + …
    + closing, read off a rendered probe dialogue."""

    opening: str
    user_to_assistant: str
    assistant_to_user: str
    closing: str

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase) -> _TemplateShape | None:
        """The shape of the tokenizer's template, None when it has no regular one (cached)."""
        template = str(tokenizer.chat_template)
        if template not in _SHAPES:
            try:
                _SHAPES[template] = cls._probe(tokenizer)
            except ModelError as e:
                _SHAPES[template] = None
                _PROBE_ERRORS[template] = str(e)
        return _SHAPES[template]

    @classmethod
    def _probe(cls, tokenizer: PreTrainedTokenizerBase) -> _TemplateShape:
        roles = ("user", "assistant", "user", "assistant")
        text = _apply_template(tokenizer, [{"role": r, "content": c} for r, c in zip(roles, _PROBE)])
        at = [text.find(p) for p in _PROBE]
        if min(at) < 0 or at != sorted(at):
            raise ModelError("the chat template does not render message contents verbatim and in "
                             "order: queries cannot be split into prompt and response")
        gaps = [text[at[i] + len(_PROBE[i]):at[i + 1]] for i in range(3)]
        if gaps[0] != gaps[2]:
            raise ModelError("the chat template renders user turns irregularly: queries cannot be "
                             "split into prompt and response")
        return cls(text[:at[0]], gaps[0], gaps[1], text[at[3] + len(_PROBE[3]):])

    def read(self, query: str) -> list[dict[str, str]]:
        """The messages of a rendered dialogue that ends with an assistant turn."""
        if not query.startswith(self.opening):
            raise ModelError(f"query does not start as the chat template renders a dialogue "
                             f"({self.opening[:60]!r}); a system turn or another template "
                             f"cannot be scored by this model's input rule")
        rest, messages = query[len(self.opening):], []
        while True:
            cut = rest.find(self.user_to_assistant)
            if cut < 0:
                raise ModelError(f"query has no assistant turn after its last user turn (no "
                                 f"{self.user_to_assistant!r}): nothing to score")
            messages.append({"role": "user", "content": rest[:cut]})
            rest = rest[cut + len(self.user_to_assistant):]
            cut = rest.find(self.assistant_to_user)
            if cut < 0:
                messages.append({"role": "assistant", "content": rest})
                return messages
            messages.append({"role": "assistant", "content": rest[:cut]})
            rest = rest[cut + len(self.assistant_to_user):]

    def without_closing(self, text: str) -> str:
        """The last turn without the template's end of turn, whole or its start (a policy's
        sequence stops at its EOS, e.g. `<|im_end|>` without the newline after it)."""
        for k in range(len(self.closing), 0, -1):
            if self.closing[:k].strip() and text.endswith(self.closing[:k]):
                return text[:-k]
        return text


_SHAPES: dict[str, _TemplateShape | None] = {}
_PROBE_ERRORS: dict[str, str] = {}


# --- special tokens a checkpoint needs ---------------------------------------------------------

def prepare_special_tokens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Give model and tokenizer the special tokens the rule and the HF tools need.

    Encoders: EOS = their separator token when they have none (TRL appends EOS to plain text and
    fails without one). Decoders: a pad token that no input ends with (see the module doc): the
    tokenizer's own when it differs from EOS and from a rendered dialogue's last token, else
    `PAD_TOKEN`, added (the embedding grows only if it has no spare row). Sets `config.pad_token_id`,
    `eos_token_id` and `id2label = {0: "reward"}`.
    """
    config = model.config
    if is_encoder(config):
        if tokenizer.eos_token is None and tokenizer.sep_token is not None:
            tokenizer.eos_token = tokenizer.sep_token
    elif _pad_ends_inputs(tokenizer, choose_rule(tokenizer, config)):
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
        rows = int(getattr(model.get_input_embeddings(), "num_embeddings", 0))
        if len(tokenizer) > rows:  # mean_resizing=False: the pad row is never read (masked out)
            model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.id2label, config.label2id = {0: REWARD_LABEL}, {REWARD_LABEL: 0}


def _pad_ends_inputs(tokenizer: PreTrainedTokenizerBase, rule: InputRule) -> bool:
    """True when the pad token is missing or can be the last token of an input."""
    pad = tokenizer.pad_token_id
    if pad is None or pad == tokenizer.eos_token_id:
        return True
    text, _ = render_input(rule, tokenizer, "Human: hi", "hello")
    ids: list[int] = tokenizer(text, add_special_tokens=rule == "plain-dialogue")["input_ids"]
    return bool(ids) and ids[-1] == pad
