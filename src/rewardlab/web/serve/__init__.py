"""`rewardlab serve`: a reward model over HTTP for RL loops (OpenRLHF's `/get_reward`, `/score`,
`/compare`), dynamic micro-batching, safe by default. The protocol is in docs/serving.md.

>>> from rewardlab.web.serve import ServeConfig, create_serve_app
>>> ServeConfig(max_batch=64).max_batch
64

`create_serve_app(RewardModel.load("m"), ServeConfig(max_batch=64), model_dir="m")` is the app
(reward_api.py); `rewardlab.integrations.client` has one running.

Names load on first use, so the CLI reads `ServeConfig` (and validates options) without paying
for torch, transformers and FastAPI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rewardlab.web.serve.batcher import BatchStats, MicroBatcher, Scored
    from rewardlab.web.serve.reward_api import OPEN_PATHS, create_serve_app
    from rewardlab.web.serve.serve_config import ServeConfig

_API = {"OPEN_PATHS": "reward_api", "create_serve_app": "reward_api", "BatchStats": "batcher",
        "MicroBatcher": "batcher", "Scored": "batcher", "ServeConfig": "serve_config"}

__all__ = ["OPEN_PATHS", "BatchStats", "MicroBatcher", "Scored", "ServeConfig", "create_serve_app"]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
