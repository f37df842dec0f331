"""Rated prompts in the store (issue 32): K responses with scores, ranks and ties, and the pairs
derived from them.

A rated prompt is one `rated_prompts` row, its responses `rated_responses` rows (position, text,
score, rank) and its tie labels `rated_ties` rows. Its decided pairs are `examples` rows like any
pair — flags, reviews and trained runs attach to their ids — but they hold no texts: `rated_id`,
`chosen_pos` and `rejected_pos` point at the responses, and reads join the texts back
(`pair_text_columns`, `join_pair_texts`), so every response text is stored once however many
pairs it is in (K − 1 for K responses). Called by `Store` inside its sessions; nothing here commits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, and_, delete, exists, func, select
from sqlalchemy.orm import Session, aliased

from rewardlab.data.pairs import Split
from rewardlab.data.rated import RatedPrompt, decided_pairs, derived_pairs, rated_content_hash
from rewardlab.errors import StoreError
from rewardlab.jsonable import to_jsonable
from rewardlab.store.bulk import bulk_insert
from rewardlab.store.schema import Example, RatedPromptRow, RatedResponse, RatedTie

__all__ = ["pair_text_columns", "join_pair_texts", "check_rated_text", "insert_rated",
           "select_rated", "has_rated", "rated_counts", "clear_rated"]

_CHOSEN = aliased(RatedResponse, name="chosen_response")
_REJECTED = aliased(RatedResponse, name="rejected_response")
_S = TypeVar("_S", bound="Select[*tuple[Any, ...]]")


def pair_text_columns() -> dict[str, ColumnElement[str]]:
    """context, prompt, chosen, rejected of an `examples` row, labelled: a derived pair's from
    its rated prompt and responses (needs `join_pair_texts`), any other pair's own columns."""
    return {
        "context": func.coalesce(RatedPromptRow.context, Example.context).label("context"),
        "prompt": func.coalesce(RatedPromptRow.prompt, Example.prompt).label("prompt"),
        "chosen": func.coalesce(_CHOSEN.text, Example.chosen).label("chosen"),
        "rejected": func.coalesce(_REJECTED.text, Example.rejected).label("rejected"),
    }


def join_pair_texts(stmt: _S) -> _S:
    """`stmt` (which selects from `examples`) outer-joined to the texts of derived pairs."""
    return (stmt.outerjoin(RatedPromptRow, Example.rated_id == RatedPromptRow.id)
            .outerjoin(_CHOSEN, and_(_CHOSEN.rated_id == Example.rated_id,
                                     _CHOSEN.position == Example.chosen_pos))
            .outerjoin(_REJECTED, and_(_REJECTED.rated_id == Example.rated_id,
                                       _REJECTED.position == Example.rejected_pos)))


def check_rated_text(spec: str, prompts: Sequence[RatedPrompt]) -> None:
    """PostgreSQL refuses a NUL character in text and SQLite stores it: refuse it on both, naming
    the prompt (pair sources reject such a row; a rated prompt is all or nothing)."""
    for rated in prompts:
        texts = {"prompt": rated.prompt, "context": rated.context}
        texts.update({f"response {k}": text for k, text in enumerate(rated.responses)})
        bad = [name for name, text in texts.items() if "\x00" in text]
        if bad:
            raise StoreError(f"{spec}: {rated.split} prompt at source index {rated.source_index}: "
                             f"NUL character (\\x00) in {', '.join(bad)} (the database cannot "
                             "store it); nothing ingested")


def _prompt_row(dataset_id: int, rated: RatedPrompt, content_hash: str) -> dict[str, Any]:
    meta = {k: v for k, v in rated.meta.items() if k not in ("context", "rated_id")}
    return {"dataset_id": dataset_id, "split": rated.split, "source_index": rated.source_index,
            "kind": rated.kind, "context": rated.context,
            "prompt": rated.prompt, "meta": to_jsonable(meta), "content_hash": content_hash}


def _derived_rows(dataset_id: int, rated: RatedPrompt) -> list[dict[str, Any]]:
    """The decided pairs of a stored prompt (`rated.meta["rated_id"]` set) as `examples` rows.
    Their content hash is the loaded pair's (texts and meta included), as for any pair."""
    rows = []
    for pair in derived_pairs(rated):
        rows.append({"dataset_id": dataset_id, "split": pair.split,
                     "source_index": pair.source_index, "subset": "", "context": "",
                     "prompt": "", "chosen": "", "rejected": "", "raw_chosen": None,
                     "raw_rejected": None, "histories_differ": pair.histories_differ,
                     "parse_issue": None, "meta": pair.meta, "content_hash": pair.content_hash,
                     "rated_id": pair.meta["rated_id"], "chosen_pos": pair.meta["a"],
                     "rejected_pos": pair.meta["b"]})
    return rows


def insert_rated(s: Session, dataset_id: int, prompts: Sequence[RatedPrompt]
                 ) -> tuple[int, dict[str, dict[str, int]]]:
    """Add the prompts not yet in the dataset (by `rated_content_hash`), their responses, ties
    and derived pairs. Returns (prompts added, derived pairs ingested / already present per
    "split/-" group): a prompt already stored adds nothing, so the same source twice is a no-op."""
    existing = set(s.scalars(select(RatedPromptRow.content_hash)
                             .where(RatedPromptRow.dataset_id == dataset_id)))
    new: list[tuple[str, RatedPrompt]] = []
    by_group: dict[str, dict[str, int]] = {}
    for rated in prompts:
        counts = by_group.setdefault(f"{rated.split}/-", {"ingested": 0, "already_present": 0})
        content_hash = rated_content_hash(rated)
        n_pairs = len(decided_pairs(rated))
        if content_hash in existing:
            counts["already_present"] += n_pairs
            continue
        existing.add(content_hash)
        new.append((content_hash, rated))
        counts["ingested"] += n_pairs
    bulk_insert(s, RatedPromptRow, [_prompt_row(dataset_id, r, h) for h, r in new])
    ids = dict(s.execute(select(RatedPromptRow.content_hash, RatedPromptRow.id)
                         .where(RatedPromptRow.dataset_id == dataset_id)).all())
    stored = [replace(r, meta={**r.meta, "rated_id": ids[h]}) for h, r in new]
    bulk_insert(s, RatedResponse, [
        {"rated_id": r.meta["rated_id"], "position": k, "text": text,
         "score": score if math.isfinite(score) else None, "rank": r.ranks[k]}
        for r in stored for k, (text, score) in enumerate(zip(r.responses, r.scores))])
    bulk_insert(s, RatedTie, [{"rated_id": r.meta["rated_id"], "a": a, "b": b}
                              for r in stored for a, b in r.ties])
    bulk_insert(s, Example, [row for r in stored for row in _derived_rows(dataset_id, r)])
    return len(new), dict(sorted(by_group.items()))


def select_rated(s: Session, dataset_id: int, split: Split | None) -> list[RatedPrompt]:
    """The dataset's rated prompts ordered by (split, source_index, id); meta as given plus
    {"rated_id": id} (and "context" when there is one)."""
    where = [RatedPromptRow.dataset_id == dataset_id]
    if split is not None:
        where.append(RatedPromptRow.split == split)
    heads = s.execute(select(RatedPromptRow).where(*where).order_by(
        RatedPromptRow.split, RatedPromptRow.source_index, RatedPromptRow.id)).scalars().all()
    responses: dict[int, list[tuple[str, float, int]]] = {h.id: [] for h in heads}
    for rated_id, text, score, rank in s.execute(
            select(RatedResponse.rated_id, RatedResponse.text, RatedResponse.score,
                   RatedResponse.rank)
            .join(RatedPromptRow, RatedResponse.rated_id == RatedPromptRow.id).where(*where)
            .order_by(RatedResponse.rated_id, RatedResponse.position)):
        responses[rated_id].append((text, math.nan if score is None else float(score), rank))
    ties: dict[int, list[tuple[int, int]]] = {h.id: [] for h in heads}
    for rated_id, a, b in s.execute(
            select(RatedTie.rated_id, RatedTie.a, RatedTie.b)
            .join(RatedPromptRow, RatedTie.rated_id == RatedPromptRow.id).where(*where)
            .order_by(RatedTie.id)):
        ties[rated_id].append((a, b))
    return [_rated_prompt(h, responses[h.id], ties[h.id]) for h in heads]


def _rated_prompt(head: RatedPromptRow, responses: list[tuple[str, float, int]],
                  ties: list[tuple[int, int]]) -> RatedPrompt:
    context = {"context": head.context} if head.context else {}
    return RatedPrompt(
        source_index=head.source_index, split=head.split,  # type: ignore[arg-type]
        prompt=head.prompt, responses=tuple(r[0] for r in responses),
        scores=tuple(r[1] for r in responses), ranks=tuple(r[2] for r in responses),
        ties=tuple(ties), meta={**context, **(head.meta or {}), "rated_id": head.id},
        kind=head.kind)  # type: ignore[arg-type]


def has_rated(s: Session, dataset_id: int) -> bool:
    """Whether the dataset holds rated prompts (its pairs then need `join_pair_texts`)."""
    return bool(s.scalar(select(exists().where(RatedPromptRow.dataset_id == dataset_id))))


def rated_counts(s: Session) -> dict[int, dict[str, int]]:
    """dataset id -> {"rated_prompts", "rated_responses", "ties"}, for datasets with any."""
    counts: dict[int, dict[str, int]] = {}
    queries = (("rated_prompts", select(RatedPromptRow.dataset_id, func.count())),
               ("rated_responses", select(RatedPromptRow.dataset_id, func.count())
                .join(RatedResponse, RatedResponse.rated_id == RatedPromptRow.id)),
               ("ties", select(RatedPromptRow.dataset_id, func.count())
                .join(RatedTie, RatedTie.rated_id == RatedPromptRow.id)))
    for key, query in queries:
        for dataset_id, n in s.execute(query.group_by(RatedPromptRow.dataset_id)):
            counts.setdefault(dataset_id, {"rated_prompts": 0, "rated_responses": 0,
                                           "ties": 0})[key] = n
    return counts


def clear_rated(s: Session, dataset_id: int) -> None:
    """Delete the dataset's rated prompts, responses and ties (after its examples: derived pairs
    point at them), children first as `binding.clear_dataset` does."""
    rated = select(RatedPromptRow.id).where(RatedPromptRow.dataset_id == dataset_id)
    for statement in (delete(RatedTie).where(RatedTie.rated_id.in_(rated)),
                      delete(RatedResponse).where(RatedResponse.rated_id.in_(rated)),
                      delete(RatedPromptRow).where(RatedPromptRow.dataset_id == dataset_id)):
        s.execute(statement.execution_options(synchronize_session=False))
