"""The store: datasets, examples, detector runs and flags, reviews, experiments in one database.

SQLite by default (`sqlite:///rewardlab.db`), PostgreSQL by URL (`postgresql+psycopg://…`); the same
SQLAlchemy schema (`schema.py`) serves both. Reads return plain dicts (typed by the TypedDicts in
`records.py`) and `PreferencePair`s so callers never hold ORM objects or sessions.

>>> store = Store("sqlite://")          # in-memory
>>> store.dataset_names()
[]
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import ColumnElement, distinct, func, select, true
from sqlalchemy.orm import Session

from rewardlab.data.pairs import PreferencePair, Split
from rewardlab.data.rated import RatedPrompt
from rewardlab.data.source_result import SourceResult
from rewardlab.errors import StoreError
from rewardlab.jsonable import to_jsonable
from rewardlab.store.binding import bind_source, clear_dataset
from rewardlab.store.bulk import bulk_insert
from rewardlab.store.engine import DB_ERRORS, first_line, mask_url, open_engine, writer
from rewardlab.store.experiments import (
    insert_experiment,
    insert_experiment_runs,
    select_experiments,
    unfinished_experiment,
)
from rewardlab.store.ingest_rows import PAIR_COLUMNS, IngestCounts, plan_ingest, split_nul_rows
from rewardlab.store.judge_cache import insert_judge_answers, select_judge_answers
from rewardlab.store.rated import (
    check_rated_text,
    has_rated,
    insert_rated,
    join_pair_texts,
    pair_text_columns,
    rated_counts,
    select_rated,
)
from rewardlab.store.records import (
    REVIEW_STATES,
    VERDICTS,
    DatasetSummary,
    DetectorResult,
    DetectorRunRow,
    ExperimentRow,
    FinishedRun,
    FlagRow,
    JudgeAnswerRow,
    NewReview,
    QueueItem,
    QueuePage,
    ReviewOutcome,
    ReviewRow,
    StoredRun,
    Verdict,
)
from rewardlab.store.review_sql import (
    MAX_QUEUE_PAGE,
    REVIEWER_ENV,
    check_note,
    check_reviewer,
    default_reviewer,
    queue_select,
    reviews_of,
    upsert_review,
)
from rewardlab.store.schema import (
    Dataset,
    DetectorRun,
    Example,
    Experiment,
    ExperimentRun,
    Flag,
    Review,
    iso_utc,
)
from rewardlab.store.trained_runs import (
    insert_trained_run,
    select_trained_runs,
    trained_run_keys,
    training_speed,
)

__all__ = ["DEFAULT_DB_URL", "IngestCounts", "MAX_QUEUE_PAGE", "REVIEWER_ENV", "Store",
           "default_reviewer", "mask_url", "resolve_db_url"]

DEFAULT_DB_URL = "sqlite:///rewardlab.db"
def resolve_db_url(url: str | None) -> str:
    """The URL to use: `url`, else `$REWARDLAB_DB`, else `sqlite:///rewardlab.db`."""
    return url or os.environ.get("REWARDLAB_DB") or DEFAULT_DB_URL


def _flag_rows_for(run_id: int, result: DetectorResult, example_ids: Sequence[int]
                   ) -> list[dict[str, Any]]:
    scores = [s if math.isfinite(s) else None for s in map(float, result.scores.tolist())]
    flagged = [bool(f) for f in result.flagged.tolist()]
    return [{"run_id": run_id, "example_id": int(eid), "score": score, "flagged": flag,
             "reason": reason or ""}
            for eid, score, flag, reason in zip(example_ids, scores, flagged, result.reasons)]


class Store:
    """One database of datasets, flags, reviews and experiments.

    Parameters
    ----------
    url : str or None, default None
        A SQLAlchemy URL: "sqlite:///rewardlab.db" (WAL mode: other processes read while one
        writes) or "postgresql+psycopg://user@host/db"; None reads $REWARDLAB_DB, else
        "sqlite:///rewardlab.db". The schema is created or migrated on open.

    >>> import tempfile
    >>> from rewardlab.data.sources import read_source
    >>> with Store(f"sqlite:///{tempfile.mkdtemp()}/rewardlab.db") as store:
    ...     counts = store.ingest("toy", read_source("synthetic:n=8,seed=0"))
    ...     pairs = store.load_pairs("toy", split="train")
    >>> counts.ingested, len(pairs), pairs[0].example_id is not None
    (10, 8, True)
    """

    def __init__(self, url: str | None = None) -> None:
        self.url = resolve_db_url(url)
        self.engine = open_engine(self.url)
        self._writer = writer(self.engine)

    def close(self) -> None:
        """Release pooled connections (needed before e.g. dropping a PostgreSQL database)."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({mask_url(self.url)!r})"

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def _write_session(self) -> Session:
        # Writes take SQLite's write lock when they begin, so a second writer waits for it.
        return Session(self._writer, expire_on_commit=False)

    # ---- datasets and examples -------------------------------------------------------------

    def dataset_names(self) -> list[str]:
        """Names of all datasets, sorted."""
        with self._session() as s:
            return list(s.scalars(select(Dataset.name).order_by(Dataset.name)))

    def _dataset_id(self, s: Session, name: str) -> int:
        dataset_id = s.scalar(select(Dataset.id).where(Dataset.name == name))
        if dataset_id is None:
            names = list(s.scalars(select(Dataset.name).order_by(Dataset.name)))
            known = (f"datasets: {', '.join(names)}" if names
                     else "the store is empty — run `rewardlab ingest` first")
            raise StoreError(f"no dataset {name!r} in {mask_url(self.url)}; {known}")
        return dataset_id

    def _dataset_for_ingest(self, s: Session, name: str, spec: str, *, replace: bool) -> Dataset:
        dataset = s.scalar(select(Dataset).where(Dataset.name == name))
        if dataset is None:
            dataset = Dataset(name=name, source=spec)
            s.add(dataset)
            s.flush()  # assigns dataset.id
        elif replace:
            clear_dataset(s, dataset.id)
            dataset.source = spec
        elif spec not in dataset.source.split(" + "):
            # e.g. a train file and a test file ingested into one dataset
            dataset.source = f"{dataset.source} + {spec}"
        return dataset

    def ingest(self, name: str, source: SourceResult, *, replace: bool = False) -> IngestCounts:
        """Add the source's pairs to dataset `name` (created if new) in one transaction.

        Each split of a dataset is bound to one source (`store/binding.py`): re-ingesting the
        identical source is idempotent (pairs whose content hash is present are counted, not
        re-added); another source, or the same file with other content, is a StoreError and
        nothing changes. A split not yet bound takes a new source: a train file plus a separate
        test file make one dataset. `replace=True` first drops everything the dataset held
        (examples, flags, detector runs, reviews, bindings), in the same transaction.
        A pair with a NUL character in its text is a rejected row on SQLite and PostgreSQL alike.
        On any error nothing of this ingest remains.

        A rated source (`source.rated`: votes, ratings, rankings) keeps its prompts, responses
        and tie labels (`load_rated`) and stores its decided pairs as examples that point at
        them (`store/rated.py`); a prompt already present adds nothing.
        """
        if not name.strip():
            raise StoreError("dataset name must not be empty")
        if source.rated:
            return self._ingest_rated(name, source, replace=replace)
        pairs, nul_rows = split_nul_rows(source.pairs)
        try:
            with self._write_session() as s, s.begin():
                dataset = self._dataset_for_ingest(s, name, source.spec, replace=replace)
                bind_source(s, dataset.id, name, source.spec, pairs)
                existing = set(s.scalars(
                    select(Example.content_hash).where(Example.dataset_id == dataset.id)))
                rows, by_group = plan_ingest(dataset.id, pairs, existing)
                bulk_insert(s, Example, rows)
        except DB_ERRORS as e:
            raise StoreError(f"ingest into dataset {name!r} failed and was rolled back, "
                             f"nothing saved: {first_line(e)}") from e
        return IngestCounts(
            dataset=name, read=source.read, ingested=len(rows),
            already_present=len(pairs) - len(rows),
            rejected=sorted(source.rejected + nul_rows, key=lambda r: r[0]),
            by_group=dict(sorted(by_group.items())), replaced=replace,
            parse_issues=source.parse_issues())

    def _ingest_rated(self, name: str, source: SourceResult, *, replace: bool) -> IngestCounts:
        check_rated_text(source.spec, source.rated)
        try:
            with self._write_session() as s, s.begin():
                dataset = self._dataset_for_ingest(s, name, source.spec, replace=replace)
                bind_source(s, dataset.id, name, source.spec, source.pairs, source.rated)
                added, by_group = insert_rated(s, dataset.id, source.rated)
        except DB_ERRORS as e:
            raise StoreError(f"ingest into dataset {name!r} failed and was rolled back, "
                             f"nothing saved: {first_line(e)}") from e
        ingested = sum(g["ingested"] for g in by_group.values())
        kinds = {p.kind for p in source.rated}
        return IngestCounts(
            dataset=name, read=source.read, ingested=ingested,
            already_present=len(source.pairs) - ingested, by_group=by_group, replaced=replace,
            rated_kind=kinds.pop() if len(kinds) == 1 else "mixed",
            rated_prompts=len(source.rated), rated_responses=source.n_responses,
            ties=source.n_ties, pairs=len(source.pairs), rated_ingested=added)

    def load_pairs(self, name: str, *, split: Split | None = None) -> list[PreferencePair]:
        """The dataset's pairs ordered by (split, source_index, id), with `example_id` set.

        For rated data these are the decided pairs derived from its prompts (ties left out),
        meta {"rated_id", "a", "b"}: the rated prompt and the chosen and rejected positions."""
        with self._session() as s:
            dataset_id = self._dataset_id(s, name)
            # the texts of derived pairs are joined in only where there are any
            texts = pair_text_columns() if has_rated(s, dataset_id) else {}
            columns = [texts.get(col, getattr(Example, col)) for col in PAIR_COLUMNS]
            stmt = (select(Example.id, *columns)
                    .where(Example.dataset_id == dataset_id)
                    .order_by(Example.split, Example.source_index, Example.id))
            if texts:
                stmt = join_pair_texts(stmt)
            if split is not None:
                stmt = stmt.where(Example.split == split)
            rows = s.execute(stmt).all()
        pairs = []
        for example_id, *values in rows:
            fields = dict(zip(PAIR_COLUMNS, values))
            fields["meta"] = fields["meta"] or {}
            pairs.append(PreferencePair(example_id=example_id, **fields))
        return pairs

    def load_rated(self, name: str, *, split: Split | None = None) -> list[RatedPrompt]:
        """The dataset's rated prompts (issue 32) with their responses, scores, ranks and ties,
        ordered by (split, source_index); meta as read plus {"rated_id": id}. [] for a dataset
        of pairs only."""
        with self._session() as s:
            return select_rated(s, self._dataset_id(s, name), split)

    def dataset_summaries(self) -> list[DatasetSummary]:
        """Per dataset: name, source, created_at, pairs per split, flagged (train examples flagged
        by the latest run of any detector, counted once), detectors (names with a run) and its
        rated data: rated_prompts, rated_responses, ties (0 for pairs only)."""
        with self._session() as s:
            datasets = s.execute(select(Dataset.id, Dataset.name, Dataset.source,
                                        Dataset.created_at).order_by(Dataset.name)).all()
            counts = s.execute(select(Example.dataset_id, Example.split, func.count())
                               .group_by(Example.dataset_id, Example.split)).all()
            latest = (select(func.max(DetectorRun.id))
                      .group_by(DetectorRun.dataset_id, DetectorRun.detector))
            detectors = s.execute(select(DetectorRun.dataset_id, DetectorRun.detector)
                                  .where(DetectorRun.id.in_(latest))).all()
            flagged = {dataset_id: n for dataset_id, n in s.execute(
                select(Example.dataset_id, func.count(distinct(Flag.example_id)))
                .join(Example, Flag.example_id == Example.id)
                .where(Flag.run_id.in_(latest), Flag.flagged == true(), Example.split == "train")
                .group_by(Example.dataset_id))}
            rated = rated_counts(s)
        pairs: dict[int, dict[str, int]] = {d.id: {"train": 0, "test": 0} for d in datasets}
        for dataset_id, split, n in counts:
            pairs[dataset_id][split] = n
        names: dict[int, list[str]] = {d.id: [] for d in datasets}
        for dataset_id, detector in detectors:
            names[dataset_id].append(detector)
        none = {"rated_prompts": 0, "rated_responses": 0, "ties": 0}
        return [{"name": d.name, "source": d.source, "created_at": iso_utc(d.created_at),
                 "pairs": pairs[d.id], "flagged": flagged.get(d.id, 0),
                 "detectors": sorted(names[d.id]),
                 "rated_prompts": rated.get(d.id, none)["rated_prompts"],
                 "rated_responses": rated.get(d.id, none)["rated_responses"],
                 "ties": rated.get(d.id, none)["ties"]} for d in datasets]

    # ---- detector runs and flags -----------------------------------------------------------

    def save_detector_run(self, name: str, result: DetectorResult,
                          example_ids: Sequence[int]) -> int:
        """Save one detector run on dataset `name`: a run row and one flag row per example
        (`example_ids[i]` is the pair that `result.scores[i]` etc. describe). Returns the run id."""
        n = len(example_ids)
        if not len(result.scores) == len(result.flagged) == len(result.reasons) == n:
            raise StoreError(
                f"detector {result.detector!r} returned {len(result.scores)} scores, "
                f"{len(result.flagged)} flags and {len(result.reasons)} reasons for {n} examples")
        with self._write_session() as s, s.begin():
            dataset_id = self._dataset_id(s, name)
            self._check_example_ids(s, name, dataset_id, example_ids)
            run = DetectorRun(
                dataset_id=dataset_id, detector=result.detector, params=to_jsonable(result.params),
                threshold=None if result.threshold is None else float(result.threshold),
                threshold_kind=result.threshold_kind, n_total=n,
                n_flagged=int(result.flagged.sum()), seconds=float(result.seconds))
            s.add(run)
            s.flush()  # assigns run.id
            bulk_insert(s, Flag, _flag_rows_for(run.id, result, example_ids))
            return run.id

    def _check_example_ids(self, s: Session, name: str, dataset_id: int,
                           example_ids: Sequence[int]) -> None:
        # Foreign keys only prove an example exists; flags must also belong to this dataset.
        known = set(s.scalars(select(Example.id).where(Example.dataset_id == dataset_id)))
        missing = [i for i in example_ids if i not in known]
        if missing:
            raise StoreError(f"{len(missing)} example ids are not in dataset {name!r} "
                             f"(e.g. {missing[:3]}); load the pairs with Store.load_pairs")

    def _latest_run_ids(self, s: Session, name: str,
                        detectors: Sequence[str] | None = None) -> dict[str, int]:
        """detector -> id of its latest run on the dataset; StoreError for a detector never run."""
        runs = {detector: run_id for detector, run_id in s.execute(
            select(DetectorRun.detector, func.max(DetectorRun.id))
            .where(DetectorRun.dataset_id == self._dataset_id(s, name))
            .group_by(DetectorRun.detector))}
        if detectors is None:
            return runs
        unknown = [d for d in detectors if d not in runs]
        if unknown:
            have = ", ".join(sorted(runs)) or "none — run `rewardlab flag` first"
            raise StoreError(f"no run of detector {', '.join(unknown)} on dataset {name!r}; "
                             f"detectors run: {have}")
        return {d: runs[d] for d in detectors}

    def latest_runs(self, name: str) -> dict[str, DetectorRunRow]:
        """detector -> its latest run: run_id, params, threshold, threshold_kind, flagged, total,
        seconds, created_at (ISO, UTC)."""
        with self._session() as s:
            ids = self._latest_run_ids(s, name)
            runs = s.scalars(select(DetectorRun).where(DetectorRun.id.in_(ids.values()))
                             .order_by(DetectorRun.detector)).all()
        return {r.detector: {"run_id": r.id, "params": r.params, "threshold": r.threshold,
                             "threshold_kind": r.threshold_kind, "flagged": r.n_flagged,
                             "total": r.n_total, "seconds": r.seconds,
                             "created_at": iso_utc(r.created_at)} for r in runs}

    def flagged_example_ids(self, name: str, detectors: Sequence[str] | None = None
                            ) -> dict[str, set[int]]:
        """detector -> example ids flagged by its latest run (all detectors run when None)."""
        with self._session() as s:
            run_ids = self._latest_run_ids(s, name, detectors)
            by_run = {run_id: det for det, run_id in run_ids.items()}
            rows = s.execute(select(Flag.run_id, Flag.example_id)
                             .where(Flag.run_id.in_(by_run), Flag.flagged == true())).all()
        flagged: dict[str, set[int]] = {det: set() for det in run_ids}
        for run_id, example_id in rows:
            flagged[by_run[run_id]].add(example_id)
        return flagged

    def detector_scores(self, name: str, detector: str) -> dict[int, float]:
        """example id -> score of `detector`'s latest run on the dataset, every pair it scored,
        flagged or not (NaN where it gave none); StoreError for a detector never run."""
        with self._session() as s:
            run_id = self._latest_run_ids(s, name, [detector])[detector]
            rows = s.execute(select(Flag.example_id, Flag.score)
                             .where(Flag.run_id == run_id)).all()
        return {int(eid): math.nan if score is None else float(score) for eid, score in rows}

    def flag_rows(self, name: str, *, detector: str | None = None,
                  limit: int | None = None) -> list[FlagRow]:
        """Flagged pairs of the latest runs, most suspect first per detector: example_id,
        source_index, split, subset, prompt, chosen, rejected, detector, score, reason."""
        with self._session() as s:
            run_ids = self._latest_run_ids(s, name, None if detector is None else [detector])
            texts = pair_text_columns()
            stmt = (select(Example.id.label("example_id"), Example.source_index, Example.split,
                           Example.subset, texts["prompt"], texts["chosen"], texts["rejected"],
                           DetectorRun.detector, Flag.score, Flag.reason)
                    .select_from(Flag)
                    .join(Example, Flag.example_id == Example.id)
                    .join(DetectorRun, Flag.run_id == DetectorRun.id)
                    .where(Flag.run_id.in_(run_ids.values()), Flag.flagged == true())
                    .order_by(DetectorRun.detector, Flag.score.desc().nulls_last(),
                              Example.split, Example.source_index, Example.id)
                    .limit(limit))
            stmt = join_pair_texts(stmt)
            # the selected columns are FlagRow's keys
            rows = [cast(FlagRow, dict(row)) for row in s.execute(stmt).mappings()]
        for row in rows:  # a NaN score was stored as NULL; hand it back as the float it was
            row["score"] = math.nan if row["score"] is None else row["score"]
        return rows

    # ---- reviews ---------------------------------------------------------------------------

    def add_review(self, name: str, *, source_index: int, detector: str, is_issue: bool,
                   note: str = "", split: Split = "train", subset: str | None = None,
                   reviewer: str | None = None) -> int:
        """Record whether a (flagged) pair really is an issue (verdict tp or fp); returns the
        review id. One review per pair × detector × reviewer (default `default_reviewer()`):
        reviewing the pair again edits it.

        The pair is found by (split, source_index), plus `subset` when given: hub sources restart
        source_index per subset. Among several matches the ones `detector` flagged win; if they
        still span subsets it is a StoreError asking for `subset`, else the newest is reviewed
        (a re-ingested, edited source)."""
        who = check_reviewer(reviewer if reviewer is not None else default_reviewer())
        with self._write_session() as s, s.begin():
            example_id = self._review_target(s, name, split, source_index, subset, detector)
            return upsert_review(s, example_id, detector, who, "tp" if is_issue else "fp",
                                 check_note(note))

    def save_review(self, name: str, *, example_id: int, detector: str, verdict: Verdict,
                    reviewer: str, note: str = "") -> ReviewRow:
        """Create or edit `reviewer`'s review of the flag (example, detector); returns the row.

        StoreError for a verdict outside VERDICTS, an empty reviewer name or an example that is
        not in dataset `name`."""
        review: NewReview = {"example_id": example_id, "detector": detector, "verdict": verdict,
                             "reviewer": reviewer, "note": note}
        with self._write_session() as s, s.begin():
            dataset_id, (review_id,) = self._save_reviews(s, name, [review])
            return self._review_rows(s, dataset_id, Review.id == review_id)[0]

    def save_reviews(self, name: str, reviews: Sequence[NewReview]) -> list[int]:
        """`save_review` for many reviews in one transaction (all saved, or none); their ids."""
        with self._write_session() as s, s.begin():
            return self._save_reviews(s, name, reviews)[1]

    def _save_reviews(self, s: Session, name: str, reviews: Sequence[NewReview]
                      ) -> tuple[int, list[int]]:
        dataset_id = self._dataset_id(s, name)
        wanted = {r["example_id"] for r in reviews}
        known = set(s.scalars(select(Example.id).where(Example.dataset_id == dataset_id,
                                                       Example.id.in_(wanted))))
        ids = []
        for r in reviews:
            if r["verdict"] not in VERDICTS:
                raise StoreError(f"verdict {r['verdict']!r} is not one of {', '.join(VERDICTS)}")
            if r["example_id"] not in known:
                raise StoreError(f"example {r['example_id']} is not in dataset {name!r}")
            ids.append(upsert_review(s, r["example_id"], r["detector"],
                                      check_reviewer(r["reviewer"]), r["verdict"],
                                      check_note(r["note"])))
        return dataset_id, ids

    def _review_target(self, s: Session, name: str, split: str, source_index: int,
                       subset: str | None, detector: str) -> int:
        stmt = (select(Example.id, Example.subset)
                .where(Example.dataset_id == self._dataset_id(s, name), Example.split == split,
                       Example.source_index == source_index)
                .order_by(Example.id.desc()))
        if subset is not None:
            stmt = stmt.where(Example.subset == subset)
        candidates = s.execute(stmt).all()
        where = f"{split} pair with source_index {source_index}" + (
            f" in subset {subset!r}" if subset is not None else "")
        if not candidates:
            raise StoreError(f"no {where} in dataset {name!r}")
        if len(candidates) > 1:
            run_id = self._latest_run_ids(s, name).get(detector)
            flagged = set(s.scalars(select(Flag.example_id).where(
                Flag.run_id == run_id, Flag.flagged == true(),
                Flag.example_id.in_([c[0] for c in candidates]))))
            candidates = [c for c in candidates if c[0] in flagged] or candidates
        subsets = sorted({c[1] or "-" for c in candidates})
        if len(subsets) > 1:
            raise StoreError(f"{where} is ambiguous in dataset {name!r}: it exists in subsets "
                             f"{', '.join(subsets)}; name the subset")
        return candidates[0][0]

    def reviews(self, name: str) -> list[ReviewRow]:
        """Reviews of the dataset's pairs, oldest first (an edit keeps a review's place)."""
        with self._session() as s:
            return self._review_rows(s, self._dataset_id(s, name), true())

    def _review_rows(self, s: Session, dataset_id: int, where: ColumnElement[bool]
                     ) -> list[ReviewRow]:
        rows = s.execute(
            select(Review.id, Review.example_id, Example.source_index, Example.split,
                   Example.subset, Review.detector, Review.reviewer, Review.verdict, Review.note,
                   Review.created_at, Review.updated_at)
            .join(Example, Review.example_id == Example.id)
            .where(Example.dataset_id == dataset_id, where)
            .order_by(Review.id)).mappings().all()
        # the selected columns plus is_issue are ReviewRow's keys
        return [cast(ReviewRow, {**row, "is_issue": row["verdict"] == "tp",
                                 "created_at": iso_utc(row["created_at"]),
                                 "updated_at": iso_utc(row["updated_at"])}) for row in rows]

    def review_queue(self, name: str, *, detector: str | None = None, state: str = "all",
                     reviewer: str | None = None, ascending: bool = False, offset: int = 0,
                     limit: int = 20) -> QueuePage:
        """One page of the flags of the latest runs (of `detector`, or of every detector, one
        detector after another) with their pairs and reviews, most suspect first (`ascending`:
        least suspect first).

        `state` (REVIEW_STATES) filters: unreviewed / reviewed count only `reviewer`'s reviews
        when one is named; needs_review and disagreements (two reviewers, two verdicts) look at
        every reviewer. `total` counts every matching flag, not just the page.
        """
        if state not in REVIEW_STATES:
            raise StoreError(f"state {state!r} is not one of {', '.join(REVIEW_STATES)}")
        if offset < 0 or not 1 <= limit <= MAX_QUEUE_PAGE:
            raise StoreError(f"offset must be >= 0 and limit 1..{MAX_QUEUE_PAGE} "
                             f"(got offset {offset}, limit {limit})")
        with self._session() as s:
            run_ids = self._latest_run_ids(s, name, None if detector is None else [detector])
            stmt = queue_select(list(run_ids.values()), state, reviewer)
            total = s.scalar(select(func.count()).select_from(stmt.subquery())) or 0
            score = (Flag.score.asc() if ascending else Flag.score.desc()).nulls_last()
            # detectors score on their own scales: across detectors, one detector after another
            order = [score] if detector is not None else [DetectorRun.detector, score]
            rows = s.execute(stmt.order_by(*order, Example.split, Example.source_index,
                                           Example.id)
                             .offset(offset).limit(limit)).mappings().all()
            reviews = reviews_of(s, [row["example_id"] for row in rows])
        items = [cast(QueueItem, {**row, "reviews": reviews.get(
            (row["example_id"], row["detector"]), [])}) for row in rows]
        return {"total": total, "offset": offset, "limit": limit, "items": items}

    def review_outcomes(self, name: str) -> list[ReviewOutcome]:
        """Every reviewed flag of the detectors' latest runs: detector, example, score and each
        reviewer's verdict (reviews of pairs a latest run no longer flags are left out)."""
        with self._session() as s:
            run_ids = list(self._latest_run_ids(s, name).values())
            rows = s.execute(
                select(DetectorRun.detector, Flag.example_id, Flag.score, Review.reviewer,
                       Review.verdict)
                .join(DetectorRun, Flag.run_id == DetectorRun.id)
                .join(Review, (Review.example_id == Flag.example_id)
                      & (Review.detector == DetectorRun.detector))
                .where(Flag.run_id.in_(run_ids), Flag.flagged == true())
                .order_by(DetectorRun.detector, Flag.example_id, Review.reviewer)).all()
        outcomes: dict[tuple[str, int], ReviewOutcome] = {}
        for detector, example_id, score, reviewer, verdict in rows:
            outcome = outcomes.setdefault((detector, example_id), {
                "detector": detector, "example_id": example_id, "score": score, "verdicts": {}})
            outcome["verdicts"][reviewer] = verdict
        return list(outcomes.values())

    # ---- experiments -----------------------------------------------------------------------

    def record_experiment(self, *, name: str, dataset: str, config: Mapping[str, Any],
                          metrics: Mapping[str, Any], out_dir: str) -> int:
        """Save an experiment's config and summary metrics; returns its id."""
        with self._write_session() as s, s.begin():
            return insert_experiment(s, name=name, dataset=dataset, config=config,
                                     metrics=metrics, out_dir=out_dir)

    def start_experiment(self, *, name: str, dataset: str, config: Mapping[str, Any],
                         out_dir: str, run_keys: Sequence[str]) -> int:
        """Record an experiment before its first run trains, with its plan's run ids (in plan
        order), so `experiments()` shows `runs_done` of `runs_planned` while it runs; returns its
        id. An unfinished experiment into the same `out_dir` with the same plan (a killed compare
        started again) is continued, not recorded twice. `finish_experiment` completes it."""
        with self._write_session() as s, s.begin():
            found = unfinished_experiment(s, dataset=dataset, out_dir=out_dir, run_keys=run_keys)
            if found is not None:
                return found
            return insert_experiment(s, name=name, dataset=dataset, config=config, metrics={},
                                     out_dir=out_dir, run_keys=run_keys)

    def finish_experiment(self, experiment_id: int, *, metrics: Mapping[str, Any],
                          runs: Sequence[FinishedRun]) -> None:
        """Complete a started experiment in one transaction: its summary metrics and one row per
        (condition, seed) run."""
        with self._write_session() as s, s.begin():
            experiment = s.get(Experiment, experiment_id)
            if experiment is None:
                raise StoreError(f"no experiment with id {experiment_id} in {mask_url(self.url)}")
            experiment.metrics = to_jsonable(metrics)
            insert_experiment_runs(s, experiment_id, runs)

    def add_experiment_run(self, experiment_id: int, *, condition: str, seed: int,
                           metrics: Mapping[str, Any], checkpoint: str | None) -> int:
        """Save one (condition, seed) training run of an experiment; returns its id."""
        with self._write_session() as s, s.begin():
            if s.get(Experiment, experiment_id) is None:
                raise StoreError(f"no experiment with id {experiment_id} in {mask_url(self.url)}")
            run = ExperimentRun(experiment_id=experiment_id, condition=condition, seed=int(seed),
                                metrics=to_jsonable(metrics),
                                checkpoint=None if checkpoint is None else str(checkpoint))
            s.add(run)
            s.flush()
            return run.id

    def experiments(self) -> list[ExperimentRow]:
        """All experiments, oldest first, each with its runs (condition, seed, metrics,
        checkpoint) and its plan's progress: `runs_planned`, and `runs_done` (of those, stored
        as trained; it grows while the experiment runs, seen from any process)."""
        with self._session() as s:
            return select_experiments(s)

    # ---- trained runs of experiment plans ----------------------------------------------------

    def save_trained_run(self, name: str, run_key: str, *, stage: str, group: str, seed: int,
                         model: str, pair_steps: int, record: Mapping[str, Any],
                         test_ids: Sequence[int], chosen: Sequence[float | None],
                         rejected: Sequence[float | None]) -> bool:
        """Keep one finished run of an experiment plan on dataset `name`, in one transaction:
        its record (without rewards) and its rewards per test pair (`test_ids[i]` is the pair of
        `chosen[i]`, `rejected[i]`). False when a run with this key was already stored (it stays)."""
        if not len(test_ids) == len(chosen) == len(rejected):
            raise StoreError(f"run {run_key[:12]}: {len(test_ids)} test pairs, {len(chosen)} "
                             f"chosen and {len(rejected)} rejected rewards")
        try:
            with self._write_session() as s, s.begin():
                return insert_trained_run(
                    s, self._dataset_id(s, name), run_key, stage=stage, group=group, seed=seed,
                    model=model, pair_steps=pair_steps, record=record, test_ids=test_ids,
                    chosen=chosen, rejected=rejected)
        except DB_ERRORS as e:
            raise StoreError(f"saving run {run_key[:12]} failed and was rolled back: "
                             f"{first_line(e)}") from e

    def trained_runs(self, name: str, run_keys: Sequence[str]) -> dict[str, StoredRun]:
        """run key -> the stored run (record, test pair ids, rewards), for the keys stored."""
        with self._session() as s:
            return select_trained_runs(s, self._dataset_id(s, name), run_keys)

    def trained_run_keys(self, name: str) -> list[str]:
        """The keys of every run stored for dataset `name`, oldest first."""
        with self._session() as s:
            return trained_run_keys(s, self._dataset_id(s, name))

    def training_speed(self, model: str) -> float | None:
        """Pairs per second over every stored run of backbone `model` (None: none stored)."""
        with self._session() as s:
            steps, seconds = training_speed(s, model)
        return steps / seconds if steps and seconds > 0 else None

    # ---- the llm_judge answer cache (store/judge_cache.py) ----------------------------------

    def judge_answers(self, model: str, template_hash: str,
                      pair_hashes: Sequence[str]) -> dict[str, JudgeAnswerRow]:
        """pair hash → the answer `model` gave under `template_hash`, for the hashes cached."""
        with self._session() as s:
            return select_judge_answers(s, model, template_hash, pair_hashes)

    def save_judge_answers(self, model: str, template_hash: str,
                           answers: Mapping[str, JudgeAnswerRow]) -> int:
        """Cache `answers` (pair hash → answer) in one transaction; a hash already cached keeps
        its first answer. Returns how many rows were added."""
        try:
            with self._write_session() as s, s.begin():
                return insert_judge_answers(s, model, template_hash, answers)
        except DB_ERRORS as e:
            raise StoreError(f"caching llm_judge answers failed and was rolled back: "
                             f"{first_line(e)}") from e
