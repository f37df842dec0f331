"""`rating_conflict`: a pair is flagged when its own ratings or other records of its two replies put
the rejected reply ahead on balance; the derived pairs of one rated prompt never conflict with their
own ratings; rated files with planted contradicting records are flagged at exactly those records,
through the store and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewardlab.cli.main import main
from rewardlab.data.pairs import PreferencePair
from rewardlab.data.rated import RatedPrompt, derived_pairs, ranks_from_scores
from rewardlab.data.source_result import SourceResult
from rewardlab.data.sources import read_source
from rewardlab.flags.detectors import RULE_DETECTORS, get_detector
from rewardlab.flags.flagging import flag_dataset
from rewardlab.store.store import Store


def _pair(index: int, prompt: str, chosen: str, rejected: str, **meta: float) -> PreferencePair:
    return PreferencePair(index, "train", prompt, chosen, rejected, meta=dict(meta))


def _rated(index: int, prompt: str, responses: tuple[str, ...], scores: tuple[float, ...]
           ) -> RatedPrompt:
    ties = tuple((i, j) for i in range(len(scores)) for j in range(i + 1, len(scores))
                 if scores[i] == scores[j])
    return RatedPrompt(index, "train", prompt, responses, scores, ranks_from_scores(scores), ties)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.tuples(st.sampled_from(["x", "y", "z", " X ", "w"]),
                                   st.integers(1, 5)), min_size=2, max_size=5),
                min_size=1, max_size=4))
def test_derived_pairs_never_conflict_with_their_own_ratings(
        prompts: list[list[tuple[str, int]]]) -> None:
    # repeated texts within one prompt (" X " is "x" normalized) may be rated both ways there:
    # one record, which never counts against itself
    rated = [_rated(i, f"prompt {i}", tuple(t for t, _ in rows), tuple(float(s) for _, s in rows))
             for i, rows in enumerate(prompts)]
    pairs = [pair for r in rated for pair in derived_pairs(r)]
    result = get_detector("rating_conflict").detect(pairs)
    assert not result.flagged.any() and result.reasons == [""] * len(pairs)
    assert (result.scores <= 0).all()


def test_synthetic_rated_data_has_no_conflict(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/syn.db")
    store.ingest("syn", read_source("synthetic:n=60,k=4,ties=0.2,seed=1"))
    [result] = flag_dataset(store, "syn", detectors=["rating_conflict"], progress=False)
    assert len(result.scores) == len(store.load_pairs("syn", split="train")) > 100
    assert result.n_flagged == 0
    store.close()


def test_own_ratings_and_other_records_are_weighed_and_ranked() -> None:
    pairs = [
        _pair(0, "Q1", "a", "b", score_chosen=2.0, score_rejected=4.5),  # rated against: 1
        _pair(1, "Q2", "a", "b", score_chosen=2.0, score_rejected=4.5),  # ... and outvoted: 1 + 1
        _pair(2, "Q2", "B ", "a"),
        _pair(3, "Q3", "a", "b", score_chosen=1, score_rejected=3),  # rated against, but
        _pair(4, "Q3", "a", "b"),  # two other records agree with its label: −1
        _pair(5, "Q3", "a", "b"),
        _pair(6, "Q4", "a", "b", score_chosen=4.0, score_rejected=4.0),  # equal ratings: 0
        _pair(7, "Q5", "a", "b", score_chosen=5.0, score_rejected=1.0),  # rated for: −1
    ]
    result = get_detector("rating_conflict").detect(pairs)
    assert result.scores.tolist() == [1.0, 2.0, 0.0, -1.0, -1.0, -1.0, 0.0, -1.0]
    assert np.flatnonzero(result.flagged).tolist() == [0, 1]
    assert result.reasons[0] == "rated 2.0 vs 4.5 (score_chosen < score_rejected)"
    assert result.reasons[1] == ("rated 2.0 vs 4.5 (score_chosen < score_rejected); 1 other record "
                                 "puts the rejected reply ahead, 0 the chosen (source index 2)")
    # pair 2 is not outvoted: pair 1's own ratings contradict its label, so it vouches for neither
    assert result.threshold == 0.0 and result.threshold_kind == "fixed"
    assert "rating_conflict" in RULE_DETECTORS


def test_planted_rating_conflict_survives_the_store(tmp_path: Path) -> None:
    pairs = [_pair(i, f"Q{i}", "good", "bad", score_chosen=4.0, score_rejected=1.0)
             for i in range(6)]
    pairs[3] = _pair(3, "Q3", "good", "bad", score_chosen=1.0, score_rejected=4.0)
    store = Store(f"sqlite:///{tmp_path}/pairs.db")
    store.ingest("toy", SourceResult("toy", pairs, read=6, rejected=[]))
    flag_dataset(store, "toy", detectors=["rating_conflict"], progress=False)
    rows = store.flag_rows("toy", detector="rating_conflict")
    assert [(r["source_index"], r["score"], r["reason"]) for r in rows] == [
        (3, 1.0, "rated 1.0 vs 4.0 (score_chosen < score_rejected)")]
    store.close()


def _write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _battle(prompt: str, a: str, b: str, winner: str) -> dict[str, object]:
    return {"prompt": prompt, "response_a": a, "response_b": b, "winner": winner}


def test_arena_file_flags_exactly_the_outvoted_battles(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        _battle("Name a fruit.", "Apple.", "Rock.", "model_a"),   # 0: apple ahead
        _battle("Name a fruit.", "Rock.", "Apple.", "model_b"),   # 1: apple ahead, sides swapped
        _battle("Name a fruit.", "Apple.", "Rock.", "tie"),       # 2: a tie: no pair, no vote
        _battle("Name a fruit.", "Apple.", "Rock.", "model_b"),   # 3: PLANTED, outvoted 2 to 0
        _battle("Name a fruit.", "apple. ", "Pear.", "model_b"),  # 4: another pair of replies
        _battle("Say hi.", "Hi!", "Go away.", "model_a"),         # 5: 1 to 1: each contradicted
        _battle("Say hi.", "Hi!", "Go away.", "model_b"),         # 6
        _battle("Say hi.", "Hello!", "Hi!", "model_a"),           # 7: alone
        _battle("Count.", "1 2 3", "3 2 1", "model_a"),           # 8, 9: each 1 to 1
        _battle("Count.", "1 2 3", "3 2 1", "model_a"),
        _battle("Count.", "3 2 1", "1 2 3", "model_a"),           # 10: PLANTED, 2 to 0
    ]
    path = _write_jsonl(tmp_path / "arena.jsonl", rows)
    db = f"sqlite:///{tmp_path}/arena.db"
    store = Store(db)
    store.ingest("arena", read_source(path))
    capsys.readouterr()
    assert main(["flag", "arena", "--detectors", "rating_conflict", "--db", db, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["train_pairs"], summary["detectors"][0]["flagged"]) == (10, 4)  # no tie pair
    flagged = {r["source_index"]: (r["score"], r["reason"])
               for r in store.flag_rows("arena", detector="rating_conflict")}
    assert sorted(flagged) == [3, 5, 6, 10]
    assert flagged[3] == (2.0, "2 other records put the rejected reply ahead, 0 the chosen "
                               "(source index 0, source index 1)")
    assert flagged[10][0] == 2.0 and flagged[5][0] == flagged[6][0] == 1.0
    store.close()


def test_rated_file_flags_the_contradicting_rater_only(tmp_path: Path) -> None:
    def row(prompt: str, *completions: tuple[str, float]) -> dict[str, object]:
        return {"instruction": prompt,
                "completions": [{"response": r, "overall_score": s} for r, s in completions]}

    rows = [
        row("Explain tides.", ("The moon pulls the sea.", 5), ("Wind.", 3), ("No idea.", 1)),
        row("Explain tides.", ("Wind.", 4), ("The moon pulls the sea.", 2)),  # PLANTED: 2 to 0
        row("Explain tides.", ("The moon pulls the sea.", 4), ("Wind.", 1), ("No idea.", 1)),
        # the same text rated twice within one prompt: its pairs disagree, but are one record
        row("Spell cat.", ("C-A-T", 3), ("K-A-T", 2), ("c-a-t", 1)),
    ]
    path = _write_jsonl(tmp_path / "ratings.jsonl", rows)
    store = Store(f"sqlite:///{tmp_path}/uf.db")
    store.ingest("uf", read_source(path))
    [result] = flag_dataset(store, "uf", detectors=["rating_conflict"], progress=False)
    train = store.load_pairs("uf", split="train")
    flagged = [(train[i].source_index, train[i].chosen, result.scores[i], result.reasons[i])
               for i in np.flatnonzero(result.flagged)]
    assert flagged == [(1, "Wind.", 2.0, "2 other records put the rejected reply ahead, 0 the "
                                         "chosen (source index 0, source index 2)")]
    store.close()


def test_a_reason_names_the_first_few_records_and_counts_all() -> None:
    pairs = [_pair(i, "Q", "x", "y") for i in range(5)] + [_pair(5, "Q", "y", "x")]
    result = get_detector("rating_conflict").detect(pairs)
    assert result.scores.tolist() == [-3.0] * 5 + [5.0]
    assert result.reasons[5] == ("5 other records put the rejected reply ahead, 0 the chosen "
                                 "(source index 0, source index 1, source index 2, …)")
