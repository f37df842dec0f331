"""The `rewardlab` command line: one module per command group, each holding its parsers and handlers."""

from rewardlab.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
