"""The preference pair: rewardlab's one data type, and HH-RLHF dialogue parsing.

Every source yields `PreferencePair`s; the store saves them; detectors, training and evaluation read
them. The model input for a pair is the tokenizer text pair `(pair.prompt_text, response)`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

__all__ = [
    "HUMAN",
    "ASSISTANT",
    "Split",
    "SPLITS",
    "PreferencePair",
    "Turn",
    "fingerprint_pairs",
    "parse_dialogue",
    "pair_from_hh",
    "pair_from_turns",
    "render_turns",
]

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")
HUMAN = "Human"
ASSISTANT = "Assistant"

# Turn markers are only recognised at the start of a paragraph, so "Human:" quoted inside a reply
# stays part of that reply (a real trap in HH-RLHF).
_TURN_RE = re.compile(r"(?:^|\n\n)(Human|Assistant):[ ]?")


@dataclass(frozen=True, slots=True)
class Turn:
    role: str  # "Human" | "Assistant"
    text: str


@dataclass(frozen=True, slots=True)
class PreferencePair:
    """One pairwise preference: for `prompt` (after `context`), `chosen` is preferred to `rejected`.

    Parameters
    ----------
    source_index : int
        The row's 0-based position in its source (file, or hub subset and split): the index
        flagged_indices.json and reviews use.
    split : {"train", "test"}
        Which side of the experiment the pair is on.
    prompt : str
        The last human turn, without the "Human:" marker.
    chosen, rejected : str
        The preferred and the other reply to `prompt`, without the "Assistant:" marker.
    context : str, default ""
        The earlier turns rendered HH-style ("Human: …\\n\\nAssistant: …"); "" for a single-turn
        prompt. `prompt_text` joins it with `prompt`.
    subset : str, default ""
        The HH-RLHF subset the row came from (e.g. "harmless-base"), "" when unknown.
    raw_chosen, raw_rejected : str or None, default None
        The source's full transcripts when they were parsed into the fields above (HH rows).
    histories_differ : bool, default False
        True when the two transcripts disagree before the final reply (the `diverging_context`
        detector flags these).
    parse_issue : str or None, default None
        Why the transcript did not parse cleanly; None when it did.
    meta : dict, default {}
        Source-specific extras (a TRL `margin`, synthetic ground truth), stored as JSON and part of
        `content_hash`.
    example_id : int or None, default None
        The store's primary key, set when the pair was loaded from a `Store`.

    >>> pair = PreferencePair(0, "train", "Hi", "Hello! How can I help?", "Go away.")
    >>> pair.prompt_text
    'Human: Hi'
    """

    source_index: int
    split: Split
    prompt: str
    chosen: str
    rejected: str
    context: str = ""
    subset: str = ""
    raw_chosen: str | None = None
    raw_rejected: str | None = None
    histories_differ: bool = False
    parse_issue: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    example_id: int | None = None  # primary key in the store, set when loaded from it

    @property
    def prompt_text(self) -> str:
        """First segment of the model's text pair: the whole conversation up to the reply."""
        last = f"{HUMAN}: {self.prompt}"
        return f"{self.context}\n\n{last}" if self.context else last

    @property
    def margin(self) -> float | None:
        """How much better `chosen` is, from the data's `margin` column (TRL's), else None.

        Kept in `meta`, so it is part of the content hash and survives the store unchanged.
        """
        value = self.meta.get("margin")
        return float(value) if value is not None else None

    @property
    def content_hash(self) -> str:
        """Identity for idempotent ingest; includes the index so true duplicates stay countable."""
        payload = json.dumps(
            [self.source_index, self.split, self.subset, self.context, self.prompt,
             self.chosen, self.rejected, self.meta],
            ensure_ascii=False, sort_keys=True,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def flipped(self) -> PreferencePair:
        """The same pair with chosen and rejected swapped (the `flip` treatment)."""
        return replace(self, chosen=self.rejected, rejected=self.chosen,
                       raw_chosen=self.raw_rejected, raw_rejected=self.raw_chosen)


def fingerprint_pairs(pairs: Iterable[PreferencePair]) -> str:
    """sha256 over the pairs' content hashes, in order: the same data gives the same print.

    Recorded in results.json and rewardlab.json; a resumed run checks it against the saved one.
    """
    digest = hashlib.sha256()
    for p in pairs:
        digest.update(p.content_hash.encode())
    return digest.hexdigest()


def parse_dialogue(text: str) -> list[Turn]:
    """Split an HH-RLHF transcript into turns; text before the first marker is not a turn.

    >>> parse_dialogue("\\n\\nHuman: hi\\n\\nAssistant: hello")
    [Turn(role='Human', text='hi'), Turn(role='Assistant', text='hello')]
    """
    matches = list(_TURN_RE.finditer(text))
    turns: list[Turn] = []
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        turns.append(Turn(role=m.group(1), text=text[m.end():end].strip()))
    return turns


def render_turns(turns: list[Turn]) -> str:
    """Inverse of `parse_dialogue` for context strings (no leading blank lines)."""
    return "\n\n".join(f"{t.role}: {t.text}" for t in turns)


def _split_last_exchange(turns: list[Turn]) -> tuple[list[Turn], str, str, str | None]:
    """(context turns, prompt, final reply, issue) from one side's turns."""
    if not turns:
        return [], "", "", "no turns"
    issue = None
    if turns[-1].role == ASSISTANT:
        reply, head = turns[-1].text, turns[:-1]
    else:
        reply, head, issue = "", turns, "dialogue ends with a human turn"
    if head and head[-1].role == HUMAN:
        return head[:-1], head[-1].text, reply, issue
    return head, "", reply, issue or "no human turn before the final reply"


def pair_from_turns(chosen: list[Turn], rejected: list[Turn], *, source_index: int, split: Split,
                    subset: str = "", raw_chosen: str | None = None,
                    raw_rejected: str | None = None) -> PreferencePair:
    """Build a pair from two conversations that each end with the reply being compared.

    Context and prompt come from the chosen side; `histories_differ` records when the rejected side
    had a different history before its final reply. Never raises: problems go into `parse_issue`.

    >>> t = [Turn("Human", "hi")]
    >>> pair_from_turns(t + [Turn("Assistant", "hello")], t + [Turn("Assistant", "go away")],
    ...                 source_index=0, split="train").prompt_text
    'Human: hi'
    """
    c_ctx, prompt, chosen_reply, c_issue = _split_last_exchange(chosen)
    r_ctx, r_prompt, rejected_reply, r_issue = _split_last_exchange(rejected)
    differ = (c_ctx, prompt) != (r_ctx, r_prompt)
    issues = [f"{side}: {msg}" for side, msg in (("chosen", c_issue), ("rejected", r_issue)) if msg]
    return PreferencePair(
        source_index=source_index, split=split, subset=subset, context=render_turns(c_ctx),
        prompt=prompt, chosen=chosen_reply, rejected=rejected_reply, raw_chosen=raw_chosen,
        raw_rejected=raw_rejected, histories_differ=differ, parse_issue="; ".join(issues) or None,
    )


def _leading_text_issue(side: str, raw: str) -> str | None:
    """Text before the first turn marker is not part of any turn: say so instead of losing it."""
    first = _TURN_RE.search(raw)
    if first and raw[:first.start()].strip():
        return f"{side}: text before the first turn"
    return None


def pair_from_hh(chosen_raw: str, rejected_raw: str, *, source_index: int, split: Split,
                 subset: str = "") -> PreferencePair:
    """Parse one HH-RLHF row. Never raises: what it cannot parse goes into `parse_issue`.

    Context and prompt come from the chosen side; `histories_differ` records when the rejected side
    had a different history before its final reply. A side with no turn markers at all is kept
    whole as the response.
    """
    c_turns, r_turns = parse_dialogue(chosen_raw), parse_dialogue(rejected_raw)
    pair = pair_from_turns(c_turns, r_turns, source_index=source_index, split=split,
                           subset=subset, raw_chosen=chosen_raw, raw_rejected=rejected_raw)
    extra = [i for i in (_leading_text_issue("chosen", chosen_raw),
                         _leading_text_issue("rejected", rejected_raw)) if i]
    return replace(
        pair,
        chosen=pair.chosen if c_turns else chosen_raw.strip(),
        rejected=pair.rejected if r_turns else rejected_raw.strip(),
        parse_issue="; ".join(([pair.parse_issue] if pair.parse_issue else []) + extra) or None,
    )
