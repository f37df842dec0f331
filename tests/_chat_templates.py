"""Tiny local policy tokenizers carrying the chat templates the families publish.

The templates are copied from the families' own `tokenizer_config.json` (Qwen2-Instruct's ChatML
with its default system turn, Meta-Llama-3-Instruct, Gemma 3 (text parts), Mistral-7B-Instruct-
v0.2, Llama-2-chat (the [INST] family's system block), Phi-3-mini-instruct); the vocabulary is a
few dozen words, trained here: the tokenizers only render and name their special tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

QWEN2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}")
GEMMA3 = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = \"\" -%}{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}"
    "{%- endif -%}"
    "{%- if (message['role'] == 'assistant') -%}{%- set role = \"model\" -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{'<start_of_turn>model\n'}}{%- endif -%}")
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant "
    "roles are supported!') }}{% endif %}{% endfor %}")
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}"
    "{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and "
    "system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}"
    "{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + "
    "' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + "
    "eos_token }}{% endif %}{% endfor %}")
PHI3 = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}"
    "{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}")
# a template of no known family: read with its own delimiters (`--policy-tokenizer`)
CUSTOM = ("{% for m in messages %}{{ '### ' + m['role'] + ':\n' + m['content'] + '\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '### assistant:\n' }}{% endif %}")


@dataclass(frozen=True)
class Policy:
    """A policy tokenizer's family as the server should read it, and its special tokens."""

    name: str             # the tokenizer's name here
    family: str           # the query format it renders
    template: str
    bos: str | None
    eos: str              # what the policy ends a response with
    pad: str              # what OpenRLHF pads a batch with
    system: bool          # the template renders a system turn
    specials: tuple[str, ...]


POLICIES = {p.name: p for p in (
    Policy("qwen2", "chatml", QWEN2, None, "<|im_end|>", "<|endoftext|>", True,
           ("<|im_start|>", "<|im_end|>", "<|endoftext|>")),
    Policy("llama3", "llama3", LLAMA3, "<|begin_of_text|>", "<|eot_id|>", "<|end_of_text|>", True,
           ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
            "<|end_of_text|>")),
    Policy("gemma3", "gemma", GEMMA3, "<bos>", "<end_of_turn>", "<pad>", True,
           ("<bos>", "<start_of_turn>", "<end_of_turn>", "<eos>", "<pad>")),
    Policy("mistral", "mistral", MISTRAL, "<s>", "</s>", "</s>", False, ("<s>", "</s>")),
    Policy("llama2", "mistral", LLAMA2, "<s>", "</s>", "</s>", True, ("<s>", "</s>")),
    Policy("phi3", "phi3", PHI3, "<s>", "<|end|>", "<|endoftext|>", True,
           ("<s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|endoftext|>")),
    Policy("custom", "custom", CUSTOM, None, "<|endoftext|>", "<|endoftext|>", True,
           ("<|endoftext|>",)),
)}


def make_policy_tokenizer(directory: Path, policy: Policy) -> PreTrainedTokenizerBase:
    """A tiny byte-level BPE tokenizer with `policy`'s template and special tokens, saved to
    `directory` (as `--policy-tokenizer DIR` reads it) and returned."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = ["Human Assistant user assistant system model the a of to is what why how"] * 20
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=300, special_tokens=list(policy.specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=policy.bos, eos_token=policy.eos,
                                  pad_token=policy.pad)
    tok.chat_template = policy.template
    tok.save_pretrained(directory)
    return tok
