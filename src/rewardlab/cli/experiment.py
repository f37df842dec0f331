"""CLI handlers for experiments: compare (the main job), experiments, demo."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rewardlab.cli.common import (
    add_config_args,
    add_store_options,
    check_at_least,
    check_output_dir,
    config_from_args,
    emit,
    format_table,
)
from rewardlab.errors import RewardlabError, SelectionError, SourceError
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


def _pct(x: float | None) -> str:
    """An accuracy or rate in percent, as the report prints it."""
    return "—" if x is None else f"{100 * x:.1f}%"


def _pts(x: float | None, sign: str = "+") -> str:
    """An accuracy difference in percentage points, as the report prints it."""
    return "—" if x is None else f"{100 * x:{sign}.1f}"


def _render_compare(results: ResultsDocument, out_dir: Path) -> str:
    # one unit each, as in the report: accuracies in %, their differences in points
    rows = [{"condition": c, "train_pairs": b["summary"]["train_pairs"],
             "accuracy": _pct(b["summary"]["accuracy_mean"]),
             "±std (points)": _pts(b["summary"]["accuracy_std"], ""),
             "95% CI": "{}–{}".format(*map(_pct, b["summary"]["accuracy_ci"])),
             "reward_gap": b["summary"]["reward_gap_mean"]}
            for c, b in results["conditions"].items()]
    cmp_rows = [{"treated": c["treated"], "vs": c["baseline"],
                 "Δacc (points)": _pts(c["bootstrap"]["diff"]),
                 "95% CI (points)": "{} to {}".format(*map(_pts, c["bootstrap"]["ci"])),
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
    rows = [{"fraction": f"{100 * p['fraction']:g}%", "pairs": p["count"],
             "flagged": p["flagged_among"],
             f"acc top by {dose['rank_by']}": _pct(p["detector"]["summary"]["accuracy_mean"]),
             "acc random": _pct(p["random"]["summary"]["accuracy_mean"]),
             "Δacc (points)": _pts(p["comparison"]["bootstrap"]["diff"]),
             "95% CI (points)": "{} to {}".format(*map(_pts, p["comparison"]["bootstrap"]["ci"]))}
            for p in dose["points"]]
    return f"dose-response ({dose['treatment']}):\n" + format_table(rows, list(rows[0]))


def cmd_compare(args: argparse.Namespace) -> int:
    from rewardlab.experiment.compare import run_comparison

    config = config_from_args(CompareConfig, args)  # refuses out-of-range options (one line)
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


def _check_demo_options(n: int, noise: float) -> None:
    """--n must give each of the demo's dose-response fractions its own number of pairs (else the
    curve is refused after the detectors have run), --noise must be a share."""
    from rewardlab.experiment.compare import check_fractions_fit
    from rewardlab.experiment.demo import DEMO_FRACTIONS

    check_at_least("--n", n, 1)

    def fits(size: int) -> bool:
        try:
            check_fractions_fit(DEMO_FRACTIONS, size)
        except SelectionError:
            return False
        return True

    if not fits(n):
        smallest = next(size for size in range(1, 10_000) if fits(size))
        raise RewardlabError(f"--n {n}: the demo's dose-response treats "
                             f"{', '.join(f'{100 * f:g}%' for f in DEMO_FRACTIONS)} of the train "
                             f"pairs, which needs at least {smallest} of them")
    if not 0.0 <= noise <= 1.0:  # NaN fails this too
        raise RewardlabError(f"--noise must be in [0, 1], the share of flipped labels (got {noise})")


def cmd_demo(args: argparse.Namespace) -> int:
    from rewardlab.experiment.demo import run_demo

    _check_demo_options(args.n, args.noise)  # before the output folder or the store is touched
    check_output_dir(args.output)
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
