"""Trainer-side prompts and completions as the (prompt, response) texts rewardlab models read.

TRL and verl hand a reward function either plain strings or conversations (lists of
`{"role", "content"}` messages). rewardlab's prompt is the conversation so far in HH-RLHF form
(`"Human: …\\n\\nAssistant: …\\n\\nHuman: …"`), and the model's input rule takes it from there
(text pair, chat template or plain dialogue), as in training. So:

* a conversational prompt becomes HH turns: user → `Human:`, assistant → `Assistant:`; a system
  message becomes a leading paragraph (HH data has no system turns: the model never saw one);
* a plain prompt is used as it is, minus a trailing `Assistant:` cue (HH-style prompts end with
  one; rewardlab's prompt stops before it); a prompt string rendered by a known chat template
  (ChatML, Llama 3, Gemma, Mistral, Phi-3: `rewardlab.models.query_formats`) is read back into its
  turns first, its generation prompt dropped;
* a completion is the text of its messages, joined by a blank line (one assistant message, as a
  rule); a policy's trailing end tokens (`<|im_end|>`, `<|eot_id|>`, `</s>`, …) are removed and
  responses are stripped, as HH replies are in training.

>>> prompt_text([{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}])
'Be kind.\\n\\nHuman: Hi'
>>> prompt_text("\\n\\nHuman: Hi\\n\\nAssistant:")
'Human: Hi'
>>> prompt_text("<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n")
'Human: Hi'
>>> completion_text([{"role": "assistant", "content": " Hello! "}])
'Hello!'
>>> completion_text("Hello!<|eot_id|>")
'Hello!'
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from rewardlab.errors import SourceError
from rewardlab.models.query_formats import read_rendered_prompt, strip_end_tokens

__all__ = ["Messages", "prompt_text", "completion_text"]

Messages = Sequence[Mapping[str, Any]]

_MARKERS = {"user": "Human", "assistant": "Assistant"}
_CUE = re.compile(r"(?:^|\n\n)Assistant:\s*$")  # the generation cue an HH prompt ends with


def _content(message: Mapping[str, Any], where: str) -> str:
    """A message's text: a string, or the text parts of a multimodal content list."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(str(part.get("text", "")) for part in content
                       if isinstance(part, Mapping) and part.get("type", "text") == "text")
    raise SourceError(f"{where}: message content must be text or a list of text parts "
                     f"(got {type(content).__name__})")


def prompt_text(prompt: str | Messages) -> str:
    """The HH prompt text of a plain or conversational prompt."""
    if isinstance(prompt, str):
        rendered = read_rendered_prompt(prompt)
        return rendered if rendered is not None else _CUE.sub("", prompt).strip()
    parts = []
    for i, message in enumerate(prompt):
        role = message.get("role")
        text = _content(message, f"prompt message {i}").strip()
        if role == "system":
            parts.append(text)
        elif role in _MARKERS:
            parts.append(f"{_MARKERS[str(role)]}: {text}")
        else:
            raise SourceError(f"prompt message {i}: role {role!r} has no place in an HH dialogue "
                             f"(system, user and assistant do)")
    return "\n\n".join(parts)


def completion_text(completion: str | Messages) -> str:
    """The response text of a plain or conversational completion."""
    if isinstance(completion, str):
        return strip_end_tokens(completion).strip()
    return "\n\n".join(_content(m, f"completion message {i}").strip()
                       for i, m in enumerate(completion)).strip()
