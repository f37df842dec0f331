"""Review SQL for the store: reviewer names, the one-row-per-reviewer upsert, the queue filters.

Called by `Store` inside its sessions; nothing here commits. A review is one reviewer's verdict on
one flag (example × detector); the queue lists the flags of the detectors' latest runs.
"""

from __future__ import annotations

import getpass
import os
from typing import Any

from sqlalchemy import Select, case, distinct, exists, func, select, true
from sqlalchemy.orm import Session

from rewardlab.errors import StoreError
from rewardlab.store.bulk import conflict_insert
from rewardlab.store.rated import join_pair_texts, pair_text_columns
from rewardlab.store.records import QueueReview
from rewardlab.store.schema import DetectorRun, Example, Flag, Review, iso_utc, utcnow

__all__ = ["REVIEWER_ENV", "MAX_REVIEWER_CHARS", "MAX_NOTE_CHARS", "MAX_QUEUE_PAGE",
           "default_reviewer", "check_reviewer", "check_note", "upsert_review", "queue_select",
           "reviews_of"]

REVIEWER_ENV = "REWARDLAB_REVIEWER"
MAX_REVIEWER_CHARS = 200  # the column's width
# One cap for every way a note arrives (the review pages, the API, review files, the CLI): a note
# is a sentence or two about one flag, and a file of 2 MB notes is a mistake, not a review.
MAX_NOTE_CHARS = 10_000
MAX_QUEUE_PAGE = 500  # flags per review_queue page


def default_reviewer() -> str:
    """The reviewer name when none is given: $REWARDLAB_REVIEWER, else the login name."""
    try:
        login = getpass.getuser()
    except (OSError, KeyError):  # no login name (a container without the user in /etc/passwd)
        login = ""
    return os.environ.get(REVIEWER_ENV) or login or "anonymous"


def check_reviewer(reviewer: str) -> str:
    """The name stripped; StoreError when empty, wider than the column or holding a NUL."""
    who = reviewer.strip()
    if not who or len(who) > MAX_REVIEWER_CHARS:
        raise StoreError(f"reviewer name must be 1..{MAX_REVIEWER_CHARS} characters "
                         f"(got {len(who)})")
    if "\x00" in who:  # PostgreSQL refuses NUL in text; refused on SQLite too, to match
        raise StoreError("reviewer name must not contain a NUL character (\\x00)")
    return who


def check_note(note: str) -> str:
    """The note as given; StoreError when longer than MAX_NOTE_CHARS or holding a NUL."""
    if len(note) > MAX_NOTE_CHARS:
        raise StoreError(f"note: at most {MAX_NOTE_CHARS} characters (got {len(note):,})")
    if "\x00" in note:
        raise StoreError("note must not contain a NUL character (\\x00)")
    return note


def upsert_review(s: Session, example_id: int, detector: str, reviewer: str, verdict: str,
                  note: str) -> int:
    """Insert the review, or edit the one this reviewer left on this flag; returns its id.

    INSERT … ON CONFLICT DO UPDATE (both backends have it): atomic, so two tabs saving the
    same card at once end with one row, the later verdict."""
    now = utcnow()
    stmt = conflict_insert(s, Review).values(example_id=example_id, detector=detector,
                                         reviewer=reviewer, verdict=verdict, note=note,
                                         created_at=now, updated_at=now)
    stmt = stmt.on_conflict_do_update(
        index_elements=["example_id", "detector", "reviewer"],
        set_={"verdict": stmt.excluded.verdict, "note": stmt.excluded.note,
              "updated_at": stmt.excluded.updated_at})
    review_id = s.scalar(stmt.returning(Review.id))
    assert review_id is not None  # RETURNING of an upsert always yields the row
    return int(review_id)


def queue_select(run_ids: list[int], state: str,
                 reviewer: str | None) -> Select[*tuple[Any, ...]]:
    """The flags of `run_ids` with their pairs, filtered by review `state` (not yet ordered).

    The source's raw texts come only with a dialogue that did not parse cleanly: the card shows
    them there, and elsewhere they would double every page."""
    unparsed = Example.parse_issue.is_not(None)
    texts = pair_text_columns()  # a pair derived from rated data keeps its texts there
    stmt = (select(Example.id.label("example_id"), Example.source_index, Example.split,
                   Example.subset, texts["context"], texts["prompt"], texts["chosen"],
                   texts["rejected"], Example.parse_issue,
                   case((unparsed, Example.raw_chosen), else_=None).label("raw_chosen"),
                   case((unparsed, Example.raw_rejected), else_=None).label("raw_rejected"),
                   DetectorRun.detector, Flag.score, Flag.reason)
            .select_from(Flag)
            .join(Example, Flag.example_id == Example.id)
            .join(DetectorRun, Flag.run_id == DetectorRun.id)
            .where(Flag.run_id.in_(run_ids), Flag.flagged == true()))
    stmt = join_pair_texts(stmt)
    # correlated with the outer flag row: the reviews of this example × detector
    of_flag = (Review.example_id == Flag.example_id) & (Review.detector == DetectorRun.detector)
    mine = of_flag & (Review.reviewer == reviewer) if reviewer else of_flag
    if state == "unreviewed":
        stmt = stmt.where(~exists().where(mine))
    elif state == "reviewed":
        stmt = stmt.where(exists().where(mine))
    elif state == "needs_review":
        stmt = stmt.where(exists().where(of_flag & (Review.verdict == "needs_review")))
    elif state == "disagreements":
        verdicts = select(func.count(distinct(Review.verdict))).where(of_flag).scalar_subquery()
        stmt = stmt.where(verdicts > 1)
    return stmt


def reviews_of(s: Session, example_ids: list[int]) -> dict[tuple[int, str], list[QueueReview]]:
    """(example_id, detector) -> its reviews, by reviewer name."""
    found: dict[tuple[int, str], list[QueueReview]] = {}
    if not example_ids:
        return found
    rows = s.execute(select(Review.example_id, Review.detector, Review.reviewer, Review.verdict,
                            Review.note, Review.updated_at)
                     .where(Review.example_id.in_(example_ids))
                     .order_by(Review.reviewer)).all()
    for example_id, detector, reviewer, verdict, note, updated_at in rows:
        found.setdefault((example_id, detector), []).append(
            {"reviewer": reviewer, "verdict": verdict, "note": note,
             "updated_at": iso_utc(updated_at)})
    return found
