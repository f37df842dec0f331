"""Rated files (issue 32): Arena votes with ties, tie pairs, UltraFeedback, HelpSteer2 and rankings
read into RatedPrompts with the contract's scores, ranks and ties; bad rows are one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _rated_files import (
    arena_rows,
    feedback_rows,
    helpsteer_rows,
    ranking_rows,
    winner_of,
    write_csv,
    write_jsonl,
)

from rewardlab.data.rated import decided_pairs
from rewardlab.data.rated_formats import rated_shape
from rewardlab.data.sources import read_source
from rewardlab.errors import SourceError


def test_arena_one_hot_votes_count_ties_apart_from_pairs(tmp_path: Path) -> None:
    rows = arena_rows(200)
    result = read_source(write_jsonl(tmp_path / "arena.jsonl", rows))
    assert (result.read, len(result.rated), result.n_ties, len(result.pairs)) == (200, 200, 40, 160)
    for row, rated in zip(rows, result.rated):
        assert rated.kind == "vote" and rated.prompt == row["prompt"]
        assert rated.responses == (row["response_a"], row["response_b"])
        expected = {"model_a": (1.0, 0.0), "model_b": (0.0, 1.0), "tie": (0.5, 0.5)}
        assert rated.scores == expected[winner_of(row)]
        assert rated.ties == (((0, 1),) if row["winner_tie"] else ())
        assert rated.meta["models"] == ["m-a", "m-b"]
    # a decided vote's pair: the winner chosen, positions in meta
    pair = result.pairs[0]  # vote 1: a won (vote 0 is a tie, in no pair)
    assert (pair.source_index, pair.chosen, pair.rejected, pair.meta) == (
        1, "answer a1", "reply b1 is longer", {"a": 0, "b": 1})
    assert sum(p.chosen.startswith("reply b") for p in result.pairs) == 80


def test_arena_winner_column_from_csv_with_bothbad_ties(tmp_path: Path) -> None:
    rows = [{"prompt": r["prompt"], "response_a": r["response_a"], "response_b": r["response_b"],
             "winner": winner_of(r)} for r in arena_rows(20)]
    rows[0]["winner"] = "tie (bothbad)"
    result = read_source(write_csv(tmp_path / "arena.csv", rows))
    assert [p.scores for p in result.rated[:3]] == [(0.5, 0.5), (1.0, 0.0), (1.0, 0.0)]
    assert (result.n_ties, len(result.pairs)) == (4, 16)


def test_arena_json_turns_keep_the_last_exchange_and_the_rest_as_context(tmp_path: Path) -> None:
    row = {"prompt": json.dumps(["Hi there", "And the capital of France?"]),
           "response_a": json.dumps(["Hello!", "Paris."]),
           "response_b": json.dumps(["Hey.", "Lyon."]),
           "winner_model_a": 1, "winner_model_b": 0, "winner_tie": 0}
    rated = read_source(write_jsonl(tmp_path / "multi.jsonl", [row])).rated[0]
    assert (rated.prompt, rated.responses) == ("And the capital of France?", ("Paris.", "Lyon."))
    assert rated.meta == {"context": "Human: Hi there\n\nAssistant: Hello!",
                          "histories_differ": True}
    pair = read_source(tmp_path / "multi.jsonl").pairs[0]
    assert pair.prompt_text == "Human: Hi there\n\nAssistant: Hello!\n\nHuman: And the capital " \
                               "of France?"
    assert pair.histories_differ
    row["response_b"] = json.dumps(["Hey.", None])  # lmsys-55k has null turns: empty text
    assert read_source(write_jsonl(tmp_path / "null.jsonl", [row])).rated[0].responses == (
        "Paris.", "")


@pytest.mark.parametrize(("change", "needle"), [
    ({"winner_model_b": 1}, "row 3: winner_model_a=1, winner_model_b=1, winner_tie=0: exactly "
                            "one of them must be 1"),
    ({"winner_model_a": 0}, "row 3: winner_model_a=0, winner_model_b=0, winner_tie=0: exactly"),
    ({"winner_tie": "maybe"}, "row 3: field 'winner_tie' is 'maybe', expected 0 or 1"),
    ({"response_b": None}, "row 3: field 'response_b' is null"),
    ({"response_a": json.dumps(["x", 5])}, "row 3: field 'response_a' turn 2 is int"),
    ({"prompt": json.dumps(["one", "two"])}, "row 3: 'prompt', 'response_a' and 'response_b' "
                                             "hold 2, 1 and 1 turns"),
])
def test_a_bad_vote_is_one_line_naming_file_and_row(tmp_path: Path, change: dict[str, object],
                                                    needle: str) -> None:
    rows = arena_rows(6, tie_every=4)  # row 3 (index 2): a wins
    rows[2] = {**rows[2], **change}
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(SourceError) as info:
        read_source(path)
    assert str(info.value).startswith(f"{path}: row 3: ") and needle in str(info.value)


def test_an_unknown_winner_is_named(tmp_path: Path) -> None:
    rows = [{"prompt": "p", "response_a": "a", "response_b": "b", "winner": "model_c"}]
    with pytest.raises(SourceError, match=r"row 1: field 'winner' is 'model_c', expected one of "
                                          r"'model_a', 'model_b', 'tie', 'tie \(bothbad\)'"):
        read_source(write_jsonl(tmp_path / "w.jsonl", rows))


def test_an_explicit_pair_with_tie_true_is_a_tie_vote(tmp_path: Path) -> None:
    rows = [{"prompt": "Human: hi\n\nAssistant: hello\n\nHuman: bye?", "chosen": "bye",
             "rejected": "ciao", "tie": tie} for tie in (True, False, "true", "0")]
    result = read_source(write_csv(tmp_path / "ties.csv", rows))
    assert [p.scores for p in result.rated] == [(0.5, 0.5), (1.0, 0.0)] * 2
    assert [p.kind for p in result.rated] == ["vote"] * 4
    assert result.rated[0].meta == {"context": "Human: hi\n\nAssistant: hello"}
    assert [(p.source_index, p.chosen) for p in result.pairs] == [(1, "bye"), (3, "bye")]
    rows[1]["tie"] = "perhaps"
    with pytest.raises(SourceError, match=r"ties.csv: row 2: field 'tie' is 'perhaps', expected "
                                          "true or false"):
        read_source(write_csv(tmp_path / "ties.csv", rows))


def test_ultrafeedback_gives_k_responses_and_all_their_pairs(tmp_path: Path) -> None:
    rows = feedback_rows(60, 4)
    result = read_source(write_jsonl(tmp_path / "uf.jsonl", rows))
    assert (len(result.rated), result.n_responses, result.n_ties, len(result.pairs)) == (
        60, 240, 0, 360)
    first = result.rated[0]
    assert first.kind == "ratings" and first.prompt == "Instruction 0"
    assert first.scores == (1.0, 2.0, 3.0, 4.0) and first.ranks == (3, 2, 1, 0)
    assert first.meta == {"models": ["m0", "m1", "m2", "m3"]}
    assert [(p.meta["a"], p.meta["b"]) for p in result.pairs[:6]] == [
        (1, 0), (2, 0), (3, 0), (2, 1), (3, 1), (3, 2)]


def test_score_field_picks_the_rating_and_equal_ratings_are_ties(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "uf.jsonl", feedback_rows(5, 4))
    by_score = read_source(path, score_field="score").rated[0]
    assert by_score.scores == (4.0, 3.0, 2.0, 1.0) and by_score.ranks == (0, 1, 2, 3)
    fine = read_source(path, score_field="fine")
    assert fine.rated[0].ties == ((0, 1),) and (fine.n_ties, len(fine.pairs)) == (5, 25)
    with pytest.raises(SourceError, match=r"uf.jsonl: row 1: completion 1 has no score field "
                                          r"'quality' \(--score-field\); its fields: model, "
                                          "response, overall_score, score, fine"):
        read_source(path, score_field="quality")


def test_ultrafeedback_prompt_column_and_json_text_completions(tmp_path: Path) -> None:
    rows = [{"prompt": r["instruction"], "completions": json.dumps(r["completions"])}
            for r in feedback_rows(3, 3)]
    result = read_source(write_csv(tmp_path / "uf.csv", rows))
    assert [len(p.responses) for p in result.rated] == [3, 3, 3] and len(result.pairs) == 9
    rows[1]["completions"] = json.dumps([{"response": "x", "overall_score": "high"}])
    with pytest.raises(SourceError, match=r"uf.csv: row 2: completion 1 field 'overall_score' is "
                                          "'high', expected a number"):
        read_source(write_csv(tmp_path / "uf.csv", rows))


def test_helpsteer_rows_group_by_prompt(tmp_path: Path) -> None:
    rows = helpsteer_rows(10, 2)
    result = read_source(write_csv(tmp_path / "hs.csv", rows))
    assert (len(result.rated), result.n_responses, result.read) == (10, 20, 20)
    third = result.rated[2]  # prompt 2: rows 2 and 12, helpfulness 2 and 3
    assert (third.prompt, third.responses) == ("Prompt 2", ("response 0 to 2", "response 1 to 2"))
    assert third.scores == (2.0, 3.0) and third.ranks == (1, 0)
    assert third.meta["rows"] == [2, 12] and third.meta["score_field"] == "helpfulness"
    assert third.meta["attributes"][1]["verbosity"] == "1"  # CSV cells as read
    assert read_source(tmp_path / "hs.csv", score_field="verbosity").rated[2].scores == (2.0, 1.0)
    # correctness 0 vs 1 per prompt: one pair each, response 1 chosen
    assert {p.chosen[:10] for p in read_source(tmp_path / "hs.csv",
                                               score_field="correctness").pairs} == {"response 1"}


def test_helpsteer_unknown_score_field_names_the_columns(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "hs.jsonl", helpsteer_rows(2, 2))
    with pytest.raises(SourceError, match=r"score field 'overall' \(--score-field\) is not a score "
                                          r"column; columns: prompt, response, helpfulness, "
                                          r"correctness, coherence, complexity, verbosity"):
        read_source(path, score_field="overall")


def test_rankings_give_ranks_and_rank_scores(tmp_path: Path) -> None:
    result = read_source(write_jsonl(tmp_path / "rank.jsonl", ranking_rows(20, 4)))
    assert (len(result.rated), result.n_responses, len(result.pairs)) == (20, 80, 120)
    second = result.rated[1]  # ranking [1, 2, 3, 0]: response 1 best, response 0 worst
    assert second.kind == "ranking"
    assert second.ranks == (3, 0, 1, 2) and second.scores == (0.0, 3.0, 2.0, 1.0)
    assert decided_pairs(second)[0] == (1, 0)


@pytest.mark.parametrize("ranking", [[0, 1, 1, 3], [0, 1, 2], [0, 1, 2, 4], [0, 1, 2, True],
                                     "not json"])
def test_a_ranking_that_is_no_permutation_is_refused(tmp_path: Path, ranking: object) -> None:
    rows = ranking_rows(3, 4)
    rows[1]["ranking"] = ranking
    with pytest.raises(SourceError, match=r"rank.jsonl: row 2: field 'ranking' is "):
        read_source(write_jsonl(tmp_path / "rank.jsonl", rows))


def test_score_field_is_refused_where_nothing_is_scored(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="applies to rated completions .* ranking rows"):
        read_source(write_jsonl(tmp_path / "rank.jsonl", ranking_rows(2)), score_field="x")
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    with pytest.raises(SourceError, match="this source holds preference pairs"):
        read_source(pairs, score_field="x")


def test_shapes_are_told_by_columns() -> None:
    assert rated_shape(["prompt", "response_a", "response_b", "winner_model_a",
                        "winner_model_b", "winner_tie"]) == "arena"
    assert rated_shape(["prompt", "response_a", "response_b"]) is None  # no outcome
    assert rated_shape(["prompt", "chosen", "rejected", "tie"]) == "tie_pair"
    assert rated_shape(["instruction", "completions"]) == "ultrafeedback"
    assert rated_shape(["prompt", "response", "helpfulness"]) == "helpsteer"
    assert rated_shape(["prompt", "responses", "ranking"]) == "ranking"
    assert rated_shape(["chosen", "rejected"]) is None


def test_synthetic_k_reads_as_rated_data() -> None:
    result = read_source("synthetic:n=12,k=4,ties=0.2,test_n=4")
    assert (len(result.rated), result.n_responses) == (16, 64)
    assert len(result.pairs) == 16 * 6 - result.n_ties
    assert len(read_source("synthetic:n=12,k=4,ties=0.2,test_n=4", split="train",
                           limit=5).rated) == 5
    with pytest.raises(SourceError, match="test_n= in the spec"):
        read_source("synthetic:n=12,k=4", test_fraction=0.2)


def test_a_test_fraction_splits_rated_prompts_with_their_pairs(tmp_path: Path) -> None:
    result = read_source(write_jsonl(tmp_path / "uf.jsonl", feedback_rows(60, 3)),
                         test_fraction=0.3)
    test = [p for p in result.rated if p.split == "test"]
    assert 5 < len(test) < 35
    assert sum(p.split == "test" for p in result.pairs) == 3 * len(test)
