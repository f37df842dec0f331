"""Text-content rule detectors: repetition, readability gaps, refusals, unsafe prompts.

All are cheap heuristics over the raw text (regexes, word counts); they point a reviewer at pairs
worth reading, they do not prove a label wrong.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rewardlab.data.pairs import HUMAN, PreferencePair, parse_dialogue
from rewardlab.flags.detectors.base import Detector, DetectorResult, percentile_threshold, reasons_where

__all__ = [
    "Repetition",
    "ReadabilityMismatch",
    "RefusalBias",
    "UnsafePrompt",
    "flesch_reading_ease",
    "repeated_ngram_fraction",
]

_SIDES = ("chosen", "rejected")


def repeated_ngram_fraction(text: str, n: int = 3, *, min_words: int = 8) -> float:
    """Share of the word n-grams of `text` that repeat an earlier n-gram (0.0 below `min_words`).

    >>> repeated_ngram_fraction("ha ha ha ha ha ha ha ha")
    0.8333333333333334
    """
    words = text.casefold().split()
    if len(words) < max(min_words, n):
        return 0.0
    grams = list(zip(*(words[i:] for i in range(n))))
    return 1.0 - len(set(grams)) / len(grams)


@dataclass
class Repetition(Detector):
    """A reply dominated by repeated word 3-grams (covers repeated lines and degenerate loops).

    Score = the larger repeated-3-gram fraction of the two replies; replies shorter than
    `min_words` words score 0 because a few words cannot be "dominated" by repetition.
    """

    name = "repetition"
    description = "a reply is dominated by repeated word 3-grams"
    threshold: float = 0.5
    min_words: int = 8

    def detect(self, train: Sequence[PreferencePair], *,
               test: Sequence[PreferencePair] = ()) -> DetectorResult:
        # (N, 2) chosen column first, then rejected
        fractions = np.array(
            [[repeated_ngram_fraction(p.chosen, min_words=self.min_words),
              repeated_ngram_fraction(p.rejected, min_words=self.min_words)] for p in train],
            dtype=np.float64).reshape(-1, 2)
        scores = fractions.max(axis=1)
        flagged = scores >= self.threshold
        worst = fractions.argmax(axis=1)
        return self.result(scores, flagged, reasons_where(flagged, lambda i: (
            f"{_SIDES[worst[i]]} reply repeats itself: {scores[i]:.0%} of its word 3-grams are "
            f"repeats (threshold {self.threshold:.0%})")), threshold=self.threshold)


_WORD_RE = re.compile(r"[A-Za-z]+")
_SENTENCE_END_RE = re.compile(r"[.!?]+")
_VOWEL_GROUP_RE = re.compile(r"[aeiouy]+")
_SYLLABLE_CACHE: dict[str, int] = {}


def _syllables(word: str) -> int:
    """Vowel groups, minus a silent final "e" ("make", not "table" or "see"); at least 1."""
    count = _SYLLABLE_CACHE.get(word)
    if count is None:
        lower = word.lower()
        count = len(_VOWEL_GROUP_RE.findall(lower))
        if count > 1 and lower.endswith("e") and not lower.endswith(("le", "ee")):
            count -= 1
        count = max(count, 1)
        if len(_SYLLABLE_CACHE) < 500_000:  # vocabularies are small; the cap bounds memory anyway
            _SYLLABLE_CACHE[word] = count
    return count


def flesch_reading_ease(text: str) -> tuple[float, int]:
    """(Flesch reading ease, word count) with a heuristic syllable counter; NaN when no words.

    206.835 - 1.015 * words/sentences - 84.6 * syllables/words: higher = easier to read.
    """
    words = _WORD_RE.findall(text)
    if not words:
        return float("nan"), 0
    sentences = max(len(_SENTENCE_END_RE.findall(text)), 1)
    syllables = sum(_syllables(w) for w in words)
    return 206.835 - 1.015 * len(words) / sentences - 84.6 * syllables / len(words), len(words)


@dataclass
class ReadabilityMismatch(Detector):
    """Chosen and rejected differ unusually in Flesch reading ease (style, not content, may decide).

    Score = |FRE(chosen) - FRE(rejected)|, computed only when both replies have at least
    `min_words` words (the formula is noise on a few words; shorter pairs score 0 and do not enter
    the percentile). Flagged above the `percentile`-th percentile, never below `min_difference`.
    """

    name = "readability_mismatch"
    description = "chosen and rejected differ unusually in Flesch reading ease"
    percentile: float = 99.0
    min_difference: float = 40.0
    min_words: int = 8

    def detect(self, train: Sequence[PreferencePair], *,
               test: Sequence[PreferencePair] = ()) -> DetectorResult:
        # (N, 2, 2): [pair, side (chosen, rejected), (ease, words)]
        stats = np.array([[flesch_reading_ease(p.chosen), flesch_reading_ease(p.rejected)]
                          for p in train], dtype=np.float64).reshape(-1, 2, 2)
        ease, words = stats[:, :, 0], stats[:, :, 1]
        eligible = (words >= self.min_words).all(axis=1)
        scores = np.where(eligible, np.abs(ease[:, 0] - ease[:, 1]), 0.0)
        threshold, kind = percentile_threshold(scores[eligible], self.percentile,
                                               self.min_difference)
        flagged = eligible & (scores > threshold)
        origin = f"{self.percentile:g}th percentile" if kind == "percentile" else "fixed minimum"
        return self.result(scores, flagged, reasons_where(flagged, lambda i: (
            f"reading ease differs by {scores[i]:.1f} (chosen {ease[i, 0]:.1f}, rejected "
            f"{ease[i, 1]:.1f}; threshold {threshold:.1f}, {origin})")),
            threshold=threshold, threshold_kind=kind)


# Refusal openers, matched near the start of a reply; both ASCII and typographic apostrophes occur
# in HH-RLHF. "I'm sorry, I don't understand" is deliberately not a refusal.
_REFUSAL_RE = re.compile(r"""
    \bi(?:['’]m|\s+am)\s+(?:so\s+|really\s+|very\s+)?sorry,?\s+(?:but\s+)?i\s+
        (?:can(?:not|['’]t)|won['’]t|will\s+not|(?:['’]m|\s+am)\s+(?:not\s+able|unable)
         |don['’]t\s+(?:think\s+i\s+(?:can|should)|feel\s+comfortable))
  | \bas\s+an?\s+(?:ai|artificial\s+intelligence|(?:ai\s+)?language\s+model)\b
  | \bi\s+(?:can(?:not|['’]t)|won['’]t|will\s+not)\s+
        (?:help|assist|provide|answer|support|do\s+that|give\s+you|share|tell\s+you\s+(?:how|that))
  | \bi(?:['’]m|\s+am)\s+(?:not\s+able|unable)\s+to\s+(?:help|assist|provide|answer)
  | \bi(?:['’]m|\s+am)\s+not\s+(?:comfortable|going\s+to\s+help)
  | \bi\s+(?:don['’]t|do\s+not)\s+feel\s+comfortable
""", re.IGNORECASE | re.VERBOSE)


@dataclass
class RefusalBias(Detector):
    """Exactly one reply is a refusal ("I'm sorry, but I can't…", "As an AI…").

    Such pairs teach the reward model about refusing rather than about answer quality, which is
    what the pair may have been meant to measure; the reason says which side refuses.
    """

    name = "refusal_bias"
    description = "exactly one reply is a refusal"
    window: int = 300  # characters from the start of a reply searched for a refusal opener

    def detect(self, train: Sequence[PreferencePair], *,
               test: Sequence[PreferencePair] = ()) -> DetectorResult:
        return self.binary_result([self._reason(p) for p in train])

    def _reason(self, pair: PreferencePair) -> str:
        chosen = _REFUSAL_RE.search(pair.chosen[:self.window])
        rejected = _REFUSAL_RE.search(pair.rejected[:self.window])
        if (chosen is None) == (rejected is None):
            return ""
        side, match = ("chosen", chosen) if chosen is not None else ("rejected", rejected)
        assert match is not None  # for mypy: exactly one side matched
        return f"only the {side} reply refuses (\"{' '.join(match.group(0).split())}\")"


# Small harm lexicon: category -> word patterns (regex, matched on word boundaries, any case).
# Self-harm comes first so "kill myself" is reported as self-harm, not violence.
HARM_LEXICON: dict[str, tuple[str, ...]] = {
    "self-harm": (r"kill(?:ing)?\s+myself", r"suicid\w*", r"self[-\s]?harm\w*",
                  r"cut(?:ting)?\s+myself", r"end\s+my\s+life", r"overdos\w*"),
    "weapons": (r"guns?", r"firearms?", r"rifles?", r"pistols?", r"bombs?", r"explosives?",
                r"grenades?", r"ammo", r"ammunition", r"weapons?", r"molotov"),
    "drugs": (r"cocaine", r"heroin", r"meth", r"methamphetamine", r"fentanyl", r"lsd", r"mdma",
              r"opioids?", r"drugs?"),
    "violence": (r"kill\w*", r"murder\w*", r"stab(?:s|bed|bing)?", r"shoot\w*", r"assault\w*",
                 r"tortur\w*", r"strangl\w*", r"poison\w*", r"kidnap\w*", r"beat\s+(?:up|him|her)"),
    "sexual violence": (r"rap(?:e|es|ed|ing|ist|ists)", r"molest\w*"),
    "hacking": (r"hack\w*", r"malware", r"ransomware", r"phishing", r"ddos", r"keylogg\w*",
                r"steal(?:s|ing)?\s+(?:a\s+|someone['’]s\s+)?passwords?"),
    "theft": (r"steal(?:s|ing)?", r"stole", r"rob\b|robb\w*", r"shoplift\w*", r"burglar\w*",
              r"break\s+into", r"pick\s+a\s+lock"),
    "fraud": (r"scam\w*", r"fraud\w*", r"counterfeit\w*", r"launder\w*", r"forg(?:e|ed|ing)\b"),
}

_HARM_RE = re.compile("|".join(
    rf"(?P<g{i}>\b(?:{'|'.join(terms)})\b)" for i, terms in enumerate(HARM_LEXICON.values())
), re.IGNORECASE)
_HARM_CATEGORIES = {f"g{i}": name for i, name in enumerate(HARM_LEXICON)}


def _human_text(pair: PreferencePair) -> str:
    """All human turns of the conversation: what the user asked, not what the assistant said."""
    if not pair.context or _HARM_RE.search(pair.context) is None:
        return pair.prompt  # nothing to find in the context: skip parsing it
    turns = [t.text for t in parse_dialogue(pair.context) if t.role == HUMAN]
    return "\n".join([*turns, pair.prompt])


@dataclass
class UnsafePrompt(Detector):
    """A human turn matches a small harm lexicon (weapons, drugs, violence, self-harm, hacking…).

    Score = number of distinct matched terms; the reason names the first few with their category.
    Useful for slicing results: in red-teaming data like HH harmless-base most prompts match.
    """

    name = "unsafe_prompt"
    description = "a human turn matches a small harm lexicon"

    def detect(self, train: Sequence[PreferencePair], *,
               test: Sequence[PreferencePair] = ()) -> DetectorResult:
        hits = [_harm_terms(_human_text(p)) for p in train]
        scores = np.array([len(h) for h in hits], dtype=np.float64)
        flagged = scores > 0
        return self.result(scores, flagged, reasons_where(flagged, lambda i: (
            "prompt mentions " + ", ".join(f"'{term}' ({category})"
                                           for term, category in list(hits[i].items())[:3]))),
            threshold=0.0)


def _harm_terms(text: str) -> dict[str, str]:
    """Distinct matched terms (lower-cased, in order of appearance) -> category."""
    found: dict[str, str] = {}
    for match in _HARM_RE.finditer(text):
        term = " ".join(match.group(0).lower().split())
        found.setdefault(term, _HARM_CATEGORIES[match.lastgroup or ""])
    return found
