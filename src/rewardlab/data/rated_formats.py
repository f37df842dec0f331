"""Rated preference rows → `RatedPrompt`s (issue 32): votes with ties, rated completions, rankings.

The shape is told by the columns (`rated_shape`); a file whose columns fit none of these is read
as pairs (`data.formats`):

- **arena** (Chatbot Arena, lmsys-arena-human-preference-55k): `prompt`, `response_a`,
  `response_b` and either one-hot `winner_model_a` / `winner_model_b` / `winner_tie` (exactly one
  1) or `winner` in {model_a, model_b, tie, "tie (bothbad)"}. The texts are plain strings or
  JSON-encoded lists of turns (`'["q1", "q2"]'`): the prompt's turns alternate with each
  response's, the last exchange is compared and the earlier turns (side a's replies) are the
  context, as for multi-turn pairs; `meta["histories_differ"]` when side b's earlier replies
  differ; a null turn is empty text (the `empty_response` detector flags it). Kind `vote`.
- **tie_pair**: an explicit-prompt pair `prompt`, `chosen`, `rejected` with a `tie` column; a true
  `tie` is a tie vote, a false one a win for `chosen`. Kind `vote`.
- **ultrafeedback**: `instruction` or `prompt`, and `completions` (a list, or its JSON text) of
  `{response, overall_score | score, …}`; the score field is `--score-field` (default
  `overall_score`, else `score`). Kind `ratings`.
- **helpsteer** (HelpSteer2): one row per response, `prompt`, `response` and attribute columns;
  rows with the same prompt text make one prompt (in order of first appearance, `meta["rows"]`
  their row indices, `meta["attributes"]` the other columns per response); the score is the
  `--score-field` column (default `helpfulness`). Kind `ratings`.
- **ranking**: `prompt`, `responses` (a list) and `ranking` (response indices, best first: a
  permutation of 0..K-1). Kind `ranking`, scores K-1-rank.

Scores, ranks and ties follow the contract of `RatedPrompt.kind`: a vote's scores are (1, 0),
(0, 1) or (½, ½) with the tie labelled; ratings are ranked by score and equal scores are ties.
Unlike pair files, a bad row is not skipped: it is one `SourceError` naming the file, the row
(1-based: the line of a JSON-lines file without blank lines) and the field, and nothing of the
file is ingested — a vote or a rating read wrong would change every pair of its prompt.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from rewardlab.data.formats import RowError, parse_number, split_prompt
from rewardlab.data.pairs import Split
from rewardlab.data.rated import RatedPrompt, derived_pairs, ranks_from_scores
from rewardlab.data.source_result import SourceResult
from rewardlab.errors import SourceError

__all__ = ["RatedShape", "RATED_SHAPES", "rated_shape", "rated_from_rows", "rated_result"]

RatedShape = Literal["arena", "tie_pair", "ultrafeedback", "helpsteer", "ranking"]
RATED_SHAPES: tuple[str, ...] = ("arena", "tie_pair", "ultrafeedback", "helpsteer", "ranking")
_ONE_HOT = ("winner_model_a", "winner_model_b", "winner_tie")
_WINNERS = {"model_a": 0, "model_b": 1, "tie": None, "tie (bothbad)": None}
_HELPSTEER_TEXT = ("prompt", "response")
_HELPSTEER_SCORE = "helpfulness"
_FEEDBACK_SCORES = ("overall_score", "score")
_TRUE = {"true": True, "1": True, "false": False, "0": False}


def rated_shape(columns: Sequence[str]) -> RatedShape | None:
    """Which rated shape rows with these columns have, None for pair data.

    >>> rated_shape(["prompt", "response_a", "response_b", "winner"])
    'arena'
    >>> rated_shape(["prompt", "chosen", "rejected"]) is None
    True
    """
    have = set(columns)
    if {"prompt", "response_a", "response_b"} <= have and (set(_ONE_HOT) <= have
                                                            or "winner" in have):
        return "arena"
    if {"prompt", "chosen", "rejected", "tie"} <= have:
        return "tie_pair"
    if "completions" in have and have & {"instruction", "prompt"}:
        return "ultrafeedback"
    if {"prompt", "responses", "ranking"} <= have:
        return "ranking"
    if set(_HELPSTEER_TEXT) <= have and not have & {"chosen", "rejected"}:
        return "helpsteer"
    return None


def rated_from_rows(rows: Iterable[Mapping[str, Any]], *, columns: Sequence[str], name: str,
                    split: Split, shape: RatedShape,
                    score_field: str | None = None) -> list[RatedPrompt]:
    """Every row of one source as `RatedPrompt`s (module doc); `source_index` is the row's
    0-based index (HelpSteer2: the prompt's, in order of first appearance).

    `SourceError` naming `name`, the row and the field for a row that does not fit its shape,
    and for a `score_field` the rows do not have or whose shape has no scores.
    """
    if shape == "helpsteer":
        return _helpsteer_prompts(list(rows), columns=columns, name=name, split=split,
                                  score_field=_helpsteer_field(columns, name, score_field))
    if score_field is not None and shape != "ultrafeedback":
        raise SourceError(f"{name}: --score-field applies to rated completions (UltraFeedback, "
                          f"HelpSteer2); these rows are {shape.replace('_', ' ')} rows, whose "
                          "order is given, not scored")
    readers = {"arena": _arena_prompt, "tie_pair": _tie_pair_prompt,
               "ultrafeedback": _feedback_prompt, "ranking": _ranking_prompt}
    prompts: list[RatedPrompt] = []
    for index, row in enumerate(rows):
        try:
            prompts.append(readers[shape](row, index, split, score_field))
        except RowError as e:
            raise SourceError(f"{name}: row {index + 1}: {e}") from None
    return prompts


def rated_result(spec: str, prompts: list[RatedPrompt], *, read: int) -> SourceResult:
    """The `SourceResult` of a rated source: its prompts and their decided pairs."""
    pairs = [pair for rated in prompts for pair in derived_pairs(rated)]
    return SourceResult(spec=spec, pairs=pairs, read=read, rejected=[], rated=prompts)


# ---- votes ------------------------------------------------------------------------------------

def _vote(index: int, split: Split, context: str, prompt: str, responses: tuple[str, str],
          winner: int | None, meta: dict[str, Any]) -> RatedPrompt:
    """A K = 2 vote: `winner` 0 (a), 1 (b) or None (a tie)."""
    scores = (0.5, 0.5) if winner is None else (1.0, 0.0) if winner == 0 else (0.0, 1.0)
    meta = {**({"context": context} if context else {}), **meta}
    return RatedPrompt(source_index=index, split=split, prompt=prompt, responses=responses,
                       scores=scores, ranks=ranks_from_scores(scores),
                       ties=((0, 1),) if winner is None else (), meta=meta, kind="vote")


def _arena_prompt(row: Mapping[str, Any], index: int, split: Split,
                  _score_field: str | None) -> RatedPrompt:
    prompts = _turns(row, "prompt")
    a, b = _turns(row, "response_a"), _turns(row, "response_b")
    if not len(prompts) == len(a) == len(b):
        raise RowError(f"'prompt', 'response_a' and 'response_b' hold {len(prompts)}, {len(a)} "
                       f"and {len(b)} turns; they must alternate one for one")
    if len(prompts) == 1:
        context, prompt = split_prompt(prompts[0])
    else:
        context = "\n\n".join(f"Human: {q}\n\nAssistant: {r}" for q, r in zip(prompts, a[:-1]))
        prompt = prompts[-1]
    meta: dict[str, Any] = {}
    if a[:-1] != b[:-1]:
        meta["histories_differ"] = True
    models = [row.get("model_a"), row.get("model_b")]
    if all(isinstance(m, str) for m in models):
        meta["models"] = models
    return _vote(index, split, context, prompt, (a[-1], b[-1]), _arena_winner(row), meta)


def _turns(row: Mapping[str, Any], key: str) -> list[str]:
    """A text, or a list of turns (a list, or its JSON text as in lmsys-arena-55k)."""
    value = row.get(key)
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass  # plain text that starts with "["
    if isinstance(value, str):
        return [value.strip()]
    if not isinstance(value, list) or not value:
        shown = "null" if value is None else f"{type(value).__name__} {value!r}"[:60]
        raise RowError(f"field '{key}' is {shown}, expected text or a list of turns")
    for turn, text in enumerate(value, start=1):
        if not isinstance(text, str) and text is not None:
            raise RowError(f"field '{key}' turn {turn} is {type(text).__name__}, expected text")
    # lmsys-arena-55k has null turns (a reply that was never given): empty text, which the
    # empty_response detector flags, rather than refusing the whole file
    return [(text or "").strip() for text in value]


def _arena_winner(row: Mapping[str, Any]) -> int | None:
    """0 (a won), 1 (b won) or None (a tie) from the one-hot columns, else from `winner`."""
    if all(key in row for key in _ONE_HOT):
        hot = [_zero_one(row[key], key) for key in _ONE_HOT]
        if sum(hot) != 1:
            shown = ", ".join(f"{key}={row[key]!r}" for key in _ONE_HOT)
            raise RowError(f"{shown}: exactly one of them must be 1")
        return {0: 0, 1: 1, 2: None}[hot.index(1)]
    winner = row.get("winner")
    if not isinstance(winner, str) or winner.strip() not in _WINNERS:
        raise RowError(f"field 'winner' is {winner!r}, expected one of "
                       f"{', '.join(map(repr, _WINNERS))}")
    return _WINNERS[winner.strip()]


def _zero_one(value: Any, key: str) -> int:
    """0 or 1 from a number, a bool or its text (CSV cells are text)."""
    if isinstance(value, str) and value.strip() in ("0", "1", "0.0", "1.0"):
        return int(float(value))
    if isinstance(value, (bool, int, float)) and value in (0, 1):
        return int(value)
    raise RowError(f"field '{key}' is {value!r}, expected 0 or 1")


def _tie_pair_prompt(row: Mapping[str, Any], index: int, split: Split,
                     _score_field: str | None) -> RatedPrompt:
    context, prompt = split_prompt(_text_or_messages(row, "prompt"))
    chosen, rejected = _text(row, "chosen"), _text(row, "rejected")
    tie = row.get("tie")
    if isinstance(tie, str) and tie.strip().lower() in _TRUE:
        tie = _TRUE[tie.strip().lower()]
    if not isinstance(tie, bool) and tie not in (0, 1):
        raise RowError(f"field 'tie' is {tie!r}, expected true or false")
    return _vote(index, split, context, prompt, (chosen, rejected), None if tie else 0, {})


# ---- ratings and rankings ---------------------------------------------------------------------

def _ratings(index: int, split: Split, context: str, prompt: str, responses: tuple[str, ...],
             scores: tuple[float, ...], meta: dict[str, Any]) -> RatedPrompt:
    """Ranked by score; equal scores are ties."""
    ties = tuple((i, j) for i in range(len(scores)) for j in range(i + 1, len(scores))
                 if scores[i] == scores[j])
    meta = {**({"context": context} if context else {}), **meta}
    return RatedPrompt(source_index=index, split=split, prompt=prompt, responses=responses,
                       scores=scores, ranks=ranks_from_scores(scores), ties=ties, meta=meta)


def _feedback_prompt(row: Mapping[str, Any], index: int, split: Split,
                     score_field: str | None) -> RatedPrompt:
    key = "instruction" if row.get("instruction") is not None else "prompt"
    context, prompt = split_prompt(_text_or_messages(row, key), key)
    completions = _list(row, "completions")
    responses, scores = [], []
    for k, completion in enumerate(completions, start=1):
        if not isinstance(completion, Mapping):
            raise RowError(f"completion {k} is {type(completion).__name__}, expected an object")
        field = score_field or next((f for f in _FEEDBACK_SCORES if f in completion),
                                    _FEEDBACK_SCORES[0])
        if field not in completion:
            raise RowError(f"completion {k} has no score field {field!r} (--score-field); its "
                           f"fields: {', '.join(map(str, completion)) or 'none'}")
        responses.append(_text(completion, "response", where=f"completion {k} "))
        scores.append(parse_number(completion[field], f"completion {k} field {field!r}"))
    meta: dict[str, Any] = {}
    models = [c.get("model") for c in completions]
    if all(isinstance(m, str) for m in models):
        meta["models"] = models
    return _ratings(index, split, context, prompt, tuple(responses), tuple(scores), meta)


def _ranking_prompt(row: Mapping[str, Any], index: int, split: Split,
                    _score_field: str | None) -> RatedPrompt:
    context, prompt = split_prompt(_text_or_messages(row, "prompt"))
    responses = tuple(_item_text(r, f"'responses' item {k}")
                      for k, r in enumerate(_list(row, "responses"), start=1))
    ranking = _list(row, "ranking")
    k = len(responses)
    if (any(isinstance(i, bool) or not isinstance(i, int) for i in ranking)
            or sorted(ranking) != list(range(k))):
        raise RowError(f"field 'ranking' is {ranking!r}, expected the indices 0..{k - 1} of the "
                       f"{k} responses, best first, each once")
    ranks = tuple(ranking.index(i) for i in range(k))
    scores = tuple(float(k - 1 - rank) for rank in ranks)
    meta = {"context": context} if context else {}
    return RatedPrompt(source_index=index, split=split, prompt=prompt, responses=responses,
                       scores=scores, ranks=ranks, meta=meta, kind="ranking")


def _helpsteer_field(columns: Sequence[str], name: str, score_field: str | None) -> str:
    field = score_field or _HELPSTEER_SCORE
    if field not in columns or field in _HELPSTEER_TEXT:
        scores = [c for c in columns if c not in _HELPSTEER_TEXT]
        raise SourceError(f"{name}: score field {field!r} (--score-field) is not a score column; "
                          f"columns: {', '.join(columns)}; scores could come from: "
                          f"{', '.join(scores) or 'none'}")
    return field


def _helpsteer_prompts(rows: list[Mapping[str, Any]], *, columns: Sequence[str], name: str,
                       split: Split, score_field: str) -> list[RatedPrompt]:
    """Rows grouped by prompt text, in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        prompt = row.get("prompt")
        if not isinstance(prompt, str):
            raise SourceError(f"{name}: row {index + 1}: field 'prompt' is "
                              f"{'null' if prompt is None else type(prompt).__name__}, "
                              "expected text")
        groups.setdefault(prompt, []).append(index)
    attributes = [c for c in columns if c not in _HELPSTEER_TEXT]
    return [_helpsteer_prompt(rows, members, number, name=name, split=split,
                              score_field=score_field, attributes=attributes)
            for number, members in enumerate(groups.values())]


def _helpsteer_prompt(rows: list[Mapping[str, Any]], members: list[int], number: int, *,
                      name: str, split: Split, score_field: str,
                      attributes: list[str]) -> RatedPrompt:
    responses, scores = [], []
    for index in members:
        try:
            responses.append(_text(rows[index], "response"))
            scores.append(parse_number(rows[index].get(score_field), f"field {score_field!r}"))
            context, prompt = split_prompt(str(rows[index]["prompt"]))
        except RowError as e:
            raise SourceError(f"{name}: row {index + 1}: {e}") from None
    meta = {"rows": members, "score_field": score_field,
            "attributes": [{c: rows[i].get(c) for c in attributes} for i in members]}
    return _ratings(number, split, context, prompt, tuple(responses), tuple(scores), meta)


# ---- fields -----------------------------------------------------------------------------------

def _text(row: Mapping[str, Any], key: str, *, where: str = "") -> str:
    return _item_text(row.get(key), f"{where}field '{key}'")


def _item_text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise RowError(f"{what} is {'null' if value is None else type(value).__name__}, "
                       "expected text")
    return value.strip()


def _text_or_messages(row: Mapping[str, Any], key: str) -> str | list[Any]:
    value = row.get(key)
    if not isinstance(value, (str, list)):
        shown = "null" if value is None else type(value).__name__
        raise RowError(f"field '{key}' is {shown}, expected text or messages")
    return value


def _list(row: Mapping[str, Any], key: str) -> list[Any]:
    """A list field; CSV cells (text) hold its JSON."""
    value = row.get(key)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise RowError(f"field '{key}' is text that is not a JSON list ({e.msg})") from None
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list) or not value:
        shown = "null" if value is None else "empty" if value == [] else type(value).__name__
        raise RowError(f"field '{key}' is {shown}, expected a non-empty list")
    return value
