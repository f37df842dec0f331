"""Structural rule detectors: empty or identical replies, broken dialogues, duplicates, leakage.

Each is a yes/no rule (score 1 or 0 against a fixed threshold 0.0) that runs in one pass over the
pairs; duplicate detection uses dicts keyed by normalized text, so it is linear in the data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rewardlab.data.pairs import PreferencePair
from rewardlab.flags.detectors.base import (
    Detector,
    DetectorResult,
    PairRule,
    describe_pair,
    normalize_text,
)

__all__ = [
    "EmptyResponse",
    "IdenticalResponses",
    "DivergingContext",
    "DuplicatePair",
    "ConflictingDuplicate",
    "TestLeakage",
]


@dataclass
class EmptyResponse(PairRule):
    """The final chosen or rejected reply is empty or whitespace (HH rows ending "Assistant: ")."""

    name = "empty_response"
    description = "final chosen or rejected reply is empty"

    def reason(self, pair: PreferencePair) -> str:
        chosen_empty, rejected_empty = not pair.chosen.strip(), not pair.rejected.strip()
        if chosen_empty and rejected_empty:
            return "both replies are empty"
        if chosen_empty:
            return "chosen reply is empty"
        return "rejected reply is empty" if rejected_empty else ""


@dataclass
class IdenticalResponses(PairRule):
    """Chosen and rejected are the same text (ignoring case and whitespace): no signal to learn."""

    name = "identical_responses"
    description = "chosen and rejected replies are the same text"

    def reason(self, pair: PreferencePair) -> str:
        if normalize_text(pair.chosen) != normalize_text(pair.rejected):
            return ""
        return "chosen and rejected replies are identical (ignoring case and whitespace)"


@dataclass
class DivergingContext(PairRule):
    """The chosen and rejected dialogues differ before the last turn, or the dialogue did not parse.

    Such a pair compares replies to two different conversations, so its label says little about
    either reply; the model still sees only the chosen side's history.
    """

    name = "diverging_context"
    description = "chosen and rejected dialogues differ before the last turn, or did not parse"

    def reason(self, pair: PreferencePair) -> str:
        parts = []
        if pair.histories_differ:
            parts.append("chosen and rejected dialogues differ before the last turn")
        if pair.parse_issue:
            parts.append(f"dialogue did not parse cleanly ({pair.parse_issue})")
        return "; ".join(parts)


def _pair_key(pair: PreferencePair) -> tuple[str, str, str]:
    """(prompt_text, chosen, rejected), normalized: the identity of a preference judgement."""
    prompt, chosen, rejected = pair.prompt_text, pair.chosen, pair.rejected
    return normalize_text(prompt), normalize_text(chosen), normalize_text(rejected)


@dataclass
class DuplicatePair(Detector):
    """The same prompt, chosen and rejected (normalized) already appeared earlier in train.

    The first occurrence is kept unflagged; every later copy is flagged and its reason names the
    first one, so removing flagged pairs keeps exactly one copy.
    """

    name = "duplicate_pair"
    description = "same prompt, chosen and rejected as an earlier train pair"

    def detect(self, train: Sequence[PreferencePair], *,
               test: Sequence[PreferencePair] = ()) -> DetectorResult:
        first_seen: dict[tuple[str, str, str], int] = {}  # key -> position of first occurrence
        reasons = []
        for i, pair in enumerate(train):
            first = first_seen.setdefault(_pair_key(pair), i)
            reasons.append("" if first == i else f"duplicate of {describe_pair(train[first])}")
        return self.binary_result(reasons)


@dataclass
class ConflictingDuplicate(Detector):
    """The same prompt and two replies appear elsewhere in train with the opposite preference.

    Both sides of a conflict are flagged: without more information neither label can be trusted.
    Pairs whose two replies are identical are left to `identical_responses`.
    """

    name = "conflicting_duplicate"
    description = "same prompt and replies with the opposite preference elsewhere in train"

    def detect(self, train: Sequence[PreferencePair], *,
               test: Sequence[PreferencePair] = ()) -> DetectorResult:
        first_seen: dict[tuple[str, str, str], PreferencePair] = {}
        keys = [_pair_key(p) for p in train]
        for key, pair in zip(keys, train):
            first_seen.setdefault(key, pair)
        reasons = []
        for prompt, chosen, rejected in keys:
            other = first_seen.get((prompt, rejected, chosen)) if chosen != rejected else None
            reasons.append(
                f"{describe_pair(other)} has the same prompt and replies with the opposite "
                "preference" if other is not None else ""
            )
        return self.binary_result(reasons)


@dataclass
class TestLeakage(Detector):
    """The train pair's whole prompt (conversation so far, normalized) also occurs in test.

    Pass the test pairs as `test=`; with no test pairs nothing is flagged.
    """

    __test__ = False  # keep pytest from collecting this class because its name starts with "Test"
    name = "test_leakage"
    description = "train prompt also appears in the test split"

    def detect(self, train: Sequence[PreferencePair], *,
               test: Sequence[PreferencePair] = ()) -> DetectorResult:
        test_prompts: dict[str, PreferencePair] = {}
        for pair in test:
            test_prompts.setdefault(normalize_text(pair.prompt_text), pair)
        reasons = []
        for pair in train:
            hit = test_prompts.get(normalize_text(pair.prompt_text)) if test_prompts else None
            reasons.append(f"prompt also appears in the test split (test {describe_pair(hit)})"
                           if hit is not None else "")
        return self.binary_result(reasons)
