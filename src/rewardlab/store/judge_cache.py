"""The `llm_judge` answer cache's SQL: what a model answered for one rendering of one pair under
one template, so a re-run asks nothing twice. Called by `Store` inside its sessions; nothing here
commits. Keyed by content, not by dataset (table `judge_answers`, `schema.JudgeAnswer`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from rewardlab.store.bulk import IN_CHUNK, bulk_insert, chunks
from rewardlab.store.records import JudgeAnswerRow
from rewardlab.store.schema import JudgeAnswer, utcnow

__all__ = ["select_judge_answers", "insert_judge_answers"]

def select_judge_answers(s: Session, model: str, template_hash: str,
                         pair_hashes: Sequence[str]) -> dict[str, JudgeAnswerRow]:
    """pair hash → the answer cached for it under (model, template_hash)."""
    found: dict[str, JudgeAnswerRow] = {}
    for chunk in chunks(list(pair_hashes), IN_CHUNK):
        for row in s.execute(
                select(JudgeAnswer.pair_hash, JudgeAnswer.preferred, JudgeAnswer.confidence,
                       JudgeAnswer.prompt_tokens, JudgeAnswer.completion_tokens, JudgeAnswer.cost)
                .where(JudgeAnswer.model == model, JudgeAnswer.template_hash == template_hash,
                       JudgeAnswer.pair_hash.in_(chunk))):
            found[row.pair_hash] = {
                "preferred": row.preferred, "confidence": row.confidence,
                "prompt_tokens": row.prompt_tokens, "completion_tokens": row.completion_tokens,
                "cost": row.cost}
    return found


def insert_judge_answers(s: Session, model: str, template_hash: str,
                         answers: Mapping[str, JudgeAnswerRow]) -> int:
    """Add the answers whose pair hash is not cached yet (the first answer stays); how many."""
    have: set[str] = set()
    for chunk in chunks(list(answers), IN_CHUNK):
        have.update(s.scalars(select(JudgeAnswer.pair_hash).where(
            JudgeAnswer.model == model, JudgeAnswer.template_hash == template_hash,
            JudgeAnswer.pair_hash.in_(chunk))))
    now = utcnow()  # given, not defaulted: COPY on PostgreSQL applies no Python default
    rows = [{"model": model, "template_hash": template_hash, "pair_hash": key, **answer,
             "created_at": now}
            for key, answer in answers.items() if key not in have]
    bulk_insert(s, JudgeAnswer, rows)
    return len(rows)
