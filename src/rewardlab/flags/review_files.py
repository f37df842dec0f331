"""Review files for annotation teams: Label Studio tasks JSON and plain JSONL, out and back in.

One task per flag (example × detector): the pair (context, prompt, chosen and rejected side by side),
the detector's score and reason, and the reviews so far. Export a review queue (e.g. the unreviewed
flags) or the reviews; import the verdicts a team gave, in either format.

- **Label Studio** (`labelstudio`, a `.json` list of tasks): `{"data": {...}, "annotations": [...]}`
  for the labeling config `LABEL_STUDIO_CONFIG` (the two replies side by side, a single choice
  `verdict` with aliases tp / fp / needs_review and hotkeys 1/2/3, a `note` text area). Import reads
  Label Studio's JSON export: each annotation's `verdict` choice and `note`; the reviewer is
  `rewardlab_reviewer` (set by our export), else the annotator (`completed_by`).
- **JSONL** (`jsonl`): one task per line, the same fields as the Label Studio `data` plus
  `"reviews": [{"reviewer", "verdict", "note", "updated_at"}]`; a line may also be one flat review
  (`detector`, `verdict`, `reviewer`, `note` and the pair's `content_hash` or split/subset/index).

A pair is found by its `content_hash`, else by (split, subset, source_index). An import is checked
whole before anything is saved: one bad line is a SourceError naming FILE:LINE and nothing changes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, cast

from rewardlab.errors import SelectionError, SourceError
from rewardlab.flags.json_records import json_list_records, jsonl_records
from rewardlab.store.records import VERDICTS, NewReview, QueueReview
from rewardlab.store.review_sql import (
    MAX_NOTE_CHARS,
    MAX_QUEUE_PAGE,
    MAX_REVIEWER_CHARS,
    check_reviewer,
)
from rewardlab.store.store import Store, default_reviewer

__all__ = ["REVIEW_FORMATS", "LABEL_STUDIO_CONFIG", "ReviewTask", "ImportCounts", "review_tasks",
           "format_for", "write_review_file", "export_review_file", "read_review_file",
           "import_reviews", "check_flagged_pair"]

REVIEW_FORMATS: tuple[str, ...] = ("labelstudio", "jsonl")

LABEL_STUDIO_CONFIG = """<View>
  <Header value="$detector (score $score): $reason"/>
  <Text name="context" value="$context"/>
  <Header value="Prompt" size="5"/>
  <Text name="prompt" value="$prompt"/>
  <View style="display: grid; grid-template-columns: 1fr 1fr; column-gap: 1em">
    <View><Header value="Chosen" size="5"/><Text name="chosen" value="$chosen"/></View>
    <View><Header value="Rejected" size="5"/><Text name="rejected" value="$rejected"/></View>
  </View>
  <Choices name="verdict" toName="prompt" choice="single" showInline="true" required="true">
    <Choice value="True positive: the flag is right" alias="tp" hotkey="1"/>
    <Choice value="False positive: the pair is fine" alias="fp" hotkey="2"/>
    <Choice value="Needs review" alias="needs_review" hotkey="3"/>
  </Choices>
  <TextArea name="note" toName="prompt" placeholder="note (optional)" maxSubmissions="1"/>
</View>
"""
# Verdict spellings accepted on import: ours, and the choice labels of LABEL_STUDIO_CONFIG.
_VERDICT_WORDS = {**{v: v for v in VERDICTS}, "true positive": "tp", "false positive": "fp",
                  "needs review": "needs_review", "true positive: the flag is right": "tp",
                  "false positive: the pair is fine": "fp"}
_PAIR_KEYS = ("split", "subset", "source_index", "content_hash")
# Queue fields the review pages show and the files leave out (the raw texts double a task's size).
_CARD_ONLY = ("parse_issue", "raw_chosen", "raw_rejected")


class ReviewTask(TypedDict):
    """One flag to review: a JSONL line, or a Label Studio task's `data` (+ `reviews`)."""

    dataset: str
    detector: str
    example_id: int
    split: str
    subset: str
    source_index: int
    content_hash: str
    context: str
    prompt: str
    chosen: str
    rejected: str
    score: float | None
    reason: str
    reviews: list[QueueReview]


@dataclass
class ImportCounts:
    """What `import_reviews` read and saved; `skipped` says why each unsaved entry was left.

    `saved` counts distinct reviews (pair × detector × reviewer): `new` ones and `edited` ones
    (the reviewer had already reviewed that flag; the file's verdict replaced it). Two rows of the
    file for one flag and reviewer save once, the later row winning: `superseded` lists them as
    (the earlier row, the row that replaced it)."""

    file: str
    tasks: int = 0
    saved: int = 0
    new: int = 0
    edited: int = 0
    superseded: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (FILE:LINE, reason)


def review_tasks(store: Store, name: str, *, detector: str | None = None,
                 state: str = "all") -> list[ReviewTask]:
    """The flags `Store.review_queue` lists (every page), with each pair's content hash."""
    hashes = {p.example_id: p.content_hash for p in store.load_pairs(name)}
    tasks: list[ReviewTask] = []
    offset = 0
    while True:
        page = store.review_queue(name, detector=detector, state=state, offset=offset,
                                  limit=MAX_QUEUE_PAGE)
        for item in page["items"]:
            pair = {k: v for k, v in item.items() if k not in _CARD_ONLY}
            tasks.append(cast(ReviewTask, {"dataset": name, **pair,
                                           "content_hash": hashes[item["example_id"]]}))
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            return tasks


def format_for(path: str | Path, fmt: str | None) -> str:
    """`fmt`, else from the file name: .jsonl → jsonl, .json → labelstudio."""
    if fmt is None:
        fmt = "jsonl" if str(path).endswith(".jsonl") else "labelstudio" \
            if str(path).endswith(".json") else None
        if fmt is None:
            raise SourceError(f"{path}: cannot tell the format from the name; give --format "
                              f"{' or '.join(REVIEW_FORMATS)}")
    if fmt not in REVIEW_FORMATS:
        raise SourceError(f"unknown review file format {fmt!r}; formats: {', '.join(REVIEW_FORMATS)}")
    return fmt


def _label_studio_task(task: ReviewTask) -> dict[str, Any]:
    data = {k: v for k, v in task.items() if k != "reviews"}
    annotations = [{
        "result": [{"from_name": "verdict", "to_name": "prompt", "type": "choices",
                    "value": {"choices": [r["verdict"]]}}]
        + ([{"from_name": "note", "to_name": "prompt", "type": "textarea",
             "value": {"text": [r["note"]]}}] if r["note"] else []),
        "rewardlab_reviewer": r["reviewer"], "updated_at": r["updated_at"]}
        for r in task["reviews"]]
    return {"data": data, "annotations": annotations}


def write_review_file(tasks: Sequence[ReviewTask], path: str | Path, *, fmt: str) -> int:
    """Write `tasks` as a Label Studio tasks list or as JSONL; returns how many."""
    with open(path, "w", encoding="utf-8") as f:
        if fmt == "jsonl":
            for task in tasks:
                f.write(json.dumps(task, ensure_ascii=False) + "\n")
        else:
            json.dump([_label_studio_task(t) for t in tasks], f, ensure_ascii=False, indent=1)
            f.write("\n")
    return len(tasks)


def export_review_file(store: Store, name: str, path: str | Path, *, fmt: str | None = None,
                       detector: str | None = None, state: str = "all") -> int:
    """`review_tasks` written to `path` (format from the name unless `fmt`); returns the count."""
    fmt = format_for(path, fmt)
    return write_review_file(review_tasks(store, name, detector=detector, state=state), path,
                             fmt=fmt)


# ---- import: reading -----------------------------------------------------------------------------
#
# Everything in a review file is untrusted: `json_records` reads it (UTF-8, JSON, nesting) and
# each value is checked for its type and size here, where it is read; every failure is one
# SourceError naming FILE:LINE (a Label Studio task's line is where the task starts), before
# anything is saved.

@dataclass
class _Entry:
    """One review read from a file, before it is matched to a stored pair."""

    where: str  # FILE:LINE (a Label Studio task: FILE:LINE (task N))
    pair: dict[str, Any]  # some of _PAIR_KEYS, each of its type
    detector: str
    verdict: str
    reviewer: str | None
    note: str


def _show(value: Any) -> str:
    """A value for an error line: its repr, cut (a file may hold megabytes in one field)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _label_studio_records(path: Path) -> Iterator[tuple[str, Any]]:
    for number, (where, task) in enumerate(json_list_records(path, what="Label Studio tasks"),
                                           start=1):
        yield f"{where} (task {number})", task


def _verdict(where: str, value: Any) -> str:
    verdict = _VERDICT_WORDS.get(str(value).strip().lower()) if isinstance(value, str) else None
    if verdict is None:
        raise SourceError(f"{where}: verdict {_show(value)} is not one of {', '.join(VERDICTS)}")
    return verdict


def _detector(where: str, record: Mapping[str, Any]) -> str:
    value = record.get("detector")
    if not isinstance(value, str) or not value.strip():
        raise SourceError(f"{where}: field 'detector' must be a non-empty string "
                          f"(got {_show(value)})")
    return value


def _reviewer(where: str, value: Any) -> str | None:
    """The reviewer's name as the store keeps it (stripped), None for none given."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise SourceError(f"{where}: field 'reviewer' must be a string (got {_show(value)})")
    who = value.strip()
    if len(who) > MAX_REVIEWER_CHARS or "\x00" in who:
        raise SourceError(f"{where}: field 'reviewer' must be at most {MAX_REVIEWER_CHARS} "
                          f"characters without a NUL (\\x00) (got {_show(who)})")
    return who or None


def _note(where: str, value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SourceError(f"{where}: field 'note' must be a string (got {_show(value)})")
    if len(value) > MAX_NOTE_CHARS:
        raise SourceError(f"{where}: note of {len(value):,} characters; at most "
                          f"{MAX_NOTE_CHARS:,} (the cap of the review pages too)")
    if "\x00" in value:
        raise SourceError(f"{where}: note must not contain a NUL character (\\x00)")
    return value


def _pair(where: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """The pair keys the record gives, each of its type (a JSON `true` is not a source index)."""
    pair = {k: record[k] for k in _PAIR_KEYS if record.get(k) is not None}
    index = pair.get("source_index")
    if index is not None and (type(index) is not int or index < 0):
        raise SourceError(f"{where}: field 'source_index' must be a whole number >= 0 "
                          f"(got {_show(index)})")
    for key in ("split", "subset", "content_hash"):
        if key in pair and not isinstance(pair[key], str):
            raise SourceError(f"{where}: field {key!r} must be a string (got {_show(pair[key])})")
    return pair


def _record_entries(where: str, record: Any) -> Iterator[_Entry | tuple[str, str]]:
    if not isinstance(record, dict):
        raise SourceError(f"{where}: expected a JSON object, got {type(record).__name__}")
    pair, detector = _pair(where, record), _detector(where, record)
    reviews = record.get("reviews", [record] if "verdict" in record else None)
    if not isinstance(reviews, list):
        raise SourceError(f"{where}: expected 'reviews' (a list) or 'verdict'")
    if not reviews:
        yield where, "no review"
    for review in reviews:
        if not isinstance(review, dict):
            raise SourceError(f"{where}: each review must be a JSON object")
        yield _Entry(where, pair, detector, _verdict(where, review.get("verdict")),
                     _reviewer(where, review.get("reviewer")), _note(where, review.get("note")))


def _annotator(where: str, annotation: Mapping[str, Any]) -> str | None:
    if isinstance(annotation.get("rewardlab_reviewer"), str):
        return _reviewer(where, annotation["rewardlab_reviewer"])
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
        return _reviewer(where, str(who)) if isinstance(who, (int, str)) and str(who) else None
    return _reviewer(where, f"labelstudio-user-{who}") \
        if isinstance(who, (int, str)) and str(who) else None


def _choice(where: str, choices: Any) -> str | None:
    """The verdict of a `choices` value: a list of one choice (none: None)."""
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        raise SourceError(f"{where}: the verdict's 'choices' must be a list of strings "
                          f"(got {_show(choices)})")
    verdicts = {_verdict(where, c) for c in choices}
    if len(verdicts) > 1:
        raise SourceError(f"{where}: more than one verdict chosen ({', '.join(sorted(verdicts))})")
    return verdicts.pop() if verdicts else None


def _note_text(where: str, text: Any) -> str:
    """A Label Studio textarea's `text`: a list of lines (joined), or one string as it is."""
    if isinstance(text, list) and all(isinstance(t, str) for t in text):
        text = "\n".join(text)
    return _note(where, text)


def _annotation_fields(where: str, annotation: Mapping[str, Any]) -> tuple[str | None, str]:
    """(verdict or None, note) from one annotation's result list."""
    verdict, note = None, ""
    results = annotation.get("result") or []
    if not isinstance(results, list):
        raise SourceError(f"{where}: an annotation's 'result' must be a list")
    for region in results:
        if not isinstance(region, dict) or not isinstance(region.get("value"), dict):
            raise SourceError(f"{where}: each annotation result must be an object with a 'value'")
        value = region["value"]
        if region.get("from_name") == "verdict" and "choices" in value:
            verdict = _choice(where, value["choices"])
        elif region.get("from_name") == "note" and "text" in value:
            note = _note_text(where, value["text"])
    return verdict, note


def _task_entries(where: str, task: Any) -> Iterator[_Entry | tuple[str, str]]:
    data = task.get("data") if isinstance(task, dict) else None
    if not isinstance(data, dict):
        raise SourceError(f"{where}: expected an object with a 'data' object")
    pair, detector = _pair(where, data), _detector(where, data)
    annotations = task.get("annotations") or []
    if not isinstance(annotations, list):
        raise SourceError(f"{where}: 'annotations' must be a list")
    if not annotations:
        yield where, "no annotation"
    for annotation in annotations:
        if not isinstance(annotation, dict):
            raise SourceError(f"{where}: each annotation must be a JSON object")
        if annotation.get("was_cancelled"):
            yield where, "annotation was cancelled"
            continue
        verdict, note = _annotation_fields(where, annotation)
        if verdict is None:
            yield where, "annotation has no verdict choice"
            continue
        yield _Entry(where, pair, detector, verdict, _annotator(where, annotation), note)


def read_review_file(path: str | Path, *, fmt: str | None = None
                     ) -> tuple[list[_Entry], list[tuple[str, str]]]:
    """(reviews read, (where, reason) of tasks without a usable review) from a review file."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    jsonl = format_for(path, fmt) == "jsonl"
    records = jsonl_records(path) if jsonl else _label_studio_records(path)
    entries: list[_Entry] = []
    skipped: list[tuple[str, str]] = []
    for where, record in records:
        for item in (_record_entries if jsonl else _task_entries)(where, record):
            if isinstance(item, tuple):
                skipped.append(item)
            else:
                entries.append(item)
    return entries, skipped


# ---- import: matching and saving -----------------------------------------------------------------


class _PairIndex:
    """Finds a stored pair's example id by content hash, or by (split, subset, source_index)."""

    def __init__(self, store: Store, name: str) -> None:
        self.name = name
        self.by_hash: dict[str, int] = {}
        self.by_index: dict[tuple[str, str, int], list[int]] = {}
        self.where: dict[int, tuple[str, int]] = {}  # example id -> (split, source_index)
        for p in store.load_pairs(name):
            assert p.example_id is not None  # pairs loaded from the store carry their id
            self.by_hash[p.content_hash] = p.example_id
            self.by_index.setdefault((p.split, p.subset, p.source_index), []).append(p.example_id)
            self.where[p.example_id] = (p.split, p.source_index)

    def find(self, entry: _Entry) -> int:
        pair = entry.pair
        if pair.get("content_hash"):
            if pair["content_hash"] not in self.by_hash:
                raise SourceError(f"{entry.where}: no pair with content_hash "
                                  f"{_show(pair['content_hash'])} in dataset {self.name!r}")
            return self.by_hash[pair["content_hash"]]
        split, subset, index = (pair.get("split", "train"), pair.get("subset", ""),
                                pair.get("source_index"))
        found = self.by_index.get((split, subset, index), []) if index is not None else []
        if len(found) != 1:
            why = "no" if not found else f"{len(found)} pairs match, so"
            raise SourceError(f"{entry.where}: {why} pair split={_show(split)} "
                              f"subset={_show(subset)} source_index={index!r} in dataset "
                              f"{self.name!r}; give content_hash")
        return found[0]


def _flag_sample(pairs: Sequence[tuple[str, int]], n: int = 5) -> str:
    """'24 pairs, e.g. train #0, train #1, …' for an error line.

    >>> _flag_sample([("train", 7), ("train", 2)], n=1)
    '2 pairs, e.g. train #2, …'
    >>> _flag_sample([])
    'no pair'
    """
    if not pairs:
        return "no pair"
    shown = [f"{split} #{index}" for split, index in sorted(pairs)[:n]]
    more = ", …" if len(pairs) > n else ""
    return f"{len(pairs):,} pair{'s' if len(pairs) > 1 else ''}, e.g. {', '.join(shown)}{more}"


def _matched(entry: _Entry, index: _PairIndex, flagged: Mapping[str, set[int]], name: str,
             fallback: str) -> NewReview:
    """The review an entry makes, once its detector ran and flagged its pair; else SourceError."""
    if entry.detector not in flagged:
        raise SourceError(f"{entry.where}: detector {_show(entry.detector)} has not run on "
                          f"dataset {name!r} (ran: {', '.join(sorted(flagged)) or 'none'})")
    example_id = index.find(entry)
    if example_id not in flagged[entry.detector]:
        split, source_index = index.where[example_id]
        raise SourceError(
            f"{entry.where}: {entry.detector}'s latest run did not flag {split} pair "
            f"{source_index} of {name!r}, and only a flag can be reviewed (it flagged "
            f"{_flag_sample([index.where[i] for i in flagged[entry.detector]])})")
    return {"example_id": example_id, "detector": entry.detector, "verdict": entry.verdict,
            "reviewer": entry.reviewer or fallback, "note": entry.note}


def import_reviews(store: Store, name: str, path: str | Path, *, fmt: str | None = None,
                   reviewer: str | None = None) -> ImportCounts:
    """Save the reviews of a review file into dataset `name`, all in one transaction.

    `reviewer` names entries whose file names no reviewer (default `default_reviewer()`). A
    review of a pair the dataset lacks, of a pair the detector's latest run did not flag, or
    under a detector that never ran on it, is a SourceError naming FILE:LINE, and nothing is
    saved. Rows for the same flag and reviewer save once: the later row wins (`superseded`)."""
    entries, skipped = read_review_file(path, fmt=fmt)
    fallback = check_reviewer(reviewer or default_reviewer())
    index = _PairIndex(store, name)
    flagged = store.flagged_example_ids(name)
    latest: dict[tuple[int, str, str], tuple[str, NewReview]] = {}
    superseded: list[tuple[str, str]] = []
    for entry in entries:
        review = _matched(entry, index, flagged, name, fallback)
        key = (review["example_id"], review["detector"], review["reviewer"])
        if key in latest:
            superseded.append((latest[key][0], entry.where))
        latest[key] = (entry.where, review)
    before = {(r["example_id"], r["detector"], r["reviewer"]) for r in store.reviews(name)}
    store.save_reviews(name, [review for _, review in latest.values()])
    edited = len(before & latest.keys())
    tasks = len({e.where for e in entries} | {w for w, _ in skipped})
    return ImportCounts(file=str(path), tasks=tasks, saved=len(latest),
                        new=len(latest) - edited, edited=edited, superseded=superseded,
                        skipped=skipped)


def check_flagged_pair(store: Store, name: str, *, detector: str, source_index: int,
                       split: str = "train", subset: str | None = None) -> None:
    """SelectionError unless `detector`'s latest run on `name` flagged the pair (split,
    source_index, and subset when given), naming the first pairs it did flag: a review is a
    verdict on a flag, and one on an unflagged pair would count towards no precision."""
    ran = store.latest_runs(name)
    if detector not in ran:
        raise SelectionError(f"detector {detector!r} has not run on dataset {name!r}; detectors "
                             f"that ran: {', '.join(sorted(ran)) or 'none'}")
    rows = store.flag_rows(name, detector=detector)
    if any(r["split"] == split and r["source_index"] == source_index
           and (subset is None or (r["subset"] or "") == subset) for r in rows):
        return
    where = f"{split} pair {source_index}" + (f" (subset {subset!r})" if subset else "")
    hint = f" (`rewardlab flags show {name} --detector {detector}` lists them)" if rows else ""
    raise SelectionError(
        f"{detector}'s latest run on {name!r} did not flag {where}, and only a flag can be "
        f"reviewed; it flagged {_flag_sample([(r['split'], r['source_index']) for r in rows], n=10)}"
        + hint)
