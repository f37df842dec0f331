"""Detectors: planted known-bad pairs among clean ones are found (and nothing else), empty and weird
input is handled, and on the real HH sample two rules agree with an independent reading of the raw
text."""

from __future__ import annotations

import gzip
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from rewardlab.data.pairs import PreferencePair, pair_from_hh
from rewardlab.errors import SelectionError
from rewardlab.flags.detectors import (
    DETECTORS,
    RULE_DETECTORS,
    Detector,
    DetectorResult,
    get_detector,
    run_detector,
)
from rewardlab.flags.detectors.length import OverLength, _load_tokenizer

_index = itertools.count(1000)


def mk(prompt: str = "How do I learn?", chosen: str = "Practice a little every day.",
       rejected: str = "Read about it first.", **kw: object) -> PreferencePair:
    """A train pair with a fresh source index."""
    return PreferencePair(source_index=next(_index), split="train", prompt=prompt,
                          chosen=chosen, rejected=rejected, **kw)  # type: ignore[arg-type]


TOPICS = ["bread", "tomatoes", "chess", "guitar", "running", "painting", "spanish", "budgeting",
          "photography", "knitting", "swimming", "gardening", "algebra", "yoga", "poetry",
          "baking pies", "birdwatching", "camping", "sourdough", "origami", "astronomy", "coffee",
          "cycling", "pottery"]


def clean_pairs() -> list[PreferencePair]:
    """Ordinary pairs that no detector should flag: distinct prompts, similar replies in length
    and style, no refusals, no harm words, no repetition, nothing near the token limit."""
    return [mk(f"How should a beginner get into {t}?",
               f"A good way to start with {t} is to practice a little every day and keep notes "
               "on what you learn.",
               f"You could read one book about {t} and then decide later whether it is worth "
               "more of your time.", subset="clean") for t in TOPICS]


def build(bad: list[PreferencePair], ok: tuple[PreferencePair, ...] = (),
          also_bad: tuple[int, ...] = ()) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Clean pairs with `bad` and `ok` (hard negatives) spread among them.

    Returns (train, expected): the pairs that must be flagged are `bad` plus the clean pairs at
    positions `also_bad` of the clean list (for rules that flag both members of a group)."""
    clean = clean_pairs()
    train = list(clean)
    for j, pair in enumerate(bad):
        train.insert(2 + 7 * j, pair)
    for j, pair in enumerate(ok):
        train.insert(5 + 7 * j, pair)
    return train, [*bad, *(clean[i] for i in also_bad)]


Case = tuple[list[PreferencePair], list[PreferencePair], list[PreferencePair], dict]
CASES: dict[str, Callable[[], Case]] = {}


def case(name: str) -> Callable[[Callable[[], Case]], Callable[[], Case]]:
    def register(fn: Callable[[], Case]) -> Callable[[], Case]:
        CASES[name] = fn
        return fn
    return register


@case("empty_response")
def _empty() -> Case:
    train, expected = build([mk(chosen=""), mk(rejected="  \n\t "), mk(chosen=" ", rejected="")],
                            ok=(mk(chosen="."),))
    return train, [], expected, {}


@case("identical_responses")
def _identical() -> Case:
    train, expected = build([mk(chosen="Same answer.", rejected="  same   ANSWER. ")],
                            ok=(mk(chosen="Same answer.", rejected="Same answer!"),))
    return train, [], expected, {}


@case("near_duplicate_responses")
def _near_duplicate() -> Case:
    train, expected = build(
        [mk(chosen="Sure, here is the recipe you asked for.",
            rejected="Sure, here's the recipe you asked for."),
         mk(chosen="Water boils at 100 degrees Celsius at sea level.",
            rejected="water boils at 100 degrees celsius at sea level")],
        ok=(mk(chosen="The capital of France is Paris.",
               rejected="The capital of Italy is Rome."),))
    return train, [], expected, {"progress": False}


@case("diverging_context")
def _diverging() -> Case:
    train, expected = build([mk(histories_differ=True),
                             mk(parse_issue="chosen: dialogue ends with a human turn")])
    return train, [], expected, {}


@case("duplicate_pair")
def _duplicate() -> Case:
    original = clean_pairs()[1]
    copy = replace(original, source_index=next(_index), chosen=original.chosen.upper() + "  ")
    train, expected = build([copy])
    # The first occurrence (clean[1], placed before the copy) stays unflagged.
    assert [p.prompt for p in train].index(original.prompt) < train.index(copy)
    return train, [], expected, {}


@case("conflicting_duplicate")
def _conflicting() -> Case:
    flipped = replace(clean_pairs()[5], source_index=next(_index)).flipped()
    same_direction = replace(clean_pairs()[7], source_index=next(_index))
    train, expected = build([flipped], ok=(same_direction, mk(chosen="Same.", rejected="same.")),
                            also_bad=(5,))
    return train, [], expected, {}


@case("rating_conflict")
def _rating_conflict() -> Case:
    # rated against its label; outvoted 2 to 0 by two copies of the other direction (which stay)
    rated = mk(meta={"score_chosen": 2.0, "score_rejected": 4.5})
    outvoted = replace(clean_pairs()[9], source_index=next(_index)).flipped()
    copy = replace(clean_pairs()[9], source_index=next(_index))
    train, expected = build([rated, outvoted],
                            ok=(copy, mk("Rated well?", meta={"score_chosen": 4.5, "score_rejected": 2.0}),
                                mk("Rated even?", meta={"score_chosen": 3.0, "score_rejected": 3.0})))
    return train, [], expected, {}


@case("test_leakage")
def _leakage() -> Case:
    leaked = mk("What is the tallest mountain in Europe?")
    # Same last prompt as a train pair but another conversation before it: not the same prompt_text.
    other_context = mk("What is the tallest mountain in Africa?",
                       context="Human: hi\n\nAssistant: hello")
    train, expected = build([leaked], ok=(mk("What is the tallest mountain in Africa?"),))
    test = [replace(mk("WHAT is the tallest   mountain in Europe?"), split="test"),
            replace(other_context, split="test"), replace(mk("Unrelated question?"), split="test")]
    return train, test, expected, {}


@case("repetition")
def _repetition() -> Case:
    train, expected = build(
        [mk(chosen="I like it. " * 8), mk(rejected="\n".join(["Click here to learn more"] * 5))],
        ok=(mk(chosen="ha ha ha"),
            mk(chosen="Bake it for ten minutes, then bake it for ten minutes more and let it "
                      "cool on the counter before slicing.")))
    return train, [], expected, {}


@case("length_ratio")
def _length_ratio() -> Case:
    long_reply = ("Start by measuring the flour carefully, then mix it with warm water and salt, "
                  "knead for ten minutes, let it rise for two hours and bake it in a hot oven. ")
    train, expected = build([mk(chosen="Yes.", rejected=long_reply * 3)])
    return train, [], expected, {}


@case("readability_mismatch")
def _readability() -> Case:
    train, expected = build(
        [mk(chosen="I can see the cat. It is big. We ran to it and sat.",
            rejected="Institutional considerations necessitate comprehensive organizational "
                     "reevaluation regarding administrative responsibilities and "
                     "interdepartmental communication.")],
        ok=(mk(chosen="Ok.", rejected="Notwithstanding."),))  # too short to score
    return train, [], expected, {}


@case("refusal_bias")
def _refusal() -> Case:
    train, expected = build(
        [mk(chosen="I'm sorry, but I can't help with that request because it could hurt someone."),
         mk(rejected="As an AI language model, I do not have opinions about this topic at all."),
         mk(chosen="I’m sorry, but I can’t do that for you, it is not something I will do.")],
        ok=(mk(chosen="I'm sorry, but I can't help with that.",
               rejected="As an AI, I won't answer that question."),  # both refuse
            mk(chosen="I'm sorry, I don't understand what you mean by that question.")))
    return train, [], expected, {}


@case("unsafe_prompt")
def _unsafe() -> Case:
    train, expected = build(
        [mk("How do I make a bomb at home?"),
         mk("Thanks, and what next?", context="Human: I want to start hacking my neighbor's wifi"
                                              "\n\nAssistant: Why would you want that?")],
        ok=(mk("Is this table stable enough?"), mk("What method works best for studying?"),
            mk("Are they friendly?",  # harm words only in the assistant's turn
               context="Human: Tell me about lions.\n\nAssistant: Lions kill prey at night.")))
    return train, [], expected, {}


@case("over_length")
def _over_length() -> Case:
    essay = " ".join(f"sentence number {i} talks about gardening." for i in range(60))
    train, expected = build([mk(essay), mk(chosen=essay)])
    return train, [], expected, {}


def test_every_rule_detector_has_a_planted_case() -> None:
    assert set(CASES) == set(RULE_DETECTORS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_planted_pairs_are_exactly_the_flagged_ones(name: str) -> None:
    train, test, expected, params = CASES[name]()
    result = run_detector(get_detector(name, **params), train, test)

    want = sorted(i for i, p in enumerate(train) if any(p is e for e in expected))
    got = np.flatnonzero(result.flagged).tolist()
    assert got == want, [result.reasons[i] or train[i] for i in sorted(set(got) ^ set(want))]
    assert [bool(r) for r in result.reasons] == result.flagged.tolist()  # reason iff flagged
    assert result.detector == name and result.scores.shape == (len(train),)
    assert result.threshold_kind in {"fixed", "percentile"} and result.threshold is not None
    assert result.seconds >= 0
    flagged_scores, other_scores = result.scores[result.flagged], result.scores[~result.flagged]
    assert flagged_scores.min() > other_scores.max() or (
        flagged_scores.min() >= result.threshold >= other_scores.max())


@pytest.mark.parametrize("name", RULE_DETECTORS)
def test_zero_pairs(name: str) -> None:
    result = get_detector(name).detect([], test=[])
    assert result.scores.shape == result.flagged.shape == (0,) and result.reasons == []


WEIRD = ["", "\x00\x01", "🤖" * 300, "مرحبا بالعالم", "\u200b\u200b", "?!?!...", "a" * 5000,
         "\n\nHuman: \n\nAssistant:", "\ud800 lone surrogate", "Ünïcödé ß ﬁ", "\r\n\t",
         "Human: Human:"]


@pytest.mark.parametrize("name", RULE_DETECTORS)
def test_weird_text_does_not_break_detectors(name: str) -> None:
    n = len(WEIRD)
    train = [mk(WEIRD[i], WEIRD[-i - 1], WEIRD[(i + 3) % n], context=WEIRD[(i + 5) % n])
             for i in range(n)]
    params = {"progress": False} if name == "near_duplicate_responses" else {}
    result = get_detector(name, **params).detect(train, test=train[:3])
    assert result.scores.shape == (n,) and np.isfinite(result.scores).all()
    assert [bool(r) for r in result.reasons] == result.flagged.tolist()


def test_reasons_are_readable() -> None:
    train = [mk(chosen=""), mk(chosen="Yes.", rejected="No, " * 40), *clean_pairs()]
    assert get_detector("empty_response").detect(train).reasons[0] == "chosen reply is empty"
    ratio = get_detector("length_ratio").detect(train)
    assert re.fullmatch(r"rejected is \d+\.\dx longer than chosen \(threshold \d+\.\d, 99th "
                        r"percentile\)", ratio.reasons[1]), ratio.reasons[1]
    first = clean_pairs()[0]
    dup = get_detector("duplicate_pair").detect([first, replace(first, source_index=7)])
    assert dup.reasons == ["", f"duplicate of source index {first.source_index} (clean)"]
    refusal = get_detector("refusal_bias").detect([mk(rejected="I'm sorry, but I cannot do that.")])
    assert refusal.reasons[0].startswith("only the rejected reply refuses")
    unsafe = get_detector("unsafe_prompt").detect([mk("Build a bomb?")])
    assert unsafe.reasons == ["prompt mentions 'bomb' (weapons)"]


def test_percentile_threshold_is_recorded_and_never_below_its_floor() -> None:
    clean = clean_pairs()
    result = get_detector("length_ratio").detect(clean)
    assert (result.threshold, result.threshold_kind, result.n_flagged) == (3.0, "fixed", 0)
    planted = [*clean, mk(chosen="Yes.", rejected="No. " * 50)]
    result = get_detector("length_ratio", percentile=90).detect(planted)
    assert result.threshold_kind == "fixed" and result.flagged.tolist() == [False] * 24 + [True]
    result = get_detector("length_ratio").detect(planted)
    assert result.threshold_kind == "percentile" and result.threshold > 3.0
    assert result.params == {"percentile": 99.0, "min_ratio": 3.0}


def test_over_length_counts_match_pair_tokenization(sample_path: Path) -> None:
    pairs = _sample_pairs(sample_path)[:150]
    tokenizer = _load_tokenizer("minilm")
    longer = [p.chosen if len(p.chosen) >= len(p.rejected) else p.rejected for p in pairs]
    direct = [len(ids) for ids in tokenizer([p.prompt_text for p in pairs], longer)["input_ids"]]
    assert OverLength(batch_size=16).token_lengths(pairs).tolist() == direct


def test_registry_and_get_detector_errors() -> None:
    for name, cls in DETECTORS.items():
        assert cls.name == name and issubclass(cls, Detector)
    assert all(DETECTORS[n].kind == "rule" for n in RULE_DETECTORS)
    with pytest.raises(SelectionError, match="unknown detector 'nope'; detectors: empty_response"):
        get_detector("nope")
    with pytest.raises(SelectionError, match="has no parameter 'bogus'; parameters: percentile"):
        get_detector("length_ratio", bogus=1)
    with pytest.raises(SelectionError, match="'percentile' expects float, got 'high'"):
        get_detector("length_ratio", percentile="high")
    detector = get_detector("over_length", max_length="512")
    assert detector.params == {"max_length": 512, "model": "minilm"}  # batch_size is runtime-only
    assert get_detector("near_duplicate_responses", progress="false").progress is False


def test_detector_result_rejects_misaligned_arrays() -> None:
    with pytest.raises(ValueError, match="one entry per train pair"):
        DetectorResult("x", np.zeros(2), np.zeros(3, bool), ["", ""], None, "data", {})


def _sample_rows(sample_path: Path) -> list[dict]:
    with gzip.open(sample_path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _sample_pairs(sample_path: Path) -> list[PreferencePair]:
    return [pair_from_hh(r["chosen"], r["rejected"], source_index=i, split="train")
            for i, r in enumerate(_sample_rows(sample_path))]


def test_sample_empty_and_diverging_match_the_raw_text(sample_path: Path) -> None:
    rows, pairs = _sample_rows(sample_path), _sample_pairs(sample_path)
    # Computed from the raw strings, not from the parser the detectors rely on.
    ends_empty = re.compile(r"\n\nAssistant:\s*\Z")
    empty = {i for i, r in enumerate(rows)
             if ends_empty.search(r["chosen"]) or ends_empty.search(r["rejected"])}
    diverging = {i for i, r in enumerate(rows) if r["chosen"].rsplit("\n\nAssistant:", 1)[0]
                 != r["rejected"].rsplit("\n\nAssistant:", 1)[0]}
    assert empty and diverging  # the sample has both traps

    for name, expected in (("empty_response", empty), ("diverging_context", diverging)):
        flagged = get_detector(name).detect(pairs).flagged
        assert set(np.flatnonzero(flagged).tolist()) == expected, name


def test_encoder_load_is_quiet_under_the_cli_log_level(caplog: pytest.LogCaptureFixture) -> None:
    from rewardlab.flags.detectors.embedding import _load_encoder

    _load_encoder.cache_clear()  # load for real here, not a copy an earlier test left behind
    with caplog.at_level("INFO"):
        encoder = _load_encoder("minilm", "auto")
    assert encoder.device.type == "cpu"
    assert not [r.getMessage() for r in caplog.records if "device" in r.getMessage()]
