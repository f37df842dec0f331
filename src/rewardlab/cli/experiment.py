"""CLI handlers for experiments: compare (the main job), experiments, demo."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rewardlab.cli.common import (
    add_config_args,
    add_store_options,
    check_at_least,
    check_output_dir,
    config_file_values,
    emit,
    format_table,
    given_values,
    named_at_source,
    read_config_file,
)
from rewardlab.errors import RewardlabError, SelectionError, SourceError
from rewardlab.experiment.compare_config import (
    COMPARE_TRAIN_FIELDS,
    RATED_CONDITIONS,
    RATED_TRAIN_FIELDS,
    CompareConfig,
    preset_training,
)
from rewardlab.flags.selection import flag_spec
from rewardlab.training.train_config import TrainConfig

if TYPE_CHECKING:
    from rewardlab.experiment.plan import PlanSummary
    from rewardlab.report.results import DoseResponse, MetricSummary, ResultsDocument

__all__ = ["register", "add_compare_args", "compare_config", "typed_lists", "cmd_compare",
           "cmd_experiments", "cmd_demo"]

OFFLINE_HINT = ("offline? run on the embedded HH-RLHF sample instead: rewardlab compare --train "
                "hh-rlhf-sample --seeds 2 -o out")


def add_compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="report directory (results.json, report.md/html, PNGs)")
    p.add_argument("--config", metavar="FILE",
                   help="a YAML (.yaml/.yml) or JSON file of options: compare's at the top level, "
                        "training options under \"train\" (a mapping; \"training\" when "
                        "\"train\" names the source); lists as lists or comma strings; flags "
                        "given here override the file")
    p.add_argument("--dry-run", action="store_true",
                   help="ingest, run missing detectors and print the plan (runs, pairs per run, "
                        "pair-steps, runs already stored, a time estimate); train nothing")
    add_config_args(p, CompareConfig, skip=("training",), given_only=True)
    add_config_args(p, TrainConfig, skip=COMPARE_TRAIN_FIELDS, given_only=True,
                    title="TrainConfig of every run (saved in results.json as config.training; "
                          "not given: the preset's)")


# compare's list options: comma lists on the command line, lists or comma strings in a file
LIST_OPTIONS = ("conditions", "treatments", "detectors", "fractions")


def _items(value: Any, key: str) -> list[str]:
    """A comma list ('a, b,,c') or a file's list of words/numbers → its items, blanks dropped."""
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    if isinstance(value, list) and all(isinstance(v, (str, int, float))
                                       and not isinstance(v, bool) for v in value):
        return [str(v).strip() for v in value if str(v).strip()]
    raise RewardlabError(f"{key}: expected a list or a comma string, got "
                         f"{json.dumps(value, default=str)[:60]}")


def typed_lists(values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` with compare's list options parsed, once, into the dataclass's types: tuples of
    names, of `FlagSpec`s (`reviewed:DET`), of fractions. One error line naming the option.

    >>> typed_lists({"conditions": "unfiltered, clean", "detectors": ["reviewed:x", "y"],
    ...              "fractions": "0.1,0.2", "seeds": 2})  # doctest: +NORMALIZE_WHITESPACE
    {'conditions': ('unfiltered', 'clean'),
     'detectors': (FlagSpec(detector='x', reviewed_only=True), FlagSpec(detector='y', reviewed_only=False)),
     'fractions': (0.1, 0.2), 'seeds': 2}
    """
    from rewardlab.experiment.dose_arms import parse_fractions

    parsed = dict(values)
    for key in LIST_OPTIONS:
        if parsed.get(key) is None:
            continue
        items = _items(parsed[key], key)
        if key == "fractions":  # the text as given: its errors quote it
            text = parsed[key] if isinstance(parsed[key], str) else ",".join(items)
            parsed[key] = tuple(parse_fractions(text))
        elif key == "detectors":  # an empty list is CompareConfig's to refuse (Python callers too)
            parsed[key] = tuple(flag_spec(item) for item in items)
        else:
            parsed[key] = tuple(items)
    return parsed


def _training_section(path: str, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(the key as the file spells it, its training options), taken out of `data`."""
    section = "training"  # errors name the key as the file spells it
    training = data.pop("training", None)
    if isinstance(data.get("train"), dict):  # the form: training options under "train"
        if training is not None:
            raise RewardlabError(f"{path}: both \"train\" and \"training\" hold training options; "
                                 "keep one (\"train\" may name the train source instead)")
        section, training = "train", data.pop("train")
    if training is not None and not isinstance(training, dict):
        raise RewardlabError(f"{path}: {section}: expected a mapping of training options")
    return section, training or {}


def _compare_file(path: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(compare's options, the training options, the key that holds them) of a --config FILE;
    one error line naming the file and the key for anything it cannot mean."""
    data = read_config_file(path)
    section, training = _training_section(path, data)
    if "seed" in training:
        raise RewardlabError(f"{path}: {section}.seed: compare sets it at the top level: "
                             "\"seeds\" (each run has its own seed)")
    rated = [key for key in RATED_TRAIN_FIELDS if key in training]
    if rated:  # compare's tie and ranking conditions set these, one value per condition
        raise RewardlabError(f"{path}: {section}.{rated[0]}: compare sets it per condition: "
                             f"\"conditions\" from {', '.join(RATED_CONDITIONS)} on rated data")
    misplaced = [key for key in data if key in TrainConfig.__dataclass_fields__
                 and key not in CompareConfig.__dataclass_fields__]
    if misplaced:  # the likeliest slip: a training option at the top level
        raise RewardlabError(f"{path}: {misplaced[0]!r} is a training option: put it under "
                             f"\"{section}\" (compare's own options stay at the top level)")
    options = config_file_values(path, training, TrainConfig, prefix=f"{section}.")
    lists = {key: data.pop(key) for key in LIST_OPTIONS if key in data}
    top = config_file_values(path, data, CompareConfig, skip=("training", *LIST_OPTIONS))
    try:
        return {**top, **typed_lists(lists)}, options, section
    except RewardlabError as e:  # say which file held it
        raise RewardlabError(f"{path}: {e}") from e


def compare_config(args: argparse.Namespace) -> CompareConfig:
    """compare's options: the command line over the --config file over the preset. Lists are
    parsed and the preset merged into the TrainConfig here, once (`preset_training`); the values
    are checked once, by the configs themselves, and a refusal names where the value came from."""
    top, options, section = _compare_file(args.config) if args.config else ({}, {}, "train")
    flags = typed_lists(given_values(CompareConfig, args, skip=("training",)))
    training_flags = given_values(TrainConfig, args, skip=COMPARE_TRAIN_FIELDS)
    values = {**top, **flags}
    try:
        training = preset_training(values.get("preset", "quick"), **{**options, **training_flags})
        return CompareConfig(**values, training=training)  # refuses out-of-range options
    except RewardlabError as e:
        file_keys = {**{key: key for key in top}, **{key: f"{section}.{key}" for key in options}}
        raise named_at_source(e, flags={*flags, *training_flags}, path=args.config,
                               file_keys=file_keys) from e


def _pct(x: float | None) -> str:
    """An accuracy or rate in percent, as the report prints it."""
    return "—" if x is None else f"{100 * x:.1f}%"


def _pts(x: float | None, sign: str = "+") -> str:
    """An accuracy difference in percentage points, as the report prints it."""
    return "—" if x is None else f"{100 * x:{sign}.1f}"


def _render_compare(results: ResultsDocument, out_dir: Path) -> str:
    from rewardlab.evaluation.crossed import format_p, p_value

    # one unit each, as in the report: accuracies in %, their differences in points
    rows = [{"condition": c, "train_pairs": b["summary"]["train_pairs"],
             "accuracy": _pct(b["summary"]["accuracy_mean"]),
             "±std (points)": _pts(b["summary"]["accuracy_std"], ""),
             "95% CI": "{}–{}".format(*map(_pct, b["summary"]["accuracy_ci"])),
             "reward_gap": b["summary"]["reward_gap_mean"]}
            for c, b in results["conditions"].items()]
    cmp_rows = [{"treated": c["treated"], "vs": c["baseline"],
                 "Δacc (points)": _pts(c["test"]["diff"]),
                 "95% CI (points)": "{} to {}".format(*map(_pts, c["test"]["ci"])),
                 # the test the verdict reads (test pairs the unit); McNemar's are per-seed detail
                 "test": format_p(c["test"]["p"]),
                 "McNemar p per seed": ", ".join(p_value(m["p"]) for m in c["mcnemar"])}
                for c in results["comparisons"]]
    parts = [format_table(rows, list(rows[0]))] if rows else []
    if cmp_rows:
        parts.append(format_table(cmp_rows, list(cmp_rows[0])))
    parts += [_dose_table(dose) for dose in results.get("dose_response", [])]
    if results.get("rated"):
        parts.append(_rated_table(results))
    reused = (f"; {results['runs_reused']} of {results['runs_planned']} runs reused from the "
              "store" if results.get("runs_reused") else "")
    parts += [results["verdict"], f"report: {out_dir / 'report.html'} "
              f"({results['seconds']:.0f} s{reused})"]
    return "\n\n".join(parts)


def _rated_table(results: ResultsDocument) -> str:
    """Per tie or ranking condition: its reference, Kendall's tau and best-of-K with 95% CIs."""
    def cell(summary: MetricSummary | None, scale: float = 1.0) -> str:
        if summary is None:
            return "—"
        lo, hi = summary["ci"]
        ci = "" if lo is None or hi is None else f" ({scale * lo:.3f}–{scale * hi:.3f})"
        return f"{scale * summary['mean']:.3f}{ci}"

    rows = [{"condition": name, "vs": b["reference"],
             "kendall_tau (95% CI)": cell(b["metrics"].get("kendall_tau")),
             "best_of_k (95% CI)": cell(b["metrics"].get("best_of_k_accuracy")),
             "tie_nll (95% CI)": cell(b["metrics"].get("tie_nll"))}
            for name, b in results["rated"]["conditions"].items()]
    return "ranking and tie metrics (test prompts the unit):\n" + format_table(rows, list(rows[0]))


def _dose_table(dose: DoseResponse) -> str:
    """Per fraction: pairs treated, both arms' mean accuracy, the paired difference and its CI."""
    rows = [{"fraction": f"{100 * p['fraction']:g}%", "pairs": p["count"],
             "flagged": p["flagged_among"],
             f"acc top by {dose['rank_by']}": _pct(p["detector"]["summary"]["accuracy_mean"]),
             "acc random": _pct(p["random"]["summary"]["accuracy_mean"]),
             "Δacc (points)": _pts(p["comparison"]["test"]["diff"]),
             "95% CI (points)": "{} to {}".format(*map(_pts, p["comparison"]["test"]["ci"]))}
            for p in dose["points"]]
    return f"dose-response ({dose['treatment']}):\n" + format_table(rows, list(rows[0]))


def _render_plan(plan: PlanSummary) -> str:
    rows = [{"stage": g["stage"], "group": g["group"], "runs": g["runs"], "stored": g["stored"],
             "pairs": g["pairs"], "pair-steps": g["pair_steps"]} for g in plan["groups"]]
    speed = plan["pairs_per_second"]
    estimate = (f"about {plan['estimate_seconds']:,.0f} s of training at {speed:,.1f} pairs/s "
                "(measured on the stored runs of this backbone)" if speed is not None and
                plan["estimate_seconds"] is not None else
                "no estimate: the store holds no run of this backbone to measure its speed")
    lines = [f"plan: {plan['runs']} runs ({plan['stored']} stored, {plan['to_train']} to train), "
             f"{plan['pairs_min']:,}–{plan['pairs_max']:,} training pairs per run, "
             f"{plan['pair_steps']:,} pair-steps ({plan['pair_steps_to_train']:,} to train)",
             estimate, "dry run: nothing trained"]
    return "\n\n".join([format_table(rows, list(rows[0])) if rows else "", *lines]).strip()


def _compare_dry_run(config: CompareConfig, args: argparse.Namespace) -> int:
    from rewardlab.experiment.compare import plan_comparison

    _, plan = plan_comparison(config, db=args.db, progress=not args.json)
    emit({"dry_run": True, **plan}, as_json=args.json, render=lambda: _render_plan(plan))
    return 0


def _check_execution(config: CompareConfig, db: str | None) -> None:
    """--workers/--ray/--gpus-per-run against this machine and the store, before any work: e.g.
    a remote Ray cluster cannot write to a SQLite file here (one line, exit 2)."""
    from rewardlab.experiment.executor import Execution, check_execution
    from rewardlab.store.store import resolve_db_url

    check_execution(Execution.of(config), resolve_db_url(db))


def cmd_compare(args: argparse.Namespace) -> int:
    from rewardlab.experiment.compare import run_comparison

    config = compare_config(args)  # refuses out-of-range options (one line)
    _check_execution(config, args.db)
    out_dir = check_output_dir(args.output)
    if args.dry_run:
        return _compare_dry_run(config, args)
    try:
        results = run_comparison(config, out_dir, db=args.db, progress=not args.json)
    except SourceError as e:
        if config.train.startswith("hh-rlhf") and "hub" in str(e).lower():
            raise SourceError(f"{e}\n{OFFLINE_HINT}") from e
        raise
    summary: dict[str, Any] = {k: results[k]
                               for k in ("verdict", "comparisons", "notebook_table", "seconds")}
    summary["runs_planned"] = results.get("runs_planned")
    summary["runs_reused"] = results.get("runs_reused")
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
    if results.get("rated"):  # the tie and ranking conditions' metrics (runs: results.json)
        summary["rated"] = results["rated"]
    summary["report"] = str(out_dir / "report.html")
    emit(summary, as_json=args.json, render=lambda: _render_compare(results, out_dir))
    return 0


def cmd_experiments(args: argparse.Namespace) -> int:
    from rewardlab.store.store import Store

    rows = Store(args.db).experiments()
    # "5/14": runs stored of the plan's, live while a compare runs; older experiments: their runs
    table = [{"id": r["id"], "name": r["name"], "dataset": r["dataset"],
              "created": str(r["created_at"])[:19],
              "runs": (f"{r['runs_done']}/{r['runs_planned']}" if r["runs_planned"] is not None
                       else len(r["runs"])),
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

    p = sub.add_parser("compare", help="the main job: unfiltered vs clean vs random control "
                       "(or, on rated data, tie handling and ranking use)",
                       description="Train reward models on unfiltered, cleaned and randomly reduced "
                       "data (× seeds), evaluate on the same test pairs, test the differences (test "
                       "pairs the unit, seed variance included; McNemar per seed; power; Holm) and write a "
                       "report. --fractions/--rank-by add a dose-response curve (the detector's "
                       "top pairs vs as many random pairs), --ablation each detector on its own. "
                       "On rated data (K responses with scores, ties or ranks) --conditions "
                       "ties-drop,ties-soft,ties-model,best-worst,all-pairs,listwise compares tie "
                       "handling with ties-drop and ranking use with best-worst instead.")
    add_compare_args(p)
    add_store_options(p, handler=cmd_compare)

    p = sub.add_parser("experiments", help="list recorded experiments")
    add_store_options(p, handler=cmd_experiments)

    p = sub.add_parser("demo", help="offline teaching demo on synthetic data with known noise")
    p.add_argument("-o", "--output", default="demo", metavar="DIR")
    p.add_argument("--n", type=int, default=4000, help="synthetic train pairs")
    p.add_argument("--noise", type=float, default=0.2, help="fraction of flipped train labels")
    add_store_options(p, handler=cmd_demo)
