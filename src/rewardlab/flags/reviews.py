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
from typing import Any, TypedDict

from rewardlab.errors import SourceError
from rewardlab.store.records import VERDICTS, NewReview, QueueReview
from rewardlab.store.reviews import MAX_QUEUE_PAGE
from rewardlab.store.store import Store, default_reviewer

__all__ = ["REVIEW_FORMATS", "LABEL_STUDIO_CONFIG", "ReviewTask", "ImportCounts", "review_tasks",
           "format_for", "write_review_file", "export_review_file", "read_review_file",
           "import_reviews"]

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
    """What `import_reviews` read and saved; `skipped` says why each unsaved entry was left."""

    file: str
    tasks: int = 0
    saved: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (FILE:LINE or task, reason)


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
            tasks.append({"dataset": name, **item, "content_hash": hashes[item["example_id"]]})
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


# ---- import ------------------------------------------------------------------------------------


@dataclass
class _Entry:
    """One review read from a file, before it is matched to a stored pair."""

    where: str  # FILE:LINE or FILE: task N
    pair: dict[str, Any]  # some of _PAIR_KEYS
    detector: str
    verdict: str
    reviewer: str | None
    note: str


def _verdict(where: str, value: Any) -> str:
    verdict = _VERDICT_WORDS.get(str(value).strip().lower()) if isinstance(value, str) else None
    if verdict is None:
        raise SourceError(f"{where}: verdict {value!r} is not one of {', '.join(VERDICTS)}")
    return verdict


def _text(where: str, record: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    value = record.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise SourceError(f"{where}: field {key!r} must be a non-empty string (got {value!r})")
    return value


def _jsonl_entries(path: Path) -> Iterator[_Entry | tuple[str, str]]:
    with open(path, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, start=1):
            where = f"{path}:{number}"
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise SourceError(f"{where}: not valid JSON: {e.msg}") from None
            if not isinstance(record, dict):
                raise SourceError(f"{where}: expected a JSON object, got {type(record).__name__}")
            yield from _record_entries(where, record)


def _record_entries(where: str, record: Mapping[str, Any]) -> Iterator[_Entry | tuple[str, str]]:
    pair = {k: record[k] for k in _PAIR_KEYS if k in record}
    detector = _text(where, record, "detector")
    reviews = record.get("reviews", [record] if "verdict" in record else None)
    if not isinstance(reviews, list):
        raise SourceError(f"{where}: expected 'reviews' (a list) or 'verdict'")
    if not reviews:
        yield where, "no review"
    for review in reviews:
        if not isinstance(review, dict):
            raise SourceError(f"{where}: each review must be a JSON object")
        who = review.get("reviewer")
        if who is not None and not isinstance(who, str):
            raise SourceError(f"{where}: field 'reviewer' must be a string (got {who!r})")
        yield _Entry(where, pair, detector, _verdict(where, review.get("verdict")), who,
                     _text(where, review, "note", required=False))


def _annotator(annotation: Mapping[str, Any]) -> str | None:
    if isinstance(annotation.get("rewardlab_reviewer"), str):
        return str(annotation["rewardlab_reviewer"])
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        return str(who.get("email") or who.get("id") or "") or None
    return f"labelstudio-user-{who}" if isinstance(who, (int, str)) and str(who) else None


def _annotation_fields(where: str, annotation: Mapping[str, Any]) -> tuple[str | None, str]:
    """(verdict or None, note) from one annotation's result list."""
    verdict, note = None, ""
    for region in annotation.get("result") or []:
        if not isinstance(region, dict) or not isinstance(region.get("value"), dict):
            raise SourceError(f"{where}: each annotation result must be an object with a 'value'")
        value = region["value"]
        if region.get("from_name") == "verdict" and value.get("choices"):
            verdict = _verdict(where, value["choices"][0])
        elif region.get("from_name") == "note" and value.get("text"):
            note = "\n".join(map(str, value["text"]))
    return verdict, note


def _label_studio_entries(path: Path) -> Iterator[_Entry | tuple[str, str]]:
    try:
        tasks = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise SourceError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from None
    if not isinstance(tasks, list):
        raise SourceError(f"{path}: expected a JSON list of Label Studio tasks")
    for number, task in enumerate(tasks, start=1):
        where = f"{path}: task {number}"
        data = task.get("data") if isinstance(task, dict) else None
        if not isinstance(data, dict):
            raise SourceError(f"{where}: expected an object with a 'data' object")
        pair = {k: data[k] for k in _PAIR_KEYS if k in data}
        detector = _text(where, data, "detector")
        annotations = task.get("annotations") or []
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
            yield _Entry(where, pair, detector, verdict, _annotator(annotation), note)


def read_review_file(path: str | Path, *, fmt: str | None = None
                     ) -> tuple[list[_Entry], list[tuple[str, str]]]:
    """(reviews read, (where, reason) of tasks without a usable review) from a review file."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    reader = _jsonl_entries if format_for(path, fmt) == "jsonl" else _label_studio_entries
    entries: list[_Entry] = []
    skipped: list[tuple[str, str]] = []
    for item in reader(path):
        if isinstance(item, tuple):
            skipped.append(item)
        else:
            entries.append(item)
    return entries, skipped


class _PairIndex:
    """Finds a stored pair's example id by content hash, or by (split, subset, source_index)."""

    def __init__(self, store: Store, name: str) -> None:
        self.name = name
        self.by_hash: dict[str, int] = {}
        self.by_index: dict[tuple[str, str, int], list[int]] = {}
        for p in store.load_pairs(name):
            assert p.example_id is not None  # pairs loaded from the store carry their id
            self.by_hash[p.content_hash] = p.example_id
            self.by_index.setdefault((p.split, p.subset, p.source_index), []).append(p.example_id)

    def find(self, entry: _Entry) -> int:
        pair = entry.pair
        if pair.get("content_hash"):
            if pair["content_hash"] not in self.by_hash:
                raise SourceError(f"{entry.where}: no pair with content_hash "
                                  f"{pair['content_hash']!r} in dataset {self.name!r}")
            return self.by_hash[pair["content_hash"]]
        split, subset, index = (pair.get("split", "train"), pair.get("subset") or "",
                                pair.get("source_index"))
        found = self.by_index.get((str(split), str(subset), index), []) \
            if isinstance(index, int) else []
        if len(found) != 1:
            why = "no" if not found else f"{len(found)} pairs match, so"
            raise SourceError(f"{entry.where}: {why} pair split={split!r} subset={subset!r} "
                              f"source_index={index!r} in dataset {self.name!r}; give "
                              "content_hash")
        return found[0]


def import_reviews(store: Store, name: str, path: str | Path, *, fmt: str | None = None,
                   reviewer: str | None = None) -> ImportCounts:
    """Save the reviews of a review file into dataset `name`, all in one transaction.

    `reviewer` names entries whose file names no reviewer (default `default_reviewer()`). A
    review of a pair the dataset lacks, or under a detector that never ran on it, is a
    SourceError naming FILE:LINE, and nothing is saved."""
    entries, skipped = read_review_file(path, fmt=fmt)
    index = _PairIndex(store, name)
    ran = store.latest_runs(name)
    fallback = reviewer or default_reviewer()
    reviews: list[NewReview] = []
    for entry in entries:
        if entry.detector not in ran:
            raise SourceError(f"{entry.where}: detector {entry.detector!r} has not run on dataset "
                              f"{name!r} (ran: {', '.join(sorted(ran)) or 'none'})")
        reviews.append({"example_id": index.find(entry), "detector": entry.detector,
                        "verdict": entry.verdict, "reviewer": entry.reviewer or fallback,
                        "note": entry.note})
    saved = store.save_reviews(name, reviews)
    tasks = len({e.where for e in entries} | {w for w, _ in skipped})
    return ImportCounts(file=str(path), tasks=tasks, saved=len(saved), skipped=skipped)
