"""What one ingest of pairs writes: the Example rows of the new pairs, the rows refused, the counts.

`Store.ingest` reads a source, drops what the database cannot hold (`split_nul_rows`), plans the
rows of pairs it does not have yet (`plan_ingest`, by content hash) and reports `IngestCounts`.

>>> pair = PreferencePair(0, "train", "p", "a", "b")
>>> rows, counts = plan_ingest(1, [pair, pair], set())
>>> len(rows), counts
(1, {'train/-': {'ingested': 1, 'already_present': 1}})
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rewardlab.data.pairs import PreferencePair
from rewardlab.jsonable import to_jsonable

__all__ = ["PAIR_COLUMNS", "TEXT_COLUMNS", "IngestCounts", "example_row", "group_key",
           "plan_ingest", "split_nul_rows"]

# PreferencePair fields stored as same-named Example columns, in load order.
PAIR_COLUMNS = ("source_index", "split", "subset", "context", "prompt", "chosen", "rejected",
                "raw_chosen", "raw_rejected", "histories_differ", "parse_issue", "meta")
# The text columns among them (PostgreSQL refuses a NUL character in any of them).
TEXT_COLUMNS = ("subset", "context", "prompt", "chosen", "rejected", "raw_chosen", "raw_rejected",
                "parse_issue")


@dataclass
class IngestCounts:
    """What one `Store.ingest` did; `by_group` is keyed "split/subset" ("train/-" for no subset)."""

    dataset: str
    read: int
    ingested: int
    already_present: int
    rejected: list[tuple[int, str]] = field(default_factory=list)
    by_group: dict[str, dict[str, int]] = field(default_factory=dict)
    replaced: bool = False  # ingested with `replace=True`: nothing the dataset held before remains
    # (source_index, issue) of pairs kept although their dialogue did not parse cleanly
    parse_issues: list[tuple[int, str]] = field(default_factory=list)
    # a rated source (issue 32), as read: its prompts, their responses, the tie labels (in no
    # pair) and the decided pairs derived from them; `rated_ingested` prompts were new.
    # `rated_kind` is the prompts' kind (vote | ratings | ranking, "mixed"), None for pairs.
    rated_kind: str | None = None
    rated_prompts: int = 0
    rated_responses: int = 0
    ties: int = 0
    pairs: int = 0
    rated_ingested: int = 0


def group_key(pair: PreferencePair) -> str:
    return f"{pair.split}/{pair.subset or '-'}"


def example_row(dataset_id: int, pair: PreferencePair, content_hash: str) -> dict[str, Any]:
    row = {col: getattr(pair, col) for col in PAIR_COLUMNS}
    row["meta"] = to_jsonable(pair.meta) if pair.meta else {}
    row.update(dataset_id=dataset_id, content_hash=content_hash)
    return row


def split_nul_rows(pairs: Sequence[PreferencePair]
                    ) -> tuple[list[PreferencePair], list[tuple[int, str]]]:
    """(pairs to store, rejected rows): a pair with a NUL character in any text is rejected.

    PostgreSQL refuses NUL in text and SQLite stores it; rejecting the row (reason naming the
    fields, source index as for any rejected row) makes both backends keep the same pairs.
    """
    kept: list[PreferencePair] = []
    rejected: list[tuple[int, str]] = []
    for pair in pairs:
        fields = [col for col in TEXT_COLUMNS if "\x00" in (getattr(pair, col) or "")]
        if fields:
            rejected.append((pair.source_index, f"NUL character (\\x00) in "
                             f"{', '.join(map(repr, fields))} (the database cannot store it)"))
        else:
            kept.append(pair)
    return kept, rejected


def plan_ingest(dataset_id: int, pairs: Sequence[PreferencePair], existing: set[str]
                 ) -> tuple[list[dict[str, Any]], dict[str, dict[str, int]]]:
    """Rows to insert (hashes not yet present, first copy of in-source duplicates) and counts."""
    rows: list[dict[str, Any]] = []
    by_group: dict[str, dict[str, int]] = {}
    for pair in pairs:
        counts = by_group.setdefault(group_key(pair), {"ingested": 0, "already_present": 0})
        content_hash = pair.content_hash
        if content_hash in existing:
            counts["already_present"] += 1
            continue
        existing.add(content_hash)
        rows.append(example_row(dataset_id, pair, content_hash))
        counts["ingested"] += 1
    return rows, by_group
