"""CLI handlers for the data side: ingest, datasets, flag, flags show/export/import/review."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import TYPE_CHECKING, Any

from rewardlab.cli.common import add_store_options, check_at_least, emit, format_table
from rewardlab.data.pairs import SPLITS
from rewardlab.errors import RewardlabError

if TYPE_CHECKING:
    from rewardlab.flags.flagging import FlagSummaryRow
    from rewardlab.store.records import FlagRow
    from rewardlab.store.store import IngestCounts, Store

__all__ = ["register", "cmd_ingest", "cmd_datasets", "cmd_flag", "cmd_flags_show", "cmd_flags_export",
           "cmd_flags_import", "cmd_flags_review", "detector_params", "split_names"]


def split_names(value: str | None, flag: str = "--detectors") -> list[str] | None:
    """'a, b,c' → ['a', 'b', 'c']; None (not given) → None, meaning the command's default.

    A given list that names nothing ('', ',,') is refused: it is most likely an empty shell
    variable, and neither "the default" nor "whatever ran before" is what it asked for.
    """
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise RewardlabError(f"{flag} {value!r} names nothing; leave {flag} out for the default")
    return names


def _store(args: argparse.Namespace) -> Store:
    from rewardlab.store.store import Store

    return Store(args.db)


def _rated_line(counts: IngestCounts) -> str:
    """What a rated source held: "200 votes: 40 ties (not in pairs), 160 pairs" or "60 prompts
    × 4 responses = 240 responses, 360 pairs" (ties, when any, are in no pair)."""
    ties = f"{counts.ties:,} ties (not in pairs), " if counts.ties else ""
    if counts.rated_kind == "vote":
        return f"{counts.rated_prompts:,} votes: {ties}{counts.pairs:,} pairs"
    per = counts.rated_responses / counts.rated_prompts if counts.rated_prompts else 0
    k = f"{per:.0f}" if per == int(per) else f"{per:.1f} (mean)"
    return (f"{counts.rated_prompts:,} prompts × {k} responses = {counts.rated_responses:,} "
            f"responses, {ties}{counts.pairs:,} pairs")


def _render_ingest(counts: IngestCounts) -> str:
    groups = [{"split/subset": g, **c} for g, c in sorted(counts.by_group.items())]
    reasons = Counter(reason for _, reason in counts.rejected)
    if counts.rated_kind is None:
        head = f"read {counts.read:,} pairs, ingested"
    else:  # rows read differ from pairs: a tie is in none, a prompt of K in K(K-1)/2
        head = f"{_rated_line(counts)}; new prompts {counts.rated_ingested:,}, pairs ingested"
    lines = [f"dataset {counts.dataset!r}: {head} "
             f"{counts.ingested:,}, already present {counts.already_present:,}, rejected "
             f"{len(counts.rejected):,}", ""]
    if counts.replaced:
        lines.insert(0, f"replaced dataset {counts.dataset!r}: its earlier pairs, flags and "
                        "reviews are gone")
    lines.append(format_table(groups, ["split/subset", "ingested", "already_present"]))
    for reason, n in reasons.most_common():
        first = [i for i, r in counts.rejected if r == reason][:5]
        lines.append(f"rejected {n:,}: {reason} (source indices {', '.join(map(str, first))}…)")
    # kept pairs whose dialogue did not parse cleanly: stored, but the user should know
    issues = Counter(issue for _, issue in counts.parse_issues)
    for issue, n in issues.most_common():
        first = [i for i, r in counts.parse_issues if r == issue][:5]
        lines.append(f"parse issues {n:,} (kept): {issue} (source indices "
                     f"{', '.join(map(str, first))}…)")
    return "\n".join(lines)


def cmd_ingest(args: argparse.Namespace) -> int:
    from rewardlab.data.sources import read_source

    source = read_source(args.source, split=args.split, test_fraction=args.test_fraction,
                         limit=args.limit, score_field=args.score_field)
    counts = _store(args).ingest(args.name, source, replace=args.replace)
    emit(counts, as_json=args.json, render=lambda: _render_ingest(counts))
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    rows = _store(args).dataset_summaries()
    table = [{"name": r["name"], "train": r["pairs"].get("train", 0),
              "test": r["pairs"].get("test", 0), "flagged": r["flagged"],
              "detectors": len(r["detectors"]), "source": r["source"],
              "prompts": r["rated_prompts"], "responses": r["rated_responses"],
              "ties": r["ties"]} for r in rows]
    # the rated columns only where some dataset holds rated data (issue 32)
    rated = ["prompts", "responses", "ties"] if any(r["rated_prompts"] for r in rows) else []
    columns = ["name", "train", "test", *rated, "flagged", "detectors", "source"]
    emit(rows, as_json=args.json, render=lambda: format_table(table, columns)
         if rows else "no datasets yet: run `rewardlab ingest SOURCE --name NAME`")
    return 0


# `flag` options that become llm_judge parameters (flag → LlmJudge field)
_JUDGE_OPTIONS = {"judge_url": "url", "judge_model": "models", "judge_key_env": "key_env",
                  "judge_template": "template", "judge_concurrency": "concurrency",
                  "judge_timeout": "timeout", "judge_retries": "retries"}


def detector_params(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Detector parameters from `--param DETECTOR.KEY=VALUE` and the `--judge-*` options (values
    stay strings where given as such: `get_detector` converts them to each field's type)."""
    params: dict[str, dict[str, Any]] = {}
    for item in args.param or []:
        target, sep, value = item.partition("=")
        detector, dot, key = target.strip().partition(".")
        if not (sep and dot and detector and key):
            raise RewardlabError(f"--param {item!r}: expected DETECTOR.KEY=VALUE, e.g. "
                                 "preference_strength.mode=finetune")
        params.setdefault(detector, {})[key.strip()] = value.strip()
    judge = {field: getattr(args, flag) for flag, field in _JUDGE_OPTIONS.items()
             if getattr(args, flag, None) is not None}
    if judge:
        params.setdefault("llm_judge", {}).update(judge)
    if "url" in params.get("llm_judge", {}):
        from rewardlab.flags.detectors.judge import check_judge_url

        # a password in the URL is refused here, before the store opens: it would be stored
        check_judge_url(str(params["llm_judge"]["url"]))
    return params


def _render_flag(name: str, n_train: int, rows: list[FlagSummaryRow],
                 notes: dict[str, list[str]]) -> str:
    # rates in percent, as the report prints them (the JSON keeps the fraction)
    shown = [{**r, "rate": f"{100 * r['rate']:.1f}%"} for r in rows]
    lines = [f"{n_train:,} train pairs in {name!r}", "",
             format_table(shown, ["detector", "flagged", "rate", "threshold", "threshold_kind"])]
    # what a detector must say beyond its counts: unjudged pairs, failed calls, tokens, shares
    lines += [""] * bool(notes) + [f"{det}: {note}" for det, det_notes in notes.items()
                                   for note in det_notes]
    return "\n".join(lines)


def cmd_flag(args: argparse.Namespace) -> int:
    from rewardlab.flags.flagging import flag_dataset, flag_summary

    params = detector_params(args)  # before the store opens: a bad option costs nothing
    store = _store(args)
    results = flag_dataset(store, args.name, detectors=split_names(args.detectors),
                           params=params, progress=not args.json)
    n_train = len(results[0].flagged) if results else 0
    rows = flag_summary(results, n_train)
    notes = {r.detector: [str(n) for n in r.params["notes"]] for r in results
             if r.params.get("notes")}
    emit({"dataset": args.name, "train_pairs": n_train, "detectors": rows, "notes": notes},
         as_json=args.json, render=lambda: _render_flag(args.name, n_train, rows, notes))
    # a judge that answered nothing (every call failed) is a failed run, not "0 flagged";
    # some pairs judged is a result, with its failures in the notes
    blind = [r.detector for r in results if r.params.get("judged") == 0 and r.params.get("unjudged")]
    for detector in blind:
        print(f"rewardlab: error: {detector} judged none of the {n_train:,} pairs: every call "
              "failed or did not parse (the notes say why)", file=sys.stderr)
    return 1 if blind else 0


def _shorten(text: str, width: int = 300) -> str:
    """Display-only shortening, marked with its full length so nothing looks complete that isn't."""
    text = " ".join(text.split())
    return text if len(text) <= width else f"{text[:width]}… [{len(text):,} chars]"


def _render_flag_rows(rows: list[FlagRow]) -> str:
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
    check_at_least("--limit", args.limit, 0)  # SQLite reads LIMIT -1 as "all", PostgreSQL refuses it
    rows = _store(args).flag_rows(args.name, detector=args.detector, limit=args.limit)
    emit(rows, as_json=args.json, render=lambda: _render_flag_rows(rows))
    return 0


def cmd_flags_export(args: argparse.Namespace) -> int:
    from rewardlab.flags.flagging import export_flagged_indices, write_indices

    indices = export_flagged_indices(_store(args), args.name,
                                     detectors=split_names(args.detectors))
    write_indices(args.output, indices)
    emit({"file": args.output, "indices": len(indices)}, as_json=args.json,
         render=lambda: f"wrote {len(indices):,} flagged train indices to {args.output}")
    return 0


def cmd_flags_import(args: argparse.Namespace) -> int:
    from rewardlab.flags.flagging import import_flagged_indices, read_indices

    indices = read_indices(args.file)
    result = import_flagged_indices(_store(args), args.name, indices, label=args.label,
                                    path=args.file)
    n = int(result.flagged.sum())
    emit({"detector": args.label, "indices": len(indices), "flagged_pairs": n},
         as_json=args.json, render=lambda: f"imported {len(indices):,} indices from {args.file} "
         f"as detector {args.label!r}: {n:,} train pairs flagged")
    return 0


def cmd_flags_review(args: argparse.Namespace) -> int:
    from rewardlab.flags.flagging import review_flag

    store = _store(args)
    review_id = review_flag(store, args.name, source_index=args.source_index,
                            detector=args.detector, is_issue=args.is_issue, note=args.note,
                            split=args.split, subset=args.subset)
    label = "true positive" if args.is_issue else "false positive"
    emit({"review_id": review_id, "is_issue": args.is_issue}, as_json=args.json,
         render=lambda: f"recorded review #{review_id}: pair {args.source_index} is a {label} "
         f"of {args.detector}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this group's commands (parsers and handlers) to the top-level subparsers."""

    p = sub.add_parser("ingest", help="read preference pairs into the store",
                       description="Read pairs from SOURCE: a .jsonl/.jsonl.gz HH-RLHF file, a "
                       "directory laid out like anthropics/hh-rlhf, an explicit-prompt file "
                       "(.jsonl .json .csv .parquet; prompt/chosen/rejected or TRL conversational), "
                       "'hh-rlhf[:subset]' from the hub, or 'synthetic:n=…,noise=…,seed=…'. "
                       "Rated files are kept whole, pairs derived (docs/ties.md): Arena votes "
                       "with ties, UltraFeedback and HelpSteer2 ratings, rankings, and "
                       "'synthetic:n=…,k=K,ties=T'.")
    p.add_argument("source")
    p.add_argument("--name", required=True, help="dataset name in the store")
    p.add_argument("--split", choices=SPLITS, help="split of a single-split source")
    p.add_argument("--test-fraction", type=float, metavar="F",
                   help="carve a test split by prompt hash (no prompt in both splits)")
    p.add_argument("--limit", type=int, metavar="N", help="read at most N rows (per split)")
    p.add_argument("--score-field", metavar="NAME",
                   help="rated completions: the field that is the rating (default: "
                        "UltraFeedback overall_score, else score; HelpSteer2 helpfulness)")
    p.add_argument("--replace", action="store_true",
                   help="replace the dataset (its pairs, flags, detector runs and reviews) with "
                        "SOURCE in one transaction; without it, a source other than the one the "
                        "dataset was ingested from is refused")
    add_store_options(p, handler=cmd_ingest)

    p = sub.add_parser("datasets", help="list datasets with pair and flag counts")
    add_store_options(p, handler=cmd_datasets)

    p = sub.add_parser("flag", help="run detectors on a dataset's train pairs and store the flags")
    p.add_argument("name")
    p.add_argument("--detectors", metavar="A,B,…",
                   help="default: every rule detector (the default clean set of `train --select "
                        "clean` and `compare`, plus unsafe_prompt, refusal_bias, over_length and "
                        "rating_conflict)")
    p.add_argument("--param", action="append", metavar="DETECTOR.KEY=VALUE",
                   help="a detector parameter, repeatable: e.g. preference_strength.mode=finetune, "
                        "preference_strength.threshold=0, oof_margin.folds=3, oof_margin.epochs=2")
    judge = p.add_argument_group("llm_judge (with --detectors …,llm_judge)")
    judge.add_argument("--judge-url", metavar="URL",
                       help="base URL of an OpenAI-compatible API (OpenAI, vLLM, Ollama, llama.cpp "
                            "server): POST URL/chat/completions, e.g. http://localhost:11434/v1")
    judge.add_argument("--judge-model", metavar="NAME[,NAME…]",
                       help="judge model(s); several vote")
    judge.add_argument("--judge-key-env", metavar="VAR",
                       help="environment variable holding the API key, sent as a Bearer token "
                            "(default: OPENAI_API_KEY; unset: no key)")
    judge.add_argument("--judge-template", metavar="FILE",
                       help="prompt and rubric (default: the bundled judge_template.md)")
    judge.add_argument("--judge-concurrency", type=int, metavar="N",
                       help="requests in flight (default: 4)")
    judge.add_argument("--judge-timeout", type=float, metavar="S",
                       help="deadline in seconds for a whole request, connect to last byte (default: 60)")
    judge.add_argument("--judge-retries", type=int, metavar="N",
                       help="retries on 429, 5xx, timeouts and dropped connections, with "
                            "exponential backoff and Retry-After honoured (default: 4)")
    add_store_options(p, handler=cmd_flag)

    flags = sub.add_parser("flags", help="show, export, import and review flags")
    fsub = flags.add_subparsers(dest="flags_command", required=True, metavar="COMMAND")
    p = fsub.add_parser("show", help="flagged pairs with prompt, replies and reason")
    p.add_argument("name")
    p.add_argument("--detector")
    p.add_argument("--limit", type=int, default=20)
    add_store_options(p, handler=cmd_flags_show)
    p = fsub.add_parser("export", help="write flagged_indices.json (sorted source indices)")
    p.add_argument("name")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--detectors", metavar="A,B,…", help="default: every detector that ran")
    add_store_options(p, handler=cmd_flags_export)
    p = fsub.add_parser("import", help="store a flagged_indices.json as a detector run")
    p.add_argument("name")
    p.add_argument("file")
    p.add_argument("--as", dest="label", required=True, metavar="LABEL",
                   help="detector name to store the imported flags under")
    add_store_options(p, handler=cmd_flags_import)
    p = fsub.add_parser("review", help="label a flagged pair as a true or false positive")
    p.add_argument("name")
    p.add_argument("source_index", type=int)
    p.add_argument("--detector", required=True)
    verdict = p.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--issue", dest="is_issue", action="store_true",
                         help="the flag is right (true positive)")
    verdict.add_argument("--not-issue", dest="is_issue", action="store_false",
                         help="the flag is wrong (false positive)")
    p.add_argument("--note", default="")
    p.add_argument("--split", choices=SPLITS, default="train")
    p.add_argument("--subset", help="subset of the pair, when several subsets share the index")
    add_store_options(p, handler=cmd_flags_review)
