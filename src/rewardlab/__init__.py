"""rewardlab: does cleaning my preference data give me a better reward model?

The stages, in the order data flows through them (one subpackage each; imports point one way):
data → store → models → training → evaluation → flags → report → experiment → cli.

>>> import tempfile
>>> import rewardlab as rl
>>> source = rl.read_source("synthetic:n=200,noise=0.2,seed=0")  # 20% of train labels flipped
>>> store = rl.Store(f"sqlite:///{tempfile.mkdtemp()}/rewardlab.db")
>>> store.ingest("toy", source).ingested
250
>>> train, test = store.load_pairs("toy", split="train"), store.load_pairs("toy", split="test")
>>> [flags] = rl.flag_dataset(store, "toy", detectors=["length_ratio"], progress=False)
>>> flagged = {pair.example_id for pair, flag in zip(train, flags.flagged) if flag}
>>> clean = rl.select_training_pairs(train, flagged, mode="clean")
>>> config = rl.TrainConfig(model="bow", epochs=3, precision="fp32")  # bow: seconds on a CPU
>>> result = rl.train_reward_model(clean.pairs, config=config, progress=False)
>>> rl.evaluate_reward_model(result.model, test, progress=False).metrics["accuracy"] > 0.6
True
>>> store.close()

Names load on first use (PEP 562), so `import rewardlab` and `rewardlab --help` do not pay for
torch and transformers until a model is needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rewardlab._version import __version__

if TYPE_CHECKING:
    from rewardlab.data.pairs import PreferencePair
    from rewardlab.data.sources import SourceResult, read_source
    from rewardlab.errors import RewardlabError
    from rewardlab.evaluation.evaluate import EvalResult, evaluate_reward_model
    from rewardlab.experiment.compare import run_comparison
    from rewardlab.experiment.compare_config import CompareConfig
    from rewardlab.flags.detectors import get_detector
    from rewardlab.flags.flagging import flag_dataset
    from rewardlab.flags.selection import select_training_pairs
    from rewardlab.models.reward_model import RewardModel
    from rewardlab.report.build import write_report
    from rewardlab.store.store import Store
    from rewardlab.training.loop import TrainResult, train_reward_model
    from rewardlab.training.train_config import TrainConfig

# public name → the module that defines it (the same names as __all__; a test checks)
_API: dict[str, str] = {
    "PreferencePair": "rewardlab.data.pairs",
    "SourceResult": "rewardlab.data.sources",
    "read_source": "rewardlab.data.sources",
    "RewardlabError": "rewardlab.errors",
    "Store": "rewardlab.store.store",
    "RewardModel": "rewardlab.models.reward_model",
    "TrainConfig": "rewardlab.training.train_config",
    "TrainResult": "rewardlab.training.loop",
    "train_reward_model": "rewardlab.training.loop",
    "EvalResult": "rewardlab.evaluation.evaluate",
    "evaluate_reward_model": "rewardlab.evaluation.evaluate",
    "get_detector": "rewardlab.flags.detectors",
    "flag_dataset": "rewardlab.flags.flagging",
    "select_training_pairs": "rewardlab.flags.selection",
    "write_report": "rewardlab.report.build",
    "CompareConfig": "rewardlab.experiment.compare",
    "run_comparison": "rewardlab.experiment.compare",
}

__all__ = [
    "__version__",
    "PreferencePair",
    "SourceResult",
    "read_source",
    "RewardlabError",
    "Store",
    "RewardModel",
    "TrainConfig",
    "TrainResult",
    "train_reward_model",
    "EvalResult",
    "evaluate_reward_model",
    "get_detector",
    "flag_dataset",
    "select_training_pairs",
    "write_report",
    "CompareConfig",
    "run_comparison",
]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'rewardlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
