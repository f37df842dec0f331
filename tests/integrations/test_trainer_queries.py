"""TRL's and verl's adapters read policy-rendered prompts, and verl's `batch` manager is served.

verl's `batch` reward manager (`verl/workers/reward_manager/batch.py`, volcengine/verl @b178a3c)
calls `compute_score(data_sources=…, solution_strs=…, ground_truths=…, extra_infos=…,
**reward_kwargs)` once per batch and wants one score per response; `naive`/`dapo` call it per
response with `data_source=`, `solution_str=`, …; `prime` positionally. All three are called
here the way verl's code calls them, against a loopback server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rewardlab.integrations import compute_score, trl_reward
from rewardlab.integrations.verl import compute_score_batch
from rewardlab.models.backbones import load_backbone
from rewardlab.models.reward_model import RewardModel
from rewardlab.web.serve import ServeConfig, create_serve_app
from rewardlab.web.server import background_server
from tests._tiny import make_tiny_backbone

CHATML = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
LLAMA3 = ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"
          "<|start_header_id|>assistant<|end_header_id|>\n\n")
QUESTIONS = ["What is the capital of France?", "Name a river.", "Tell me a joke."]
ANSWERS = ["Paris is the capital.", "The ocean river", "Why did the chicken cross the road?"]


@pytest.fixture(scope="module")
def rm(tmp_path_factory: pytest.TempPathFactory) -> RewardModel:
    backbone = make_tiny_backbone(tmp_path_factory.mktemp("bert"))
    model, tok = load_backbone(str(backbone), max_length=64, seed=0)
    return RewardModel.load(RewardModel(model, tok, max_length=64).save(
        tmp_path_factory.mktemp("rm"), info={}))


@pytest.fixture(scope="module")
def url(rm: RewardModel) -> Iterator[str]:
    with background_server(create_serve_app(rm, ServeConfig(precision="fp32"))) as base:
        yield base


def _expected(rm: RewardModel) -> list[float]:
    return rm.score([f"Human: {q}" for q in QUESTIONS], ANSWERS)


def test_trl_reward_reads_rendered_prompts_and_end_tokens(rm: RewardModel, url: str,
                                                          tmp_path: Path) -> None:
    prompts = [CHATML.format(QUESTIONS[0]), LLAMA3.format(QUESTIONS[1]),
               f"\n\nHuman: {QUESTIONS[2]}\n\nAssistant:"]
    completions = [ANSWERS[0] + "<|im_end|>", ANSWERS[1] + "<|eot_id|>", ANSWERS[2]]
    for source in (rm, url):
        got = trl_reward(source)(prompts=prompts, completions=completions)
        np.testing.assert_allclose(got, _expected(rm), rtol=1e-5, atol=1e-6)


def test_verl_batch_manager_call(rm: RewardModel, url: str) -> None:
    extras = [{"prompt": [{"role": "user", "content": QUESTIONS[0]}], "rollout_reward_scores": {}},
              {"prompt": CHATML.format(QUESTIONS[1])}, {"question": f"Human: {QUESTIONS[2]}"}]
    # exactly as verl's BatchRewardManager.verify calls it (reward_kwargs from the config)
    got = compute_score(data_sources=np.array(["hh"] * 3, dtype=object),
                        solution_strs=ANSWERS, ground_truths=[None] * 3, extra_infos=extras,
                        url=url)
    assert isinstance(got, list) and len(got) == 3
    np.testing.assert_allclose(got, _expected(rm), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(compute_score_batch(ANSWERS, extras, url=url), got, rtol=1e-6)
    # naive / dapo: one response per call, keywords; prime: positionally
    one = compute_score(data_source="hh", solution_str=ANSWERS[1], ground_truth=None,
                        extra_info=extras[1], url=url)
    positional = compute_score("hh", ANSWERS[2], None, extras[2], url=url)
    np.testing.assert_allclose([one, positional], got[1:], rtol=1e-6)
    with pytest.raises(ValueError, match="3 solution_strs but 2 extra_infos"):
        compute_score(data_sources=["hh"] * 3, solution_strs=ANSWERS, ground_truths=[None] * 3,
                      extra_infos=extras[:2], url=url)
