"""CLI handlers for the data side: ingest, datasets, flag, flags show/export/import/review."""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

from rewardlab.cli_util import emit, format_table

__all__ = ["cmd_ingest", "cmd_datasets", "cmd_flag", "cmd_flags_show", "cmd_flags_export",
           "cmd_flags_import", "cmd_flags_review", "split_names"]


def split_names(value: str | None) -> list[str] | None:
    """'a, b,c' → ['a', 'b', 'c']; None/'' → None (meaning: the command's default)."""
    names = [v.strip() for v in (value or "").split(",") if v.strip()]
    return names or None


def _store(args: argparse.Namespace) -> Any:
    from rewardlab.store import Store

    return Store(args.db)


def _render_ingest(counts: Any) -> str:
    groups = [{"split/subset": g, **c} for g, c in sorted(counts.by_group.items())]
    reasons = Counter(reason for _, reason in counts.rejected)
    lines = [f"dataset {counts.dataset!r}: read {counts.read:,} pairs, ingested "
             f"{counts.ingested:,}, already present {counts.already_present:,}, rejected "
             f"{len(counts.rejected):,}", ""]
    lines.append(format_table(groups, ["split/subset", "ingested", "already_present"]))
    for reason, n in reasons.most_common():
        first = [i for i, r in counts.rejected if r == reason][:5]
        lines.append(f"rejected {n:,}: {reason} (source indices {', '.join(map(str, first))}…)")
    return "\n".join(lines)


def cmd_ingest(args: argparse.Namespace) -> int:
    from rewardlab.sources import read_source

    source = read_source(args.source, split=args.split, test_fraction=args.test_fraction,
                         limit=args.limit)
    counts = _store(args).ingest(args.name, source)
    emit(counts, as_json=args.json, render=lambda: _render_ingest(counts))
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    rows = _store(args).dataset_summaries()
    table = [{"name": r["name"], "train": r["pairs"].get("train", 0),
              "test": r["pairs"].get("test", 0), "flagged": r["flagged"],
              "detectors": len(r["detectors"]), "source": r["source"]} for r in rows]
    emit(rows, as_json=args.json, render=lambda: format_table(
        table, ["name", "train", "test", "flagged", "detectors", "source"])
        if rows else "no datasets yet: run `rewardlab ingest SOURCE --name NAME`")
    return 0


def cmd_flag(args: argparse.Namespace) -> int:
    from rewardlab.flagging import flag_dataset, flag_summary

    store = _store(args)
    results = flag_dataset(store, args.name, detectors=split_names(args.detectors),
                           progress=not args.json)
    n_train = len(results[0].flagged) if results else 0
    rows = flag_summary(results, n_train)
    emit({"dataset": args.name, "train_pairs": n_train, "detectors": rows}, as_json=args.json,
         render=lambda: f"{n_train:,} train pairs in {args.name!r}\n\n" + format_table(
             rows, ["detector", "flagged", "rate", "threshold", "threshold_kind"]))
    return 0


def _shorten(text: str, width: int = 300) -> str:
    """Display-only shortening, marked with its full length so nothing looks complete that isn't."""
    text = " ".join(text.split())
    return text if len(text) <= width else f"{text[:width]}… [{len(text):,} chars]"


def _render_flag_rows(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no flagged pairs"
    blocks = []
    for r in rows:
        blocks.append("\n".join([
            f"#{r['source_index']} [{r['split']}/{r['subset'] or '-'}] {r['detector']} "
            f"(score {r['score']:.3g}): {r['reason']}",
            f"  prompt:   {_shorten(r['prompt'])}",
            f"  chosen:   {_shorten(r['chosen'])}",
            f"  rejected: {_shorten(r['rejected'])}"]))
    return "\n\n".join(blocks)


def cmd_flags_show(args: argparse.Namespace) -> int:
    rows = _store(args).flag_rows(args.name, detector=args.detector, limit=args.limit)
    emit(rows, as_json=args.json, render=lambda: _render_flag_rows(rows))
    return 0


def cmd_flags_export(args: argparse.Namespace) -> int:
    from rewardlab.flagging import export_flagged_indices, write_indices

    indices = export_flagged_indices(_store(args), args.name,
                                     detectors=split_names(args.detectors))
    write_indices(args.output, indices)
    emit({"file": args.output, "indices": len(indices)}, as_json=args.json,
         render=lambda: f"wrote {len(indices):,} flagged train indices to {args.output}")
    return 0


def cmd_flags_import(args: argparse.Namespace) -> int:
    from rewardlab.flagging import import_flagged_indices, read_indices

    indices = read_indices(args.file)
    result = import_flagged_indices(_store(args), args.name, indices, label=args.label,
                                    path=args.file)
    n = int(result.flagged.sum())
    emit({"detector": args.label, "indices": len(indices), "flagged_pairs": n},
         as_json=args.json, render=lambda: f"imported {len(indices):,} indices from {args.file} "
         f"as detector {args.label!r}: {n:,} train pairs flagged")
    return 0


def cmd_flags_review(args: argparse.Namespace) -> int:
    review_id = _store(args).add_review(args.name, source_index=args.source_index,
                                        detector=args.detector, is_issue=args.is_issue,
                                        note=args.note, split=args.split,
                                        subset=args.subset)
    label = "true positive" if args.is_issue else "false positive"
    emit({"review_id": review_id, "is_issue": args.is_issue}, as_json=args.json,
         render=lambda: f"recorded review #{review_id}: pair {args.source_index} is a {label} "
         f"of {args.detector}")
    return 0
