"""`/get_reward` reads queries as policies render them (issue 31).

Tiny local policy tokenizers carry the families' published chat templates (tests/_chat_templates.py).
Each family's query — the whole rendered dialogue, the generation prompt + response, and the
OpenRLHF shape (left pads, BOS, the policy's end token, right pads) — with and without a system
turn, single- and multi-turn, is posted to a loopback server of three reward models (an encoder,
a plain-dialogue decoder, a chat-template decoder) and must score what `rewardlab score` gives the
same prompt and response (fp32, 1e-5). The expected prompts are written here by hand from the
conversation, not by the parser under test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from rewardlab.cli.main import main
from rewardlab.models.backbones import load_backbone
from rewardlab.models.reward_model import RewardModel
from rewardlab.web.serve import ServeConfig, create_serve_app
from rewardlab.web.server import background_server
from tests._chat_templates import POLICIES, Policy, make_policy_tokenizer
from tests._tiny import make_tiny_backbone, make_tiny_decoder

HTTP = httpx.Client(timeout=120.0)
FAMILIES = ("qwen2", "llama3", "gemma3", "mistral", "llama2", "phi3")
SYSTEM = "Answer briefly."
CONVERSATIONS = {  # (turns before the response, response)
    "single": ([{"role": "user", "content": "What is the capital of France?"}],
               "Paris is the capital."),
    "system": ([{"role": "system", "content": SYSTEM},
                {"role": "user", "content": "What is the capital of France?"}],
               "Paris is the capital."),
    "multi": ([{"role": "user", "content": "Hi there"},
               {"role": "assistant", "content": "Hello! How can I help?"},
               {"role": "user", "content": "Tell me a joke."}],
              "Why did the chicken cross the road?"),
}
SHAPES = ("template", "generated", "openrlhf")


def expected_prompt(policy: Policy, turns: list[dict[str, str]]) -> str:
    """rewardlab's HH prompt of the conversation, as the policy's template can carry it."""
    turns = [dict(t) for t in turns]
    if policy.name == "qwen2" and turns[0]["role"] != "system":  # Qwen2's default system turn
        turns.insert(0, {"role": "system", "content": "You are a helpful assistant."})
    if policy.name == "gemma3" and turns[0]["role"] == "system":  # folded into the first user turn
        system = turns.pop(0)["content"]
        turns[0] = {"role": "user", "content": f"{system}\n\n{turns[0]['content']}"}
    markers = {"system": "", "user": "Human: ", "assistant": "Assistant: "}
    return "\n\n".join(markers[t["role"]] + t["content"] for t in turns)


def render(tok: object, policy: Policy, turns: list[dict[str, str]], response: str,
           shape: str) -> str:
    """The query a policy of this tokenizer sends, in one of three shapes."""
    apply = tok.apply_chat_template  # type: ignore[attr-defined]
    if shape == "template":  # the whole dialogue as the template writes it
        return str(apply([*turns, {"role": "assistant", "content": response}], tokenize=False))
    generated = str(apply(turns, tokenize=False, add_generation_prompt=True)) + response
    if shape == "generated":  # decoded without special tokens after the prompt
        return generated
    # OpenRLHF: left-padded batch decoded with skip_special_tokens=False
    return policy.pad * 2 + generated + policy.eos + policy.pad * 2


@pytest.fixture(scope="module")
def policy_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("policies")
    for name, policy in POLICIES.items():
        make_policy_tokenizer(root / name, policy)
    return {name: root / name for name in POLICIES}


@pytest.fixture(scope="module")
def queries(policy_dirs: dict[str, Path]) -> list[tuple[str, str, str, str]]:
    """(label, query, expected prompt, expected response) for every family × conversation × shape."""
    from transformers import AutoTokenizer

    rows = []
    for name in FAMILIES:
        policy = POLICIES[name]
        tok = AutoTokenizer.from_pretrained(policy_dirs[name])
        for kind, (turns, response) in CONVERSATIONS.items():
            if kind == "system" and not policy.system:
                continue
            for shape in SHAPES:
                rows.append((f"{name}/{kind}/{shape}", render(tok, policy, turns, response, shape),
                             expected_prompt(policy, turns), response))
    return rows


def _encoder(directory: Path) -> Path:
    backbone = make_tiny_backbone(directory / "bert")
    model, tok = load_backbone(str(backbone), max_length=128, seed=0)
    return RewardModel(model, tok, max_length=128).save(directory / "rm", info={})


@pytest.fixture(scope="module", params=["encoder", "plain-dialogue", "chat-template"])
def checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp(request.param)
    if request.param == "encoder":
        path = _encoder(directory)
    else:
        path = make_tiny_decoder(directory / "rm", "llama" if request.param == "plain-dialogue"
                                 else "qwen2", chat=request.param == "chat-template")
    assert RewardModel.load(path).input_rule == ("text-pair" if request.param == "encoder"
                                                 else request.param)
    return path


@pytest.fixture(scope="module")
def served(checkpoint: Path) -> Iterator[tuple[RewardModel, str]]:
    rm = RewardModel.load(checkpoint)
    with background_server(create_serve_app(rm, ServeConfig(precision="fp32"))) as url:
        yield rm, url


def test_every_family_scores_like_rewardlab_score(served: tuple[RewardModel, str],
                                                  checkpoint: Path,
                                                  queries: list[tuple[str, str, str, str]],
                                                  tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    rm, url = served
    labels = [q[0] for q in queries]
    r = HTTP.post(f"{url}/get_reward", json={"query": [q[1] for q in queries]})
    assert r.status_code == 200, r.text
    got = np.array(r.json()["rewards"])
    rows = [{"prompt": q[2], "response": q[3]} for q in queries]
    file = tmp_path / "pairs.jsonl"
    file.write_text("\n".join(json.dumps(row) for row in rows))
    assert main(["score", str(checkpoint), "--file", str(file), "--json"]) == 0
    cli = np.array([row["reward"] for row in json.loads(capsys.readouterr().out)])
    for label, a, b in zip(labels, got, cli):
        assert abs(a - b) <= 1e-5 * max(1.0, abs(b)), label
    # the shapes of one conversation are one dialogue; the families differ only where their
    # templates carry a different conversation (Qwen2's default system turn, Gemma's folding)
    by_row = dict(zip(labels, got))
    for name in FAMILIES:
        for kind in CONVERSATIONS:
            if f"{name}/{kind}/template" in by_row:
                shapes = [by_row[f"{name}/{kind}/{s}"] for s in SHAPES]
                np.testing.assert_allclose(shapes, shapes[0], rtol=1e-5, atol=1e-6)
    rewards = np.array(rm.score([q[2] for q in queries], [q[3] for q in queries]))
    assert len(set(np.round(rewards, 6))) > 3  # the model tells the dialogues apart


def test_unknown_query_is_422_naming_the_formats_and_info_lists_them(
        served: tuple[RewardModel, str]) -> None:
    _, url = served
    r = HTTP.post(f"{url}/get_reward", json={"query": ["Paris is the capital."]})
    assert r.status_code == 422 and r.json()["field"] == "query[0]"
    for name in ("chatml", "llama3", "gemma", "mistral", "phi3", "hh"):
        assert name in r.json()["error"]
    user_only = HTTP.post(f"{url}/get_reward", json={
        "query": ["<|im_start|>user\nHi<|im_end|>\n"]})
    assert user_only.status_code == 422 and "not an assistant turn" in user_only.json()["error"]
    info = HTTP.get(f"{url}/info").json()["queries"]
    assert info["format"] == "auto"
    assert set(info["formats"]) == {"chatml", "llama3", "gemma", "mistral", "phi3", "hh"}


@pytest.fixture(scope="module")
def encoder_rm(tmp_path_factory: pytest.TempPathFactory) -> RewardModel:
    return RewardModel.load(_encoder(tmp_path_factory.mktemp("enc")))


def test_query_format_fixes_the_family(encoder_rm: RewardModel,
                                       queries: list[tuple[str, str, str, str]]) -> None:
    llama3 = [q for q in queries if q[0].startswith("llama3/")]
    chatml = next(q for q in queries if q[0].startswith("qwen2/"))
    config = ServeConfig(precision="fp32", query_format="llama3")
    with background_server(create_serve_app(encoder_rm, config)) as url:
        ok = HTTP.post(f"{url}/get_reward", json={"query": [q[1] for q in llama3]})
        bad = HTTP.post(f"{url}/get_reward", json={"query": [chatml[1]]})
        info = HTTP.get(f"{url}/info").json()["queries"]
    assert ok.status_code == 200, ok.text
    np.testing.assert_allclose(ok.json()["rewards"],
                               encoder_rm.score([q[2] for q in llama3], [q[3] for q in llama3]),
                               rtol=1e-5, atol=1e-6)
    assert bad.status_code == 422 and "not start as a llama3 rendering" in bad.json()["error"]
    assert info["format"] == "llama3" and info["source"] == "--query-format llama3"


@pytest.mark.parametrize("name", ["custom", "gemma3"])
def test_policy_tokenizer_gives_the_family_and_end_tokens(encoder_rm: RewardModel,
                                                          policy_dirs: dict[str, Path],
                                                          name: str) -> None:
    from transformers import AutoTokenizer

    policy = POLICIES[name]
    tok = AutoTokenizer.from_pretrained(policy_dirs[name])
    rows = [(render(tok, policy, turns, response, shape), expected_prompt(policy, turns), response)
            for kind, (turns, response) in CONVERSATIONS.items() for shape in SHAPES
            if kind != "system" or name != "custom"]
    config = ServeConfig(precision="fp32", policy_tokenizer=str(policy_dirs[name]))
    with background_server(create_serve_app(encoder_rm, config)) as url:
        r = HTTP.post(f"{url}/get_reward", json={"query": [q for q, _, _ in rows]})
        info = HTTP.get(f"{url}/info").json()["queries"]
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["rewards"],
                               encoder_rm.score([p for _, p, _ in rows], [s for _, _, s in rows]),
                               rtol=1e-5, atol=1e-6)
    assert policy.eos in info["end_tokens"]
    assert info["source"].endswith("(its own template)" if name == "custom" else "(gemma)")


@pytest.mark.parametrize(("argv", "message"), [
    (["--query-format", "xml"], "invalid choice: 'xml'"),
    (["--policy-tokenizer", "/nonexistent/policy"], "--policy-tokenizer /nonexistent/policy: no "
                                                    "tokenizer_config.json"),
])
def test_serve_refuses_bad_query_options_before_loading(argv: list[str], message: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        raise SystemExit(main(["serve", "/nonexistent/model", *argv]))
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
