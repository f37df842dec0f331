"""verl's custom reward function, scored by a running `rewardlab serve`.

verl calls `compute_score(data_source=…, solution_str=…, ground_truth=…, extra_info=…)` once per
response, from several threads, with the decoded response only: the prompt must come from the
dataset's `extra_info` (`"prompt"`: a string or a message list, else `"question"`, the key verl's
own preprocessing scripts write). The server batches the concurrent calls. Configure it as

    custom_reward_function.path=pkg://rewardlab.integrations.verl
    custom_reward_function.name=compute_score
    +custom_reward_function.reward_kwargs.url=http://127.0.0.1:8000   # or $REWARDLAB_URL

(the token: `reward_kwargs.token` or $REWARDLAB_TOKEN). `ground_truth` is not used: a reward
model judges the response, not its distance to a reference.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from rewardlab.errors import SourceError
from rewardlab.integrations.client import RewardClient
from rewardlab.integrations.dialogue import completion_text, prompt_text

__all__ = ["PROMPT_KEYS", "compute_score"]

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


def compute_score(data_source: Any, solution_str: str, ground_truth: Any,
                  extra_info: Mapping[str, Any] | None = None, *, url: str | None = None,
                  token: str | None = None, timeout: float = 120.0, **_: Any) -> float:
    """The reward of `solution_str` for the prompt in `extra_info`, from the server at `url`.

    Extra keywords verl passes (e.g. `reward_router_address`) are accepted and ignored.
    """
    prompt = prompt_text(_prompt(extra_info))
    return _client(url, token, timeout).score([prompt], [completion_text(solution_str)])[0]
