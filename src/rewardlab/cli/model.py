"""CLI handlers for the model side: train, evaluate, score."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rewardlab.cli.common import (
    add_store_options,
    check_at_least,
    check_output_dir,
    check_output_file,
    config_file_values,
    emit,
    format_table,
    given_values,
    named_at_source,
    read_config_file,
)
from rewardlab.cli.data import split_names
from rewardlab.data.pairs import SPLITS
from rewardlab.errors import RewardlabError, SelectionError, SourceError
from rewardlab.flags.selection import CLEAN_DETECTORS, MODES, TREATMENTS, clean_definition
from rewardlab.jsonable import to_jsonable

if TYPE_CHECKING:
    from rewardlab.evaluation.evaluate import EvalMetrics
    from rewardlab.models.reward_model import RewardModel
    from rewardlab.training.train_config import TrainConfig

__all__ = ["register", "train_config", "cmd_train", "cmd_evaluate", "cmd_score", "read_score_file"]


def _selection_detectors(args: argparse.Namespace) -> list[str]:
    """The detectors defining "flagged" for --select clean/random (default: the one clean set,
    as `compare`'s); options that would be ignored are refused rather than dropped in silence."""
    named = split_names(args.detectors)
    if args.treatment != "remove" and args.select != "clean":
        raise SelectionError(f"--treatment {args.treatment} acts on flagged pairs: add --select clean")
    if named is not None and args.select == "all":
        raise SelectionError("--detectors defines 'flagged' for --select clean or random; "
                             "--select all trains on every pair")
    return named or list(CLEAN_DETECTORS)


def train_config(args: argparse.Namespace) -> TrainConfig:
    """train's TrainConfig: the command line over the --config file over the dataclass defaults."""
    from rewardlab.training.train_config import TrainConfig

    from_file = (config_file_values(args.config, read_config_file(args.config), TrainConfig)
                 if args.config else {})
    flags = given_values(TrainConfig, args)
    try:
        return TrainConfig(**{**from_file, **flags})  # refuses out-of-range options
    except RewardlabError as e:  # say where the refused value came from
        raise named_at_source(e, flags=flags, path=args.config,
                              file_keys={key: key for key in from_file}) from e


def cmd_train(args: argparse.Namespace) -> int:
    from rewardlab.flags.selection import flagged_ids, sample_stratified, select_training_pairs
    from rewardlab.models.backbones import resolve_backbone
    from rewardlab.store.store import Store
    from rewardlab.training.loop import train_reward_model
    from rewardlab.training.runtime import launch_cpu_processes, process_rank

    # options first (TrainConfig refuses NaN, out-of-range values): no work before they are valid
    config = train_config(args)
    resolve_backbone(config.model)  # a malformed --model, before the data is read
    check_at_least("--max-pairs", args.max_pairs, 0)
    detectors = _selection_detectors(args)
    check_output_dir(args.output)
    launched = launch_cpu_processes()  # `accelerate launch --cpu --num_processes N`: start the N
    if launched is not None:
        return launched
    main_process = process_rank() == 0  # one of N processes: only the first one speaks
    if not main_process:
        logging.getLogger("rewardlab").setLevel(logging.ERROR)
    store = Store(args.db)
    rated = _rated_prompts(store, args.name, split="train")
    _check_rated_flags(config, args, has_rated=bool(rated))
    if rated:
        return _train_rated(args, config, rated, main_process=main_process)
    pairs = store.load_pairs(args.name, split="train")
    if args.max_pairs:
        pairs = sample_stratified(pairs, args.max_pairs, seed=config.seed)
    flagged: set[int] = set()
    if args.select != "all":  # refused when a detector has not run (none ran: nothing is flagged)
        flagged = flagged_ids(store, args.name, detectors)
        logging.getLogger("rewardlab").info("%s", clean_definition(detectors))
    selection = select_training_pairs(pairs, flagged, mode=args.select,
                                      treatment=args.treatment, seed=config.seed)
    result = train_reward_model(selection.pairs, config=config, output_dir=Path(args.output),
                                resume=args.resume, smoothing=selection.smoothing,
                                progress=not args.json)
    summary = {"output_dir": str(args.output), "selection": selection.describe(),
               "detectors": detectors if args.select != "all" else [],
               "train_pairs": result.n_pairs, "truncated_pairs": result.n_truncated,
               "identical_pairs_dropped": result.n_identical,
               "train_loss": result.train_loss, "train_accuracy": result.train_accuracy,
               "seconds": result.seconds,
               "pairs_per_second": _pairs_per_second(result.n_pairs * config.epochs, result),
               "num_processes": result.model.info.get("num_processes", 1)}
    if not main_process:
        return 0
    emit(summary, as_json=args.json, render=lambda: "\n".join(
        f"{k.replace('_', ' ')}: {_shown(v)}" for k, v in summary.items()))
    return 0


def _rated_prompts(store: Any, name: str, *, split: str) -> list[Any]:
    """The dataset's rated prompts of `split` ([] for plain pairs, or a store without rated data)."""
    load = getattr(store, "load_rated", None)  # issue 32's store API (helper DATA's side)
    return list(load(name, split=split)) if load is not None else []


def _check_rated_flags(config: TrainConfig, args: argparse.Namespace, *, has_rated: bool) -> None:
    """Options that need rated data, or that rated data cannot take: one line, before any work."""
    if not has_rated:
        wanted = [flag for flag, on in (("--ties " + config.ties, config.ties != "drop"),
                                        ("--ranking listwise", config.ranking == "listwise"),
                                        ("--margin-from-scores", config.margin_from_scores)) if on]
        if wanted:
            raise SelectionError(f"{wanted[0]} needs rated data (ratings, rankings or votes with "
                                 f"ties); {args.name!r} holds plain pairs")
        return
    if args.select != "all" or args.max_pairs:
        raise SelectionError(f"--select and --max-pairs act on plain pairs; {args.name!r} holds "
                             "rated prompts, trained whole")


def _train_rated(args: argparse.Namespace, config: TrainConfig, rated: list[Any], *,
                 main_process: bool) -> int:
    """`train NAME` on rated data: every prompt with its K responses (`train_on_rated`)."""
    from rewardlab.training.grouped import train_on_rated

    result = train_on_rated(rated, config=config, output_dir=Path(args.output),
                            resume=args.resume, progress=not args.json)
    summary = {"output_dir": str(args.output), "train_prompts": result.n_prompts,
               "train_pairs": result.n_pairs, "ties": result.n_ties, "ties_mode": config.ties,
               "ranking": config.ranking, "tie_parameter": result.tie_parameter,
               "truncated_pairs": result.n_truncated, "train_loss": result.train_loss,
               "train_accuracy": result.train_accuracy, "seconds": result.seconds,
               "pairs_per_second": _pairs_per_second(
                   (result.n_pairs + (result.n_ties if config.ties != "drop" else 0)) * config.epochs,
                   result)}
    if main_process:
        emit(summary, as_json=args.json, render=lambda: "\n".join(
            f"{k.replace('_', ' ')}: {_shown(v)}" for k, v in summary.items()))
    return 0


def _pairs_per_second(planned: int, result: Any) -> float | None:
    """Pairs the run's steps trained per second of those steps (rewardlab.json's `train_seconds`,
    summed over a resumed run's calls): the same figure for a run trained whole, stopped by
    --max-steps, resumed, or found finished (whose call trained nothing, in 0 s); None when no
    step was timed. `planned` = the run's pairs × epochs, over all its `total_steps`."""
    info = result.model.info
    seconds, total = info.get("train_seconds", 0.0), info.get("total_steps", 0)
    if not seconds or not total:
        return None
    return float(planned * result.steps / total / seconds)


def _shown(value: Any) -> str:
    """A summary value as the text rendering shows it: floats to 4 digits, lists comma-joined."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    return str(value)


def _corr(value: float | None) -> str:
    return "n/a (constant input)" if value is None else f"{value:+.4f}"


def _render_metrics(m: EvalMetrics) -> str:
    lo, hi = m["accuracy_ci"]
    rows = [
        {"metric": "accuracy", "value": f"{m['accuracy']:.4f} (95% CI {lo:.4f}–{hi:.4f}), "
                                        f"{m['correct']:,}/{m['n']:,}"},
        {"metric": "mean reward gap (chosen − rejected)", "value": f"{m['reward_gap_mean']:.4f}"},
        {"metric": "BT negative log-likelihood", "value": f"{m['nll']:.4f}"},
        {"metric": "ECE (10 bins)", "value": f"{m['ece']:.4f}"},
        {"metric": "baseline: longer reply wins", "value": f"{m['longer_wins_accuracy']:.4f}"},
        {"metric": "baseline: shorter reply wins", "value": f"{m['shorter_wins_accuracy']:.4f}"},
        {"metric": "corr(reward, reply length)", "value": _corr(m["length_reward_corr"])},
        {"metric": "corr(reward gap, length gap)", "value": _corr(m["length_gap_corr"])},
    ]
    for subset, s in sorted(m["accuracy_by_subset"].items()):
        rows.append({"metric": f"accuracy on {subset or '(no subset)'}",
                     "value": f"{s['accuracy']:.4f} ({s['n']:,} pairs)"})
    return format_table(rows, ["metric", "value"])


def cmd_evaluate(args: argparse.Namespace) -> int:
    from rewardlab.evaluation.evaluate import evaluate_reward_model
    from rewardlab.models.reward_model import RewardModel
    from rewardlab.store.store import Store

    if args.suite is not None:
        return _evaluate_suite(args)
    if args.name is None:
        raise SourceError("give the dataset NAME to evaluate on, or --suite reward-bench FILE_OR_DIR")
    if args.output:  # a bad -o must not cost the evaluation
        check_output_file(args.output)
    model = RewardModel.load(args.checkpoint)
    store = Store(args.db)
    pairs = store.load_pairs(args.name, split=args.split)
    rated = _rated_prompts(store, args.name, split=args.split)
    result = evaluate_reward_model(model, pairs, progress=not args.json)
    metrics: dict[str, Any] = dict(result.metrics)
    if rated:  # ranking and tie metrics against the data's scores, next to today's pair metrics
        from rewardlab.evaluation.rated import evaluate_rated

        metrics.update(evaluate_rated(model, rated, progress=not args.json))
    if args.output:
        per_pair = [{"source_index": p.source_index, "subset": p.subset, "chosen_reward": c,
                     "rejected_reward": r} for p, c, r in
                    zip(pairs, result.chosen_rewards.tolist(), result.rejected_rewards.tolist())]
        payload = {"checkpoint": str(args.checkpoint), "dataset": args.name,
                   "split": args.split, "metrics": metrics, "pairs": per_pair}
        Path(args.output).write_text(json.dumps(to_jsonable(payload), indent=2))
    emit(metrics, as_json=args.json, render=lambda: _render_metrics(result.metrics) + (
        "\n\n" + _render_rated(metrics) if rated else ""))
    return 0


def _render_rated(metrics: dict[str, Any]) -> str:
    """The rated metrics as a table: value and 95% CI over prompts."""
    rows = []
    for name in ("pair_accuracy", "kendall_tau", "best_of_k_accuracy", "tie_accuracy", "tie_nll"):
        m = metrics.get(name)
        value = ("n/a (no tie model: train with --ties model)" if m is None and name.startswith("tie")
                 else "n/a" if m is None else
                 f"{m['value']:.4f} (95% CI {m['ci'][0]:.4f}–{m['ci'][1]:.4f}), "
                 f"{m['n_prompts']:,} prompts")
        rows.append({"metric": name.replace("_", " "), "value": value})
    share = metrics.get("tie_share")
    if share is not None:
        rows.append({"metric": "tie share (predicted / observed)",
                     "value": f"{share['predicted']:.4f} / {share['observed']:.4f}"})
    return format_table(rows, ["metric", "value"])


SUITES = ("reward-bench",)


def _render_suite(result: dict[str, Any]) -> str:
    rows = [{"section": name, "score": f"{s['score']:.4f}",
             "95% CI": f"{s['ci'][0]:.4f}–{s['ci'][1]:.4f}", "prompts": f"{s['n']:,}"}
            for name, s in result["sections"].items()]
    subsets = [{"subset": name, "accuracy": f"{s['accuracy']:.4f}", "prompts": f"{s['n']:,}"}
               for name, s in result["subsets"].items()]
    overall = ("n/a (not every section is present)" if result["score"] is None
               else f"{result['score']:.4f}")
    return "\n".join([
        f"RewardBench v{result['version']}: {result['prompts']:,} prompts, "
        f"{result['sequences']:,} responses scored; truncated to the model's window: "
        f"{result['n_truncated']:,} ({result['n_response_truncated']:,} into the response)",
        format_table(subsets, ["subset", "accuracy", "prompts"]), "",
        format_table(rows, ["section", "score", "95% CI", "prompts"]),
        f"score (mean of the sections): {overall}"])


def _evaluate_suite(args: argparse.Namespace) -> int:
    """`evaluate DIR --suite reward-bench FILE_OR_DIR`: the benchmark's own scores."""
    from rewardlab.evaluation.reward_bench import evaluate_reward_bench, read_reward_bench
    from rewardlab.models.reward_model import RewardModel

    suite, path = args.suite
    if suite not in SUITES:
        raise SourceError(f"--suite {suite!r}: known suites: {', '.join(SUITES)}")
    if args.name is not None:
        raise SourceError(f"--suite scores the benchmark's file, not a stored dataset: drop "
                          f"NAME ({args.name!r})")
    if args.output:
        check_output_file(args.output)
    read_reward_bench(path)  # a malformed file must not cost a model load
    result = evaluate_reward_bench(RewardModel.load(args.checkpoint), path, progress=not args.json)
    payload = result.to_json()
    if args.output:
        Path(args.output).write_text(json.dumps(to_jsonable(
            {**payload, "checkpoint": str(args.checkpoint), "rewards": result.rewards}), indent=2))
    emit(payload, as_json=args.json, render=lambda: _render_suite(payload))
    return 0


def read_score_file(path: str) -> list[dict[str, str]]:
    """Rows of `prompt`+`response` or `prompt`+`chosen`+`rejected`; errors name FILE:LINE."""
    rows: list[dict[str, str]] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise SourceError(f"{path}: cannot read ({e.strerror})") from e
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise SourceError(f"{path}:{lineno}: invalid JSON ({e.msg})") from e
        if not isinstance(row, dict):  # a list, string or number is valid JSON but not a row
            raise SourceError(f"{path}:{lineno}: expected a JSON object with prompt+response or "
                              f"prompt+chosen+rejected, got {type(row).__name__}")
        keys = {"prompt", "response"} if "response" in row else {"prompt", "chosen", "rejected"}
        missing = sorted(k for k in keys if not isinstance(row.get(k), str))
        if missing:
            raise SourceError(f"{path}:{lineno}: missing or non-text field(s) {', '.join(missing)}"
                              f"; expected prompt+response or prompt+chosen+rejected")
        rows.append(row)
    return rows


def _score_rows(model: RewardModel, rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    singles = [r for r in rows if "response" in r]
    pairs = [r for r in rows if "response" not in r]
    s = model.score([r["prompt"] for r in singles], [r["response"] for r in singles])
    c = model.score([r["prompt"] for r in pairs], [r["chosen"] for r in pairs])
    j = model.score([r["prompt"] for r in pairs], [r["rejected"] for r in pairs])
    it_s, it_p = iter(s), iter(zip(c, j, _tie_probs(model, c, j)))
    out = []
    for r in rows:
        if "response" in r:
            out.append({**r, "reward": next(it_s)})
        else:
            rc, rr, probs = next(it_p)
            out.append({**r, "chosen_reward": rc, "rejected_reward": rr, "margin": rc - rr,
                        **probs})
    return out


def _tie_probs(model: RewardModel, chosen: list[float], rejected: list[float]
               ) -> list[dict[str, float]]:
    """P(chosen wins), P(tie), P(rejected wins) per pair under the model's tie model (`--ties
    model`); {} per pair for a model without one. `serve`'s /compare gives the same numbers."""
    from rewardlab.evaluation.outcomes import pair_outcomes
    from rewardlab.training.ties import tie_model_of

    return pair_outcomes(tie_model_of(model.info), chosen, rejected)


def cmd_score(args: argparse.Namespace) -> int:
    from rewardlab.models.reward_model import RewardModel

    if bool(args.file) == (args.prompt is not None or args.response is not None):
        raise SourceError("give either --prompt and --response, or --file pairs.jsonl")
    if not args.file and (args.prompt is None or args.response is None):
        raise SourceError("--prompt and --response go together")
    rows = read_score_file(args.file) if args.file else [
        {"prompt": args.prompt, "response": args.response}]
    scored = _score_rows(RewardModel.load(args.checkpoint), rows)
    if args.json:
        emit(scored if args.file else scored[0], as_json=True, render=str)
    else:
        for r in scored:
            print(f"{r['reward']:.6f}" if "reward" in r else
                  f"chosen {r['chosen_reward']:.6f}  rejected {r['rejected_reward']:.6f}  "
                  f"margin {r['margin']:+.6f}" + (f"  P(win/tie/loss) {r['p_win']:.4f}/"
                                                  f"{r['p_tie']:.4f}/{r['p_loss']:.4f}"
                                                  if "p_tie" in r else ""))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this group's commands (parsers and handlers) to the top-level subparsers."""
    from rewardlab.cli.common import add_config_args
    from rewardlab.training.train_config import TrainConfig

    p = sub.add_parser("train", help="train a Bradley-Terry reward model on a dataset",
                       description="Train on the train split of NAME and save a standard "
                       "AutoModelForSequenceClassification checkpoint (num_labels=1) in DIR.")
    p.add_argument("name")
    p.add_argument("-o", "--output", required=True, metavar="DIR")
    p.add_argument("--select", choices=MODES, default="all",
                   help="clean = drop flagged pairs; random = drop as many at random (control); "
                        "both need the detectors' flags (`rewardlab flag NAME`)")
    p.add_argument("--treatment", choices=TREATMENTS, default="remove",
                   help="what --select clean does to flagged pairs")
    p.add_argument("--detectors", metavar="A,B,…",
                   help="detectors defining 'flagged' for --select clean/random; every one must "
                        "have run (default: the clean set, as `compare`'s: "
                        f"{', '.join(CLEAN_DETECTORS)}; an empty list is refused)")
    p.add_argument("--max-pairs", type=int, metavar="N",
                   help="sample N pairs, stratified by subset (default, or 0: all train pairs)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in DIR")
    p.add_argument("--config", metavar="FILE",
                   help="a JSON file of TrainConfig options (the flags below) at the top level; "
                        "flags given here override the file")
    add_config_args(p, TrainConfig, given_only=True)
    add_store_options(p, handler=cmd_train)

    p = sub.add_parser("evaluate", help="accuracy with CI, reward gap, NLL, ECE, length baselines",
                       description="Evaluate DIR on the test split of the stored dataset NAME, "
                       "or on a benchmark: --suite reward-bench FILE_OR_DIR (a local copy of "
                       "RewardBench v1 or v2, parquet or JSONL; per-subset accuracy and the "
                       "leaderboard's section scores, each with a CI).")
    p.add_argument("checkpoint", metavar="DIR")
    p.add_argument("name", nargs="?", default=None)
    p.add_argument("--suite", nargs=2, metavar=("SUITE", "FILE_OR_DIR"), default=None,
                   help=f"score a benchmark instead of a stored dataset ({', '.join(SUITES)})")
    p.add_argument("--split", choices=SPLITS, default="test")
    p.add_argument("-o", "--output", metavar="FILE", help="write metrics + per-pair scores as JSON")
    add_store_options(p, handler=cmd_evaluate)

    p = sub.add_parser("score", help="reward of a response (or a file of them)")
    p.add_argument("checkpoint", metavar="DIR")
    p.add_argument("--prompt", help="conversation so far, e.g. 'Human: How do I bake bread?'")
    p.add_argument("--response")
    p.add_argument("--file", help=".jsonl with prompt+response or prompt+chosen+rejected per line")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.set_defaults(handler=cmd_score)
