"""Trainer adapters: TRL's GRPOTrainer (`trl_reward`, local and over HTTP) and verl (`compute_score`).

The TRL test runs a real one-step GRPOTrainer with a tiny random Qwen2 policy, so the reward
function is called exactly as TRL calls it; rewards must equal `RewardModel.score` on the texts
the adapter derives (`integrations.dialogue`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rewardlab.errors import SourceError, WebError
from rewardlab.integrations import RewardClient, TrlReward, compute_score, trl_reward
from rewardlab.integrations.dialogue import completion_text, prompt_text
from rewardlab.models.backbones import load_backbone
from rewardlab.models.reward_model import RewardModel
from rewardlab.web.serve import ServeConfig, create_serve_app
from rewardlab.web.server import background_server, free_port
from tests._tiny import make_tiny_backbone, make_tiny_decoder

TOKEN = "integration-token"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    backbone = make_tiny_backbone(tmp_path_factory.mktemp("tiny-bert"))
    model, tok = load_backbone(str(backbone), max_length=64, seed=0)
    return RewardModel(model, tok, max_length=64).save(tmp_path_factory.mktemp("rm"), info={})


@pytest.fixture(scope="module")
def rm(checkpoint: Path) -> RewardModel:
    return RewardModel.load(checkpoint)


@pytest.fixture(scope="module")
def url(rm: RewardModel) -> Iterator[str]:
    with background_server(create_serve_app(rm, ServeConfig(precision="fp32"), token=TOKEN)) as base:
        yield base


def _expected(rm: RewardModel, prompts: list[Any], completions: list[Any]) -> list[float]:
    return rm.score([prompt_text(p) for p in prompts], [completion_text(c) for c in completions])


# --- the texts ------------------------------------------------------------------------------------

def test_conversations_become_hh_prompts() -> None:
    messages = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": " Hi "},
                {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": [{"type": "text", "text": "A joke?"},
                                             {"type": "image"}]}]
    assert prompt_text(messages) == "Be kind.\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: A joke?"
    assert prompt_text("\n\nHuman: Hi\n\nAssistant:") == "Human: Hi"
    assert prompt_text("The sky is") == "The sky is"
    assert completion_text([{"role": "assistant", "content": " Why… "}]) == "Why…"
    assert completion_text(" blue.") == "blue."
    with pytest.raises(SourceError, match="prompt message 0: role 'tool'"):
        prompt_text([{"role": "tool", "content": "42"}])
    with pytest.raises(SourceError, match="completion message 0: message content must be text"):
        completion_text([{"role": "assistant", "content": 3}])


# --- TRL ------------------------------------------------------------------------------------------

class _Recording(TrlReward):
    """The adapter as TRL gets it, keeping what TRL passed and what it returned."""

    calls: list[dict[str, Any]]

    def __call__(self, prompts: Any, completions: Any, **kwargs: Any) -> list[float]:
        rewards = super().__call__(prompts, completions, **kwargs)
        self.calls.append({"prompts": prompts, "completions": completions, "kwargs": kwargs,
                           "rewards": rewards})
        return rewards


def _grpo_step(reward: TrlReward, tmp_path: Path, *, conversational: bool) -> Any:
    from datasets import Dataset
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    tok = AutoTokenizer.from_pretrained(make_tiny_decoder(tmp_path / "policy-tok", "qwen2"))
    policy = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, intermediate_size=64, max_position_embeddings=256,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id))
    questions = ["tell me about the river", "what is a kite?"]
    prompts: list[Any] = ([[{"role": "user", "content": q}] for q in questions] if conversational
                          else [f"\n\nHuman: {q}\n\nAssistant:" for q in questions])
    data = Dataset.from_dict({"prompt": prompts, "answer": ["water", "a toy"]})
    args = GRPOConfig(output_dir=str(tmp_path / "grpo"), per_device_train_batch_size=2,
                      num_generations=2, max_completion_length=6, max_steps=1, report_to=[],
                      logging_steps=1, save_strategy="no", use_cpu=True, bf16=False)
    trainer = GRPOTrainer(model=policy, reward_funcs=[reward], args=args, train_dataset=data,
                          processing_class=tok)
    trainer.train()
    return trainer


@pytest.mark.parametrize("conversational", [True, False])
def test_trl_reward_in_a_real_grpo_step(rm: RewardModel, checkpoint: Path, tmp_path: Path,
                                        conversational: bool) -> None:
    reward = _Recording(trl_reward(checkpoint).source)
    reward.calls = []
    trainer = _grpo_step(reward, tmp_path, conversational=conversational)
    assert reward.calls, "GRPOTrainer never called the reward function"
    call = reward.calls[0]
    # TRL's calling convention: completion_ids, the dataset's other columns, trainer state, loggers
    assert {"completion_ids", "answer", "trainer_state", "log_extra", "log_metric"} <= set(
        call["kwargs"])
    assert isinstance(call["prompts"][0], list if conversational else str)
    assert len(call["rewards"]) == len(call["completions"]) == 2
    np.testing.assert_allclose(call["rewards"], _expected(rm, call["prompts"], call["completions"]),
                               rtol=1e-6)
    logged = next(h for h in trainer.state.log_history if "rewards/rewardlab/mean" in h)
    assert logged["rewards/rewardlab/mean"] == pytest.approx(np.mean(call["rewards"]), abs=1e-5)


def test_trl_reward_over_http_equals_local(rm: RewardModel, url: str) -> None:
    prompts = [[{"role": "user", "content": "how do I bake bread?"}],
               [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]]
    completions = [[{"role": "assistant", "content": "Mix flour, water, salt and yeast."}],
                   [{"role": "assistant", "content": "Hello!"}]]
    kwargs = {"completion_ids": [[1, 2], [3]], "trainer_state": None, "answer": ["a", "b"]}
    remote = trl_reward(f"{url}/get_reward", token=TOKEN)  # a pasted route is fine
    assert remote.__name__ == "rewardlab"
    local = trl_reward(rm)
    expected = _expected(rm, prompts, completions)
    np.testing.assert_allclose(remote(prompts=prompts, completions=completions, **kwargs),
                               expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(local(prompts=prompts, completions=completions, **kwargs),
                               expected, rtol=1e-6)


def test_client_errors_are_one_line(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REWARDLAB_TOKEN", raising=False)
    with pytest.raises(WebError, match=r"HTTP 401: missing bearer token.*\(field Authorization\)"):
        RewardClient(url).score(["Human: hi"], ["hello"])
    with pytest.raises(WebError, match="cannot reach the reward server at http://127.0.0.1:"):
        RewardClient(f"http://127.0.0.1:{free_port()}", timeout=5).score(["a"], ["b"])
    with pytest.raises(WebError, match="must start with http"):
        RewardClient("127.0.0.1:8000")


def test_client_splits_big_batches_under_the_server_limit(rm: RewardModel) -> None:
    config = ServeConfig(max_queries=4, precision="fp32")
    with background_server(create_serve_app(rm, config)) as base:
        prompts, responses = [f"Human: q{i}" for i in range(10)], [f"a{i}" for i in range(10)]
        got = RewardClient(base, chunk=4).score(prompts, responses)
        with pytest.raises(WebError, match=r"HTTP 413: 10 items.*--max-queries.*\(field pairs\)"):
            RewardClient(base, chunk=100).score(prompts, responses)
    np.testing.assert_allclose(got, rm.score(prompts, responses), rtol=1e-5, atol=1e-6)


# --- verl -----------------------------------------------------------------------------------------

def test_verl_compute_score_calls_the_server(rm: RewardModel, url: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    messages = [{"role": "user", "content": "what is a kite?"}]
    # as verl calls it: keywords, plus the reward_kwargs of the config (url, token)
    got = compute_score(data_source="hh", solution_str=" A toy that flies. ", ground_truth="x",
                        extra_info={"prompt": messages, "index": 3, "num_turns": None},
                        url=url, token=TOKEN, reward_router_address=None)
    assert isinstance(got, float)
    assert got == pytest.approx(rm.score(["Human: what is a kite?"], ["A toy that flies."])[0],
                                rel=1e-5, abs=1e-6)
    monkeypatch.setenv("REWARDLAB_URL", url)  # or from the environment, as is the token
    monkeypatch.setenv("REWARDLAB_TOKEN", TOKEN)
    by_env = compute_score("gsm8k", "Paris", None, {"question": "Capital of France?"})
    assert by_env == pytest.approx(rm.score(["Capital of France?"], ["Paris"])[0], rel=1e-5,
                                   abs=1e-6)
    with pytest.raises(SourceError, match="extra_info has no 'prompt'"):
        compute_score("hh", "an answer", None, {"index": 1}, url=url, token=TOKEN)
