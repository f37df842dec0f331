"""CLI handlers for experiments: compare (the main job), experiments, demo."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from rewardlab.cli.common import (
    add_config_args,
    add_store_options,
    check_at_least,
    check_output_dir,
    config_from_args,
    emit,
    format_table,
)
from rewardlab.errors import SourceError
from rewardlab.experiment.compare import CompareConfig

if TYPE_CHECKING:
    from rewardlab.report.results import DoseResponse, ResultsDocument

__all__ = ["register", "add_compare_args", "cmd_compare", "cmd_experiments", "cmd_demo"]

OFFLINE_HINT = ("offline? run on the embedded HH-RLHF sample instead: rewardlab compare --train "
                "hh-rlhf-sample --seeds 2 -o out")


def add_compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="report directory (results.json, report.md/html, PNGs)")
    add_config_args(p, CompareConfig)


def _render_compare(results: ResultsDocument, out_dir: Path) -> str:
    # CIs are None only without test pairs, and run_comparison refuses an empty test split
    rows = [{"condition": c, "train_pairs": b["summary"]["train_pairs"],
             "accuracy": b["summary"]["accuracy_mean"], "±std": b["summary"]["accuracy_std"],
             "95% CI": "{:.4f}–{:.4f}".format(*cast("list[float]", b["summary"]["accuracy_ci"])),
             "reward_gap": b["summary"]["reward_gap_mean"]}
            for c, b in results["conditions"].items()]
    cmp_rows = [{"treated": c["treated"], "vs": c["baseline"],
                 "Δacc": c["bootstrap"]["diff"], "95% CI": "{:+.4f}…{:+.4f}".format(
                     *cast("list[float]", c["bootstrap"]["ci"])),
                 "McNemar p": ", ".join(f"{m['p']:.3g}" for m in c["mcnemar"])}
                for c in results["comparisons"]]
    parts = [format_table(rows, list(rows[0]))] if rows else []
    if cmp_rows:
        parts.append(format_table(cmp_rows, list(cmp_rows[0])))
    parts += [_dose_table(dose) for dose in results.get("dose_response", [])]
    parts += [results["verdict"], f"report: {out_dir / 'report.html'} "
              f"({results['seconds']:.0f} s)"]
    return "\n\n".join(parts)


def _dose_table(dose: DoseResponse) -> str:
    """Per fraction: pairs treated, both arms' mean accuracy, the paired difference and its CI."""
    rows = [{"fraction": p["fraction"], "pairs": p["count"], "flagged": p["flagged_among"],
             f"acc top by {dose['rank_by']}": p["detector"]["summary"]["accuracy_mean"],
             "acc random": p["random"]["summary"]["accuracy_mean"],
             "Δacc": p["comparison"]["bootstrap"]["diff"],
             "95% CI": "{:+.4f}…{:+.4f}".format(*cast("list[float]",
                                                   p["comparison"]["bootstrap"]["ci"]))}
            for p in dose["points"]]
    return f"dose-response ({dose['treatment']}):\n" + format_table(rows, list(rows[0]))


def cmd_compare(args: argparse.Namespace) -> int:
    from rewardlab.experiment.compare import run_comparison

    config = config_from_args(CompareConfig, args)
    check_at_least("--max-pairs", config.max_pairs, 0)  # 0 = all pairs
    out_dir = check_output_dir(args.output)
    try:
        results = run_comparison(config, out_dir, db=args.db, progress=not args.json)
    except SourceError as e:
        if config.train.startswith("hh-rlhf") and "hub" in str(e).lower():
            raise SourceError(f"{e}\n{OFFLINE_HINT}") from e
        raise
    summary: dict[str, Any] = {k: results[k]
                               for k in ("verdict", "comparisons", "notebook_table", "seconds")}
    summary["conditions"] = {c: b["summary"] for c, b in results["conditions"].items()}
    if results.get("dose_response"):  # the curves without their runs (those are in results.json)
        summary["dose_response"] = [
            {"rank_by": d["rank_by"], "treatment": d["treatment"], "curve_test": d["curve_test"],
             "points": [{"fraction": p["fraction"], "count": p["count"],
                         "detector": p["detector"]["summary"], "random": p["random"]["summary"],
                         "comparison": p["comparison"]} for p in d["points"]]}
            for d in results["dose_response"]]
    if results.get("multiplicity"):
        summary["multiplicity"] = results["multiplicity"]
    summary["report"] = str(out_dir / "report.html")
    emit(summary, as_json=args.json, render=lambda: _render_compare(results, out_dir))
    return 0


def cmd_experiments(args: argparse.Namespace) -> int:
    from rewardlab.store.store import Store

    rows = Store(args.db).experiments()
    table = [{"id": r["id"], "name": r["name"], "dataset": r["dataset"],
              "created": str(r["created_at"])[:19], "runs": len(r.get("runs", [])),
              "out_dir": r["out_dir"]} for r in rows]
    emit(rows, as_json=args.json, render=lambda: format_table(
        table, ["id", "name", "dataset", "created", "runs", "out_dir"])
        if rows else "no experiments yet: run `rewardlab compare -o DIR`")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from rewardlab.experiment.demo import run_demo

    results = run_demo(Path(args.output), n=args.n, noise=args.noise, db=args.db,
                       progress=not args.json)
    emit({"verdict": results["verdict"], "teaching": results.get("teaching", {}),
          "report": str(Path(args.output) / "report.html")}, as_json=args.json,
         render=lambda: _render_compare(results, Path(args.output)))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this group's commands (parsers and handlers) to the top-level subparsers."""

    p = sub.add_parser("compare", help="the main job: unfiltered vs clean vs random control",
                       description="Train reward models on unfiltered, cleaned and randomly reduced "
                       "data (× seeds), evaluate on the same test pairs, test the differences "
                       "(McNemar, CMH pooled over seeds, paired bootstrap, power, Holm) and write a "
                       "report. --fractions/--rank-by add a dose-response curve (the detector's "
                       "top pairs vs as many random pairs), --ablation each detector on its own.")
    add_compare_args(p)
    add_store_options(p, handler=cmd_compare)

    p = sub.add_parser("experiments", help="list recorded experiments")
    add_store_options(p, handler=cmd_experiments)

    p = sub.add_parser("demo", help="offline teaching demo on synthetic data with known noise")
    p.add_argument("-o", "--output", default="demo", metavar="DIR")
    p.add_argument("--n", type=int, default=4000, help="synthetic train pairs")
    p.add_argument("--noise", type=float, default=0.2, help="fraction of flipped train labels")
    add_store_options(p, handler=cmd_demo)
