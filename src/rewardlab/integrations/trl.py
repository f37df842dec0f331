"""TRL's GRPOTrainer reward function from a rewardlab model: `reward_funcs=[trl_reward("m")]`.

GRPOTrainer calls each reward function as `f(prompts=…, completions=…, completion_ids=…, **columns)`
(the dataset's other columns, `trainer_state`, `log_extra`, `log_metric` as keywords) and wants one
float per completion. Prompts and completions are strings (standard data) or message lists
(conversational data); both become rewardlab's (prompt, response) as `dialogue.py` describes.

>>> from rewardlab.models.backbones import load_backbone
>>> reward = trl_reward(RewardModel(*load_backbone("bow", max_length=64, seed=0), max_length=64))
>>> conversation = [{"role": "user", "content": "hi"}]
>>> rewards = reward(prompts=["Human: hi", conversation], completions=["Hello!", "Hello!"])
>>> len(rewards), abs(rewards[0] - rewards[1]) < 1e-6  # one dialogue, as a string or as messages
(2, True)

With TRL (a checkpoint directory, or the URL of a running `rewardlab serve`):

    trainer = GRPOTrainer(model=policy, reward_funcs=[trl_reward("out/rm")], args=GRPOConfig(...),
                          train_dataset=prompts)
    trl_reward("http://127.0.0.1:8000")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rewardlab.integrations.client import RewardClient, is_url
from rewardlab.integrations.dialogue import Messages, completion_text, prompt_text
from rewardlab.models.reward_model import RewardModel

__all__ = ["TrlReward", "trl_reward"]


class TrlReward:
    """A picklable reward callable; TRL logs it under `__name__` ("rewardlab")."""

    def __init__(self, source: RewardModel | RewardClient, *, batch_size: int = 32,
                 name: str = "rewardlab") -> None:
        self.source = source
        self.batch_size = batch_size
        self.__name__ = name

    def __call__(self, prompts: Sequence[str | Messages], completions: Sequence[str | Messages],
                 **kwargs: Any) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        texts = [prompt_text(p) for p in prompts]
        responses = [completion_text(c) for c in completions]
        if isinstance(self.source, RewardClient):
            return self.source.score(texts, responses)
        return self.source.score(texts, responses, batch_size=self.batch_size)


def trl_reward(model: str | Path | RewardModel, *, token: str | None = None,
               batch_size: int = 32, timeout: float = 120.0) -> TrlReward:
    """A GRPOTrainer reward function: `(prompts, completions, **kw) -> list[float]`.

    `model` is a checkpoint directory (loaded here, once, and scored in-process), a loaded
    `RewardModel`, or the URL of a running `rewardlab serve` (`token` or $REWARDLAB_TOKEN for its
    bearer token). Either way the rewards equal `rewardlab score` on the same texts.
    """
    if isinstance(model, RewardModel):
        return TrlReward(model, batch_size=batch_size)
    if is_url(model):
        return TrlReward(RewardClient(str(model), token=token, timeout=timeout))
    return TrlReward(RewardModel.load(model), batch_size=batch_size)
