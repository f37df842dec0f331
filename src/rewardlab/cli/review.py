"""CLI handlers for reviewing flags: `rewardlab review` (the browser app over the store) and
`rewardlab reviews stats|export|import` (precision per detector; Label Studio / JSONL files).

Every option of `review` is checked (ranges, the bind/token rule, a free port, the dataset) before
the server starts.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from rewardlab.cli.common import (
    add_config_args,
    add_store_options,
    check_output_file,
    emit,
    format_table,
    server_config,
)
from rewardlab.errors import StoreError
from rewardlab.store.records import REVIEW_STATES

if TYPE_CHECKING:
    from rewardlab.flags.detector_precision import DetectorPrecision

__all__ = ["register", "cmd_review", "cmd_reviews_stats", "cmd_reviews_export",
           "cmd_reviews_import"]

log = logging.getLogger("rewardlab.review")
REVIEW_FORMATS = ("labelstudio", "jsonl")  # flags.reviews.REVIEW_FORMATS, without importing it


def cmd_review(args: argparse.Namespace) -> int:
    from rewardlab.store.store import Store, mask_url
    from rewardlab.web.review import ReviewConfig, create_review_app
    from rewardlab.web.server import base_url, check_port_free, run_server

    config, token = server_config(ReviewConfig, args, command="rewardlab review")
    check_port_free(config.host, config.port)
    store = Store(args.db)
    names = store.dataset_names()
    if args.dataset is not None and args.dataset not in names:
        raise StoreError(f"no dataset {args.dataset!r} in {mask_url(store.url)}; datasets: "
                         f"{', '.join(names) or 'none (run `rewardlab ingest` first)'}")
    app = create_review_app(store, config, token=token, dataset=args.dataset)
    url = base_url(config.host, config.port) + "/"
    # the token is not printed: the user gave it, and terminals end up in logs
    login = f"{url}?token=<your token> once (the browser then keeps a session cookie)" \
        if token else url
    log.info("rewardlab review: %s, %d dataset(s); reviewer %s; open %s", repr(store),
             len(names), app.state.reviewer, login)
    run_server(app, host=config.host, port=config.port)
    return 0


def _stats_rows(stats: Mapping[str, DetectorPrecision]) -> list[dict[str, object]]:
    return [{"detector": d, "flagged": s["flagged"], "reviewed": s["reviewed"], "tp": s["tp"],
             "fp": s["fp"], "undecided": s["undecided"], "precision": s["precision"],
             "ci95": "" if s["ci"] is None else f"{s['ci'][0]:.3f}-{s['ci'][1]:.3f}"}
            for d, s in stats.items()]


def cmd_reviews_stats(args: argparse.Namespace) -> int:
    from rewardlab.flags.detector_precision import precision_stats
    from rewardlab.store.store import Store

    stats = precision_stats(Store(args.db), args.name)
    rows = _stats_rows(stats)
    emit(stats, as_json=args.json, render=lambda: format_table(
        rows, ["detector", "flagged", "reviewed", "tp", "fp", "undecided", "precision", "ci95"])
        if rows else f"no detector has run on {args.name!r}")
    return 0


def cmd_reviews_export(args: argparse.Namespace) -> int:
    from rewardlab.flags.review_files import LABEL_STUDIO_CONFIG, export_review_file, format_for
    from rewardlab.store.store import Store

    fmt = format_for(args.output, args.format)  # before any work, like the output path
    check_output_file(args.output)
    if args.label_config:
        check_output_file(args.label_config, "--label-config")
    n = export_review_file(Store(args.db), args.name, args.output, fmt=fmt,
                           detector=args.detector, state=args.state)
    if args.label_config:
        Path(args.label_config).write_text(LABEL_STUDIO_CONFIG, encoding="utf-8")
    emit({"file": args.output, "format": fmt, "tasks": n}, as_json=args.json,
         render=lambda: f"wrote {n:,} {args.state} flag(s) of {args.name!r} to {args.output} "
         f"({fmt})" + (f"; Label Studio labeling config in {args.label_config}"
                       if args.label_config else ""))
    return 0


def cmd_reviews_import(args: argparse.Namespace) -> int:
    from rewardlab.flags.review_files import import_reviews
    from rewardlab.store.store import Store

    counts = import_reviews(Store(args.db), args.name, args.file, fmt=args.format,
                            reviewer=args.reviewer)
    lines = [f"imported {counts.saved:,} review(s) from {counts.file} into {args.name!r} "
             f"({counts.tasks:,} task(s) read): {counts.new:,} new, {counts.edited:,} replacing "
             "the same reviewer's earlier verdict on the flag"]
    lines += [f"{earlier}: replaced by {later} (same pair, detector and reviewer: the later row "
              "wins)" for earlier, later in counts.superseded]
    lines += [f"skipped {where}: {why}" for where, why in counts.skipped]
    emit(counts, as_json=args.json, render=lambda: "\n".join(lines))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `review` and `reviews` (parsers and handlers) to the top-level subparsers."""
    from rewardlab.web.review.review_config import ReviewConfig
    from rewardlab.web.security import TOKEN_ENV

    p = sub.add_parser(
        "review", help="review flags in a browser (TP / FP / needs review, precision per detector)",
        description="Serve the review pages over the store: datasets, a queue of flag cards "
        "(keyboard: j/k, 1/2/3), reviewed precision per detector; the same over JSON "
        "(/api/datasets, /api/flags, /api/reviews, /api/reviews/stats). Binds 127.0.0.1 unless "
        "told otherwise; any other address needs a token. See docs/review.md.")
    p.add_argument("dataset", nargs="?", metavar="DATASET",
                   help="dataset the queue opens on (default: the first)")
    p.add_argument("--token", metavar="T", default=None,
                   help=f"require the token: a browser opens a page once with ?token=T, API "
                        f"clients send 'Authorization: Bearer T' (default: ${TOKEN_ENV}, else no "
                        f"auth, loopback only)")
    add_config_args(p, ReviewConfig, title="ReviewConfig")
    add_store_options(p, handler=cmd_review, json_flag=False)

    reviews = sub.add_parser("reviews", help="reviewed precision; export/import review files")
    rsub = reviews.add_subparsers(dest="reviews_command", required=True, metavar="COMMAND")
    p = rsub.add_parser("stats", help="reviewed precision per detector (Wilson 95%% CI)")
    p.add_argument("name", metavar="DATASET")
    add_store_options(p, handler=cmd_reviews_stats)
    p = rsub.add_parser("export", help="write a review queue / the reviews as Label Studio tasks "
                        "JSON or JSONL")
    p.add_argument("name", metavar="DATASET")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="FILE.json (Label Studio tasks) or FILE.jsonl")
    p.add_argument("--format", choices=REVIEW_FORMATS, help="default: from the file name")
    p.add_argument("--detector", help="one detector's flags (default: every detector)")
    p.add_argument("--state", choices=REVIEW_STATES, default="unreviewed",
                   help="which flags (default: unreviewed; 'reviewed' exports the reviews)")
    p.add_argument("--label-config", metavar="XML",
                   help="also write the Label Studio labeling config for these tasks")
    add_store_options(p, handler=cmd_reviews_export)
    p = rsub.add_parser("import", help="save the verdicts of a Label Studio JSON export or a "
                        "JSONL review file")
    p.add_argument("name", metavar="DATASET")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--format", choices=REVIEW_FORMATS, help="default: from the file name")
    p.add_argument("--reviewer", help="name for reviews whose file names no reviewer "
                   "(default: $REWARDLAB_REVIEWER, else the login name)")
    add_store_options(p, handler=cmd_reviews_import)
