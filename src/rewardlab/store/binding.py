"""A dataset bound to its source: the same name never silently mixes two sources.

Each split of a dataset is bound to the source it was read from (`DatasetSource`: resolved path or
spec, plus `fingerprint_pairs` of that split's pairs). Ingesting into a bound split succeeds only
for the identical source (then it is idempotent); another path, or the same path with other
content, is a StoreError that says what to do. Per split, so a separate test source
(`compare --test`, `ingest --split test`) still joins the dataset as its test split.
A split that holds pairs but no binding (a database from before bindings) is adopted when its
stored pairs are exactly the pairs read, and refused otherwise.

Called by `Store.ingest` inside its transaction; nothing here commits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from rewardlab.data.pairs import PreferencePair, fingerprint_pairs
from rewardlab.data.rated import RatedPrompt, rated_content_hash
from rewardlab.errors import StoreError
from rewardlab.store.rated import clear_rated
from rewardlab.store.schema import (
    DatasetSource,
    DetectorRun,
    Example,
    Flag,
    Review,
    TrainedRun,
    TrainedRunReward,
)

__all__ = ["bind_source", "clear_dataset", "source_location"]


def source_location(spec: str) -> str:
    """The resolved path of a file or directory spec, else the spec itself (hub, synthetic, …)."""
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def _advice(name: str) -> str:
    return (f"refusing to mix them: ingest it under another --name, or replace dataset {name!r} "
            f"with `rewardlab ingest SOURCE --name {name} --replace`")


def bind_source(s: Session, dataset_id: int, name: str, spec: str,
                pairs: Sequence[PreferencePair], rated: Sequence[RatedPrompt] = ()) -> None:
    """Check (and record) the binding of every split present in `pairs` (and, for a rated
    source, in `rated`: a split may hold only ties); StoreError on a mismatch."""
    location = source_location(spec)
    for split in sorted({p.split for p in pairs} | {p.split for p in rated}):
        in_split = [p for p in pairs if p.split == split]
        _bind_split(s, dataset_id, name, split, spec=spec, location=location, pairs=in_split,
                    rated=[p for p in rated if p.split == split])


def _fingerprint_rated(prompts: Sequence[RatedPrompt]) -> str:
    """`fingerprint_pairs` for rated prompts: ties, scores and responses in no pair count too."""
    digest = hashlib.sha256()
    for rated in prompts:
        digest.update(rated_content_hash(rated).encode())
    return digest.hexdigest()


def _bind_split(s: Session, dataset_id: int, name: str, split: str, *, spec: str, location: str,
                pairs: list[PreferencePair], rated: list[RatedPrompt]) -> None:
    fingerprint = _fingerprint_rated(rated) if rated else fingerprint_pairs(pairs)
    bound = s.scalar(select(DatasetSource).where(DatasetSource.dataset_id == dataset_id,
                                                 DatasetSource.split == split))
    if bound is None:
        if not rated:  # rated data came after bindings: no unbound rated split exists
            _check_unbound_split(s, dataset_id, name, split, location, pairs)
        s.add(DatasetSource(dataset_id=dataset_id, split=split, spec=spec, location=location,
                            fingerprint=fingerprint, n_pairs=len(pairs)))
        return
    if bound.location != location:
        raise StoreError(f"dataset {name!r} already holds {bound.n_pairs:,} {split} pairs from "
                         f"{bound.location}; {location} is another source; {_advice(name)}")
    if bound.fingerprint != fingerprint:
        raise StoreError(f"dataset {name!r}: {location} now gives other {split} pairs than when "
                         f"it was ingested ({len(pairs):,} now, {bound.n_pairs:,} then; the file "
                         f"changed, or an option such as --limit did); {_advice(name)}")


def _check_unbound_split(s: Session, dataset_id: int, name: str, split: str, location: str,
                         pairs: list[PreferencePair]) -> None:
    # Pairs without a binding come from a database created before bindings: adopt the source only
    # if it is exactly what is stored, since anything else would be a silent merge.
    stored = set(s.scalars(select(Example.content_hash).where(Example.dataset_id == dataset_id,
                                                              Example.split == split)))
    if stored and stored != {p.content_hash for p in pairs}:
        raise StoreError(f"dataset {name!r} already holds {len(stored):,} {split} pairs that "
                         f"{location} does not match (ingested before sources were recorded); "
                         f"{_advice(name)}")


def clear_dataset(s: Session, dataset_id: int) -> None:
    """Delete the dataset's examples, flags, detector runs, reviews, trained runs, rated prompts
    (their responses and ties) and bindings (not its row).

    Explicit deletes, children first, rather than relying on ON DELETE CASCADE: SQLite enforces
    foreign keys only when the connection turned them on.
    """
    examples = select(Example.id).where(Example.dataset_id == dataset_id)
    runs = select(DetectorRun.id).where(DetectorRun.dataset_id == dataset_id)
    trained = select(TrainedRun.id).where(TrainedRun.dataset_id == dataset_id)
    for statement in (delete(Review).where(Review.example_id.in_(examples)),
                      delete(Flag).where(Flag.run_id.in_(runs) | Flag.example_id.in_(examples)),
                      delete(DetectorRun).where(DetectorRun.dataset_id == dataset_id),
                      delete(TrainedRunReward).where(TrainedRunReward.run_id.in_(trained)),
                      delete(TrainedRun).where(TrainedRun.dataset_id == dataset_id),
                      delete(Example).where(Example.dataset_id == dataset_id)):
        s.execute(statement.execution_options(synchronize_session=False))
    clear_rated(s, dataset_id)  # after the examples: derived pairs point at the rated prompts
    s.execute(delete(DatasetSource).where(DatasetSource.dataset_id == dataset_id)
              .execution_options(synchronize_session=False))
