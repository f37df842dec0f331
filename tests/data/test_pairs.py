"""PreferencePair and HH-RLHF parsing: the traps of real data, and the whole shared sample."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from rewardlab.data.pairs import (
    PreferencePair,
    Turn,
    pair_from_hh,
    pair_from_turns,
    parse_dialogue,
    render_turns,
)


def hh(*turns: tuple[str, str]) -> str:
    """An HH-RLHF transcript from (role, text) turns, with HH's leading blank line."""
    return "".join(f"\n\nHuman: {t}" if r == "H" else f"\n\nAssistant: {t}" for r, t in turns)


@pytest.fixture(scope="module")
def sample_rows(sample_path: Path) -> list[dict[str, str]]:
    with gzip.open(sample_path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def sample_pairs(sample_rows: list[dict[str, str]]) -> list[PreferencePair]:
    return [pair_from_hh(r["chosen"], r["rejected"], source_index=i, split="test",
                         subset="harmless-base") for i, r in enumerate(sample_rows)]


def test_single_turn_is_parsed_into_prompt_and_replies() -> None:
    pair = pair_from_hh(hh(("H", "hi"), ("A", "hello")), hh(("H", "hi"), ("A", "go away")),
                        source_index=7, split="train")
    assert (pair.context, pair.prompt, pair.chosen, pair.rejected) == ("", "hi", "hello", "go away")
    assert pair.prompt_text == "Human: hi"
    assert not pair.histories_differ and pair.parse_issue is None
    assert pair.raw_chosen == hh(("H", "hi"), ("A", "hello"))


def test_multi_turn_context_holds_earlier_turns() -> None:
    turns = (("H", "a"), ("A", "b"), ("H", "c"))
    pair = pair_from_hh(hh(*turns, ("A", "yes")), hh(*turns, ("A", "no")),
                        source_index=0, split="train")
    assert pair.context == "Human: a\n\nAssistant: b"
    assert pair.prompt == "c"
    assert pair.prompt_text == "Human: a\n\nAssistant: b\n\nHuman: c"


def test_human_marker_inside_a_reply_stays_in_the_reply() -> None:
    reply = "Sure. Human: is how the transcript labels you."
    pair = pair_from_hh(hh(("H", "q"), ("A", reply)), hh(("H", "q"), ("A", "no")),
                        source_index=0, split="train")
    assert pair.chosen == reply
    assert pair.parse_issue is None


def test_empty_final_turn_gives_empty_reply_without_issue() -> None:
    pair = pair_from_hh("\n\nHuman: q\n\nAssistant: ", hh(("H", "q"), ("A", "no")),
                        source_index=0, split="train")
    assert pair.chosen == ""
    assert pair.prompt == "q"
    assert pair.parse_issue is None


def test_text_without_turns_is_kept_whole_and_flagged() -> None:
    pair = pair_from_hh("  just some text ", "", source_index=3, split="train")
    assert pair.chosen == "just some text"
    assert pair.rejected == ""
    assert pair.prompt == ""
    assert pair.parse_issue == "chosen: no turns; rejected: no turns"


def test_dialogue_ending_with_a_human_turn_is_flagged() -> None:
    pair = pair_from_hh(hh(("H", "q"), ("A", "a"), ("H", "more?")), hh(("H", "q"), ("A", "b")),
                        source_index=0, split="train")
    assert pair.chosen == ""
    assert pair.prompt == "more?"
    assert pair.parse_issue == "chosen: dialogue ends with a human turn"


def test_text_before_the_first_turn_is_flagged_not_lost_silently() -> None:
    raw = "Preamble." + hh(("H", "q"), ("A", "a"))
    pair = pair_from_hh(raw, hh(("H", "q"), ("A", "b")), source_index=0, split="train")
    assert pair.chosen == "a"
    assert pair.parse_issue == "chosen: text before the first turn"
    assert pair.raw_chosen == raw


def test_different_histories_are_recorded() -> None:
    pair = pair_from_hh(hh(("H", "q"), ("A", "x"), ("H", "r"), ("A", "c")),
                        hh(("H", "q"), ("A", "y"), ("H", "r"), ("A", "d")),
                        source_index=0, split="train")
    assert pair.histories_differ
    assert pair.context == "Human: q\n\nAssistant: x"  # the chosen side's history


def test_pair_from_turns_keeps_system_turn_in_context() -> None:
    system, user = Turn("System", "be brief"), Turn("Human", "hi")
    pair = pair_from_turns([system, user, Turn("Assistant", "hey")],
                           [system, user, Turn("Assistant", "what")],
                           source_index=1, split="test", subset="s")
    assert (pair.context, pair.prompt, pair.chosen, pair.rejected) == (
        "System: be brief", "hi", "hey", "what")
    assert pair.raw_chosen is None and pair.subset == "s"


def test_parse_and_render_round_trip_on_clean_text() -> None:
    text = "Human: a\n\nAssistant: b\n\nHuman: c"
    assert render_turns(parse_dialogue(text)) == text
    assert parse_dialogue("") == []


def test_flipped_swaps_sides_and_content_hash_sees_index() -> None:
    pair = pair_from_hh(hh(("H", "q"), ("A", "c")), hh(("H", "q"), ("A", "r")),
                        source_index=0, split="train")
    flipped = pair.flipped()
    assert (flipped.chosen, flipped.rejected) == ("r", "c")
    assert flipped.raw_chosen == pair.raw_rejected
    assert flipped.flipped() == pair
    twin = pair_from_hh(pair.raw_chosen or "", pair.raw_rejected or "", source_index=1,
                        split="train")
    assert twin.content_hash != pair.content_hash  # true duplicates stay countable


def test_every_sample_pair_parses(sample_pairs: list[PreferencePair]) -> None:
    assert len(sample_pairs) == 1512
    assert all(p.raw_chosen and p.raw_rejected for p in sample_pairs)
    issues = [p for p in sample_pairs if p.parse_issue]
    # 4 real rows with a second "Assistant:" turn glued after a mid-paragraph "Human:"
    assert [p.source_index for p in issues] == [820, 1095, 1283, 1284]
    assert all(p.prompt for p in sample_pairs if not p.parse_issue)


def test_histories_differ_matches_raw_text(sample_rows: list[dict[str, str]],
                                           sample_pairs: list[PreferencePair]) -> None:
    def history(raw: str) -> str:  # everything before the final "Assistant:" marker
        return raw.rsplit("\n\nAssistant:", 1)[0]

    expected = [i for i, r in enumerate(sample_rows)
                if history(r["chosen"]) != history(r["rejected"])]
    assert [p.source_index for p in sample_pairs if p.histories_differ] == expected
    assert len(expected) == 4


def test_empty_final_replies_match_raw_text(sample_rows: list[dict[str, str]],
                                            sample_pairs: list[PreferencePair]) -> None:
    ends_empty = re.compile(r"\n\nAssistant:\s*$")
    expected = [i for i, r in enumerate(sample_rows) if ends_empty.search(r["chosen"])]
    assert [p.source_index for p in sample_pairs if p.chosen == ""] == expected
    assert expected == [56, 341, 607, 728]
    assert not any(p.rejected == "" for p in sample_pairs)


def test_sample_prompt_texts_are_unique_and_well_formed(
        sample_pairs: list[PreferencePair]) -> None:
    assert len({p.prompt_text for p in sample_pairs}) == 1512
    assert all(p.prompt_text.startswith("Human: ") for p in sample_pairs)
    assert all(p.context.startswith("Human: ") for p in sample_pairs if p.context)
