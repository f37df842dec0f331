"""verl's custom reward function, scored by a running `rewardlab serve`.

One function for verl's reward managers (checked against verl's own code, volcengine/verl
@b178a3c, January 2026):

* `naive` and `dapo` (`verl/workers/reward_manager/{naive,dapo}.py`, and the reward-loop
  managers of `verl/experimental/reward_loop/`) call it once per response:
  `compute_score(data_source=…, solution_str=…, ground_truth=…, extra_info=…)` → a float;
* `batch` (`verl/workers/reward_manager/batch.py`) calls it once per batch:
  `compute_score(data_sources=…, solution_strs=…, ground_truths=…, extra_infos=…)` → a list, one
  reward per response, sent to the server in one request;
* `prime` (`verl/workers/reward_manager/prime.py`) calls it positionally,
  `(data_source, solution_str, ground_truth, extra_info)`, in worker processes: the same as naive.

verl decodes the response alone (`skip_special_tokens=True`): the prompt must come from the
dataset's `extra_info` (`"prompt"`: a string, possibly rendered by the policy's chat template, or
a message list; else `"question"`, the key verl's own preprocessing scripts write). The server
batches concurrent calls. Configure it as

    custom_reward_function.path=pkg://rewardlab.integrations.verl
    custom_reward_function.name=compute_score
    +custom_reward_function.reward_kwargs.url=http://127.0.0.1:8000   # or $REWARDLAB_URL
    reward_model.reward_manager=batch                                 # or naive, dapo, prime

(the token: `reward_kwargs.token` or $REWARDLAB_TOKEN). `ground_truth` is not used: a reward
model judges the response, not its distance to a reference.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from rewardlab.errors import SourceError
from rewardlab.integrations.client import RewardClient
from rewardlab.integrations.dialogue import completion_text, prompt_text

__all__ = ["PROMPT_KEYS", "compute_score", "compute_score_batch"]

PROMPT_KEYS = ("prompt", "question")  # looked up in extra_info, in this order


@functools.lru_cache(maxsize=8)
def _client(url: str | None, token: str | None, timeout: float) -> RewardClient:
    return RewardClient(url, token=token, timeout=timeout)


def _prompt(extra_info: Mapping[str, Any] | None) -> Any:
    for key in PROMPT_KEYS:
        if extra_info and extra_info.get(key) is not None:
            return extra_info[key]
    raise SourceError("verl compute_score: extra_info has no 'prompt' (or 'question'): a reward "
                      "model scores a response to a prompt; add the prompt to extra_info when "
                      "preparing the dataset (e.g. extra_info={'prompt': messages})")


def compute_score(data_source: Any = None, solution_str: str | None = None,
                  ground_truth: Any = None, extra_info: Mapping[str, Any] | None = None, *,
                  url: str | None = None, token: str | None = None, timeout: float = 120.0,
                  **kwargs: Any) -> float | list[float]:
    """The reward of `solution_str` for the prompt in `extra_info`, from the server at `url`.

    Called the `batch` manager's way (`solution_strs=`, `extra_infos=`, …), it is
    `compute_score_batch` and returns one reward per response. Other keywords verl passes (e.g.
    `reward_router_address`) are accepted and ignored.
    """
    if "solution_strs" in kwargs:
        return compute_score_batch(**kwargs, url=url, token=token, timeout=timeout)
    if solution_str is None:
        raise TypeError("compute_score needs solution_str (one response) or solution_strs (a "
                        "batch, as verl's `batch` reward manager passes)")
    prompt = prompt_text(_prompt(extra_info))
    return _client(url, token, timeout).score([prompt], [completion_text(solution_str)])[0]


def compute_score_batch(solution_strs: Sequence[str],
                        extra_infos: Sequence[Mapping[str, Any] | None] | None = None, *,
                        data_sources: Sequence[Any] | None = None,
                        ground_truths: Sequence[Any] | None = None, url: str | None = None,
                        token: str | None = None, timeout: float = 120.0,
                        **_: Any) -> list[float]:
    """verl's `batch` reward manager: one reward per response, in one request to the server."""
    infos = list(extra_infos) if extra_infos is not None else [None] * len(solution_strs)
    if len(infos) != len(solution_strs):
        raise ValueError(f"{len(solution_strs)} solution_strs but {len(infos)} extra_infos")
    prompts = [prompt_text(_prompt(info)) for info in infos]
    return _client(url, token, timeout).score(prompts, [completion_text(s) for s in solution_strs])
