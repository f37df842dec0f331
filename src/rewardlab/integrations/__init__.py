"""Adapters for the RL trainers people use: TRL's GRPOTrainer (`trl_reward`), verl
(`compute_score`), and the HTTP client both use (`RewardClient`). OpenRLHF needs none: it calls
`rewardlab serve`'s `/get_reward` itself (`--reward.remote_url http://host:port/get_reward`).

Names load on first use: `rewardlab.integrations.verl` is imported by verl in every reward worker,
and needs neither torch nor transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rewardlab.integrations.client import RewardClient
    from rewardlab.integrations.trl import TrlReward, trl_reward
    from rewardlab.integrations.verl import compute_score

_API = {"RewardClient": "client", "TrlReward": "trl", "trl_reward": "trl",
        "compute_score": "verl"}

__all__ = ["RewardClient", "TrlReward", "compute_score", "trl_reward"]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
