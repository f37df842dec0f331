"""CLI handler for `rewardlab serve DIR`: a reward model over HTTP for RL loops.

Every option is checked (ranges, the bind/token rule, a free port) before the model loads: a typo
must cost a second, not a model load. The model loads once, then uvicorn serves until SIGTERM or
Ctrl-C, letting in-flight requests finish.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from rewardlab.cli.common import add_config_args, server_config
from rewardlab.errors import ModelError

__all__ = ["register", "cmd_serve"]

log = logging.getLogger("rewardlab.serve")


def cmd_serve(args: argparse.Namespace) -> int:
    from rewardlab.web.serve.serve_config import ServeConfig

    config, token = server_config(ServeConfig, args, command="rewardlab serve")
    if not (Path(args.checkpoint) / "config.json").is_file():
        raise ModelError(f"no model at {args.checkpoint}: expected a checkpoint directory (from "
                         f"`rewardlab train`, or any HF reward model with config.json)")
    from rewardlab.web.server import check_port_free

    check_port_free(config.host, config.port)

    from rewardlab.models.reward_model import RewardModel
    from rewardlab.web.serve.reward_api import create_serve_app
    from rewardlab.web.serve.scoring import use_threads_per_worker
    from rewardlab.web.server import run_server

    model = RewardModel.load(args.checkpoint)
    use_threads_per_worker(model, config.workers)  # this process only serves
    app = create_serve_app(model, config, token=token, model_dir=str(args.checkpoint))
    serving = app.state.facts["serving"]
    log.info("rewardlab serve: %s (%s, input rule %s) on %s, %s; batches of up to %d, wait %g ms, "
             "%d worker(s) x %d thread(s); queries: %s; auth %s", args.checkpoint,
             app.state.facts["model"]["architecture"], app.state.facts["model"]["input_rule"],
             serving["device"], serving["precision"], config.max_batch, config.max_wait_ms,
             serving["workers"], serving["threads_per_worker"], app.state.facts["queries"]["source"],
             "bearer token" if token else "off (loopback)")
    run_server(app, host=config.host, port=config.port)
    return 0


def _field_help(cls: type, name: str) -> str:
    return str(next(f for f in dataclasses.fields(cls) if f.name == name).metadata["help"])


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `serve` (parser and handler) to the top-level subparsers."""
    from rewardlab.web.security import TOKEN_ENV
    from rewardlab.web.serve.serve_config import ServeConfig

    p = sub.add_parser(
        "serve", help="serve a reward model over HTTP (OpenRLHF /get_reward, /score, /compare)",
        description="Load the checkpoint DIR once and serve it: POST /get_reward (OpenRLHF's "
        "remote reward model), /score, /compare; GET /health, /info. Requests arriving together "
        "are scored in one batch. Binds 127.0.0.1 unless told otherwise; any other address "
        "needs a token. Protocol: docs/serving.md.")
    p.add_argument("checkpoint", metavar="DIR")
    p.add_argument("--token", metavar="T", default=None,
                   help=f"require 'Authorization: Bearer T' on every route but /health "
                        f"(default: ${TOKEN_ENV}, else no auth, loopback only)")
    add_config_args(p, ServeConfig, title="ServeConfig (reported by /info)", skip=("allow_hosts",))
    p.add_argument("--allow-host", dest="allow_hosts", action="append", default=[], metavar="NAME",
                   help=_field_help(ServeConfig, "allow_hosts") + " (repeat for several)")
    p.set_defaults(handler=cmd_serve)
