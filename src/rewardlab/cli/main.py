"""`rewardlab` command line: parses, calls the library, prints. No logic of its own.

Each command group (`cli.data`, `cli.model`, `cli.experiment`) holds its parsers and handlers
together and adds them with `register(sub)`.

argparse (stdlib) rather than typer/click: one dependency fewer, and the training flags are generated
from the `TrainConfig` dataclass, which argparse does in a dozen lines.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from rewardlab._version import __version__
from rewardlab.cli import data, experiment, model, review, serve
from rewardlab.errors import RewardlabError
from rewardlab.training.memory import bound_onednn_cache, exec_with_jemalloc

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rewardlab",
        description="Does cleaning my preference data give me a better reward model?")
    parser.add_argument("--version", action="version", version=f"rewardlab {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (data, model, experiment, serve, review):
        group.register(sub)
    return parser


def _detach_stdout() -> None:
    """Point stdout at devnull, so the interpreter's last flush into the closed pipe is silent too
    (the recipe of Python's `signal` docs, "Note on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (captured): nothing to flush
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `rewardlab` console script; returns the exit code."""
    if argv is None:
        exec_with_jemalloc()  # returns at once where it does not apply (training/memory.py)
    # TOKENIZERS_PARALLELISM is left to the user: nothing here forks after tokenizing, and the
    # tokenizer's own threads encode the 1,030-pair HH sample in 0.7 s instead of 1.1 s (2 cores)
    args = build_parser().parse_args(argv)
    bound_onednn_cache()  # before any command's first bf16 matmul: oneDNN reads it once
    # Progress lines go to stderr so `--json` output on stdout stays one clean document.
    # rewardlab's own progress lines at INFO; third-party libraries only speak up from WARNING on
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("rewardlab").setLevel(logging.INFO)
    try:
        code = int(args.handler(args) or 0)
        sys.stdout.flush()  # a reader that went away (`| head -1`) shows up here, not at exit
        return code
    except BrokenPipeError:
        _detach_stdout()
        return 141  # 128 + SIGPIPE, as a command killed by the closed pipe would report
    except RewardlabError as e:
        if args.debug:
            traceback.print_exc()
        print(f"rewardlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rewardlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
