"""`rewardlab serve`: real servers on free loopback ports with a tiny model.

Checked: /get_reward (OpenRLHF's protocol) and /score, /compare equal `RewardModel.score` and
`rewardlab score`; bearer auth (401, /health open); refusing 0.0.0.0 without a token and every bad
option before the model loads; 413/422/400 on oversized or malformed input with the server still
answering; concurrent requests answered correctly in shared batches; a failing batch fails only its
own requests; SIGTERM lets an in-flight request finish and exits 0; decoders split chat-template
queries by their input rule.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from rewardlab.cli.main import main
from rewardlab.data.pairs import PreferencePair
from rewardlab.models.backbones import load_backbone
from rewardlab.models.reward_model import RewardModel
from rewardlab.web.serve import MicroBatcher, Scored, ServeConfig, create_serve_app
from rewardlab.web.server import background_server, free_port, wait_healthy
from tests._tiny import make_tiny_backbone, make_tiny_decoder, planted_pairs

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REPO = Path(__file__).resolve().parents[2]
HTTP = httpx.Client(timeout=60.0)  # one client: keep-alive, and no TLS context built per call


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A rewardlab checkpoint of a random tiny BERT (max_length 64, so long pairs are cut)."""
    backbone = make_tiny_backbone(tmp_path_factory.mktemp("tiny-bert"))
    model, tok = load_backbone(str(backbone), max_length=64, seed=0)
    info = {"config": {"model": "tiny-bert", "max_length": 64, "seed": 0},
            "data_fingerprint": "f" * 64, "n_pairs": 16, "train_loss": 0.69,
            "train_accuracy": 0.5,
            "reward_stats": {"mean": 0.1, "std": 2.0, "pairs": 16, "sequences": 32}}
    return RewardModel(model, tok, max_length=64).save(tmp_path_factory.mktemp("rm"), info=info)


@pytest.fixture(scope="module")
def rm(checkpoint: Path) -> RewardModel:
    return RewardModel.load(checkpoint)


@pytest.fixture(scope="module")
def pairs() -> list[PreferencePair]:
    return planted_pairs(12, seed=3, prompt_words=(2, 60))  # some longer than 64 tokens


@pytest.fixture(scope="module")
def server(rm: RewardModel, checkpoint: Path) -> Iterator[str]:
    """Token-protected, 20 ms batching window, two scoring threads, default limits. fp32 here and
    wherever rewards are compared with `RewardModel.score` (fp32): `auto` is bf16 on a CPU with
    avx512_bf16, and bf16 has its own test."""
    app = create_serve_app(rm, ServeConfig(max_batch=16, max_wait_ms=20, workers=2,
                                           precision="fp32"), token=TOKEN,
                           model_dir=str(checkpoint))
    with background_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def small(rm: RewardModel) -> Iterator[str]:
    """No token (loopback), tight limits."""
    config = ServeConfig(max_body_bytes=2_000, max_queries=3, max_chars=200, max_wait_ms=0,
                         precision="fp32")
    with background_server(create_serve_app(rm, config)) as url:
        yield url


def _query(p: PreferencePair, response: str) -> str:
    """An HH dialogue as the policy's prompt + response, the shape OpenRLHF sends."""
    return f"\n\nHuman: {p.prompt}\n\nAssistant: {response}"


def _expected(rm: RewardModel, pairs: list[PreferencePair], side: str = "chosen") -> np.ndarray:
    return np.array(rm.score([p.prompt_text for p in pairs], [getattr(p, side) for p in pairs]))


# --- values ---------------------------------------------------------------------------------------

def test_get_reward_equals_reward_model_score(server: str, rm: RewardModel,
                                              pairs: list[PreferencePair]) -> None:
    body = {"query": [_query(p, p.chosen) for p in pairs], "prompts": [p.prompt for p in pairs],
            "labels": [None] * len(pairs)}
    r = HTTP.post(f"{server}/get_reward", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    out = r.json()
    assert set(out) == {"rewards", "scores", "extra_logs"}
    rewards = np.array(out["rewards"])
    np.testing.assert_allclose(rewards, _expected(rm, pairs), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["scores"], 1 / (1 + np.exp(-rewards)), rtol=1e-9)
    truncated = rm.encode([p.prompt_text for p in pairs], [p.chosen for p in pairs]).truncated
    assert out["extra_logs"]["rm_truncated"] == [float(t) for t in truncated]
    assert 0 < sum(truncated) < len(pairs)  # both kinds are in the request
    assert len(set(out["rewards"])) == len(pairs)  # a random model still tells them apart


def test_score_and_compare_equal_reward_model(server: str, rm: RewardModel,
                                              pairs: list[PreferencePair]) -> None:
    r = HTTP.post(f"{server}/score", headers=AUTH, json={"pairs": [
        {"prompt": p.prompt_text, "response": p.rejected} for p in pairs]})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["rewards"], _expected(rm, pairs, "rejected"),
                               rtol=1e-5, atol=1e-6)
    r = HTTP.post(f"{server}/compare", headers=AUTH, json={
        "prompt": [p.prompt_text for p in pairs], "chosen": [p.chosen for p in pairs],
        "rejected": [p.rejected for p in pairs]})
    assert r.status_code == 200, r.text
    out = r.json()
    chosen, rejected = _expected(rm, pairs), _expected(rm, pairs, "rejected")
    np.testing.assert_allclose(out["chosen_rewards"], chosen, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["rejected_rewards"], rejected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["p_chosen"], 1 / (1 + np.exp(rejected - chosen)), atol=1e-6)


def test_rewards_equal_rewardlab_score_cli(server: str, checkpoint: Path, tmp_path: Path,
                                           pairs: list[PreferencePair],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"prompt": p.prompt_text, "response": p.chosen} for p in pairs]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    capsys.readouterr()
    assert main(["score", str(checkpoint), "--file", str(path), "--json"]) == 0
    cli = [row["reward"] for row in json.loads(capsys.readouterr().out)]
    served = HTTP.post(f"{server}/score", headers=AUTH, json={"pairs": rows}).json()["rewards"]
    np.testing.assert_allclose(served, cli, rtol=1e-5, atol=1e-6)


def test_info_reports_the_model_card_facts(server: str) -> None:
    r = HTTP.get(f"{server}/info", headers=AUTH)
    assert r.status_code == 200
    info = r.json()
    assert info["rewardlab_version"]
    model = info["model"]
    assert model["base_model"] == "tiny-bert" and model["input_rule"] == "text-pair"
    assert model["data_fingerprint"] == "f" * 64 and model["max_length"] == 64
    assert model["metrics"]["train_loss"] == 0.69
    assert (model["reward_mean"], model["reward_std"]) == (0.1, 2.0)  # OpenRLHF's config.mean/std
    assert info["serving"]["precision"] in ("fp32", "bf16") and info["serving"]["max_batch"] == 16
    assert info["serving"]["workers"] == 2
    assert info["limits"]["max_queries"] == 1024


def test_bf16_precision_stays_close_to_fp32(rm: RewardModel, pairs: list[PreferencePair]) -> None:
    app = create_serve_app(rm, ServeConfig(precision="bf16"))
    with background_server(app) as url:
        assert HTTP.get(f"{url}/info").json()["serving"]["precision"] == "bf16"
        got = HTTP.post(f"{url}/score", json={"pairs": [
            {"prompt": p.prompt_text, "response": p.chosen} for p in pairs]}).json()["rewards"]
    expected = _expected(rm, pairs)
    assert np.abs(np.array(got) - expected).max() < 0.05 * max(1.0, np.abs(expected).max())
    assert not np.allclose(got, expected, rtol=0, atol=1e-7)  # bf16 really ran


# --- auth -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": f"Basic {TOKEN}"},
                                     {"Authorization": f"Bearer {TOKEN}x"}])
def test_every_route_but_health_needs_the_token(server: str, headers: dict[str, str]) -> None:
    for method, route in [("POST", "/get_reward"), ("POST", "/score"), ("POST", "/compare"),
                          ("GET", "/info"), ("GET", "/no-such-route")]:
        r = HTTP.request(method, f"{server}{route}", headers=headers, json={"query": []})
        assert r.status_code == 401, (route, r.text)
        assert r.json()["field"] == "Authorization" and "bearer token" in r.json()["error"]
        assert r.headers["www-authenticate"] == "Bearer"
    assert HTTP.get(f"{server}/health").json() == {"status": "ok"}
    assert HTTP.post(f"{server}/get_reward", headers=AUTH, json={"query": []}).json()[
        "rewards"] == []


# --- limits and malformed input -------------------------------------------------------------------

def _still_answers(url: str) -> None:
    assert HTTP.get(f"{url}/health").status_code == 200
    r = HTTP.post(f"{url}/get_reward", json={"query": ["\n\nHuman: hi\n\nAssistant: hello"]})
    assert r.status_code == 200 and len(r.json()["rewards"]) == 1


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"query": ["\n\nHuman: hi\n\nAssistant: " + "x" * 3_000]}, 413, "body"),
    ({"query": ["\n\nHuman: a\n\nAssistant: b"] * 4}, 413, "query"),
    ({"query": ["\n\nHuman: a\n\nAssistant: b", "\n\nHuman: a\n\nAssistant: " + "y" * 300]},
     413, "query[1]"),
    ({"pairs": [{"prompt": "Human: hi", "response": "z" * 201}]}, 413, "pairs[0].response"),
    ({"query": "\n\nHuman: a\n\nAssistant: b"}, 422, "query"),
    ({"query": ["\n\nHuman: a\n\nAssistant: b", 7]}, 422, "query[1]"),
    ({"queries": []}, 422, "query"),
    ({"query": ["no assistant turn here"]}, 422, "query[0]"),
    ({"query": ["\n\nHuman: a\n\nAssistant: b"], "prompts": ["a", "b"]}, 422, "prompts"),
    ({"pairs": [{"prompt": "Human: hi"}]}, 422, "pairs[0].response"),
    ({"pairs": [{"prompt": None, "response": "x"}]}, 422, "pairs[0].prompt"),
    ({"prompt": ["a"], "chosen": ["b"], "rejected": []}, 422, "rejected"),
    ({"pairs": [{"prompt": "\ud800", "response": "x"}]}, 422, "pairs[0].prompt"),
])
def test_limits_and_bad_fields_are_json_errors(small: str, body: dict[str, object], status: int,
                                               field: str) -> None:
    route = ("/score" if "pairs" in body else "/compare" if "chosen" in body else "/get_reward")
    # ensure_ascii keeps a lone surrogate as the escape "\ud800", as a client's JSON would carry it
    r = HTTP.post(f"{small}{route}", content=json.dumps(body).encode(),
                   headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json()["field"] == field and r.json()["error"]
    _still_answers(small)


@pytest.mark.parametrize("raw", [b"{bad json", b"", b"\xff\xfe", b"[" * 1_000, b"not json at all"])
def test_malformed_json_is_400(small: str, raw: bytes) -> None:
    # (a body not declared JSON, e.g. `curl -d`'s form encoding, is 415: test_serve_hardening.py)
    for content_type in ("application/json", "application/json; charset=utf-8"):
        r = HTTP.post(f"{small}/get_reward", content=raw, headers={"Content-Type": content_type})
        assert r.status_code == 400, r.text
        assert r.json()["field"] == "body" and r.json()["error"].startswith("malformed JSON")
    _still_answers(small)


def test_streamed_body_over_the_limit_is_413(small: str) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"query": ["'
        for _ in range(10):
            yield b"x" * 500
        yield b'"]}'

    r = HTTP.post(f"{small}/get_reward", content=chunks(),
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["field"] == "body"
    _still_answers(small)


def test_wrong_method_and_unknown_route_are_json(small: str) -> None:
    assert HTTP.get(f"{small}/get_reward").status_code == 405
    r = HTTP.post(f"{small}/nope", json={})
    assert r.status_code == 404 and r.json()["error"] == "Not Found"


# --- batching -------------------------------------------------------------------------------------

def test_concurrent_requests_are_batched_and_all_correct(server: str, rm: RewardModel) -> None:
    many = planted_pairs(40, seed=9, prompt_words=(2, 40))
    expected = _expected(rm, many)
    before = HTTP.get(f"{server}/info", headers=AUTH).json()["batches"]

    def one(i: int) -> float:
        r = httpx.post(f"{server}/get_reward", headers=AUTH, timeout=60,
                       json={"query": [_query(many[i], many[i].chosen)]})
        assert r.status_code == 200, r.text
        return float(r.json()["rewards"][0])

    with ThreadPoolExecutor(max_workers=20) as pool:
        got = list(pool.map(one, range(len(many))))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    after = HTTP.get(f"{server}/info", headers=AUTH).json()["batches"]
    assert after["requests"] - before["requests"] == len(many)
    assert after["batches"] - before["batches"] < len(many)  # requests shared forwards
    assert after["most_requests"] > 1


def test_batcher_keeps_order_and_max_batch() -> None:
    calls: list[int] = []

    def score(prompts: list[str], responses: list[str]) -> Scored:
        calls.append(len(prompts))
        return Scored([float(len(r)) for r in responses], [False] * len(prompts))

    async def scenario() -> list[Scored]:
        batcher = MicroBatcher(score, max_batch=8, max_wait_s=0.05)
        await batcher.start()
        jobs = [batcher.score(["p"] * 3, ["x" * (10 * i + k) for k in range(3)]) for i in range(7)]
        results = await asyncio.gather(*jobs, batcher.score(["p"] * 20, ["y"] * 20))
        await batcher.stop()
        return list(results)

    results = asyncio.run(scenario())
    for i, scored in enumerate(results[:7]):
        assert scored.rewards == [10.0 * i + k for k in range(3)]
    assert results[7].rewards == [1.0] * 20  # a request larger than max_batch is scored whole
    # all eight were queued before the worker ran: 3+3 (a third would pass 8), …, 3, then the 20
    assert calls == [6, 6, 6, 3, 20]


def test_two_workers_score_two_batches_at_once() -> None:
    running, most = 0, 0
    lock = threading.Lock()

    def score(prompts: list[str], responses: list[str]) -> Scored:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.2)  # a forward: the other thread gets its batch meanwhile
        with lock:
            running -= 1
        return Scored([float(r) for r in responses], [False] * len(prompts))

    async def scenario() -> list[Scored]:
        batcher = MicroBatcher(score, max_batch=2, max_wait_s=0.0, workers=2)
        await batcher.start()
        results = await asyncio.gather(*(batcher.score(["p", "p"], [str(i), str(i + 0.5)])
                                         for i in range(6)))
        await batcher.stop()
        return list(results)

    results = asyncio.run(scenario())
    assert [r.rewards for r in results] == [[i, i + 0.5] for i in range(6)]
    assert most == 2


def test_failing_batch_fails_only_the_bad_request() -> None:
    def score(prompts: list[str], responses: list[str]) -> Scored:
        if "boom" in responses:
            raise RuntimeError("tokenizer exploded")
        return Scored([1.0] * len(prompts), [False] * len(prompts))

    async def scenario() -> tuple[list[object], Scored, int]:
        batcher = MicroBatcher(score, max_batch=32, max_wait_s=0.05)
        await batcher.start()
        outcomes = await asyncio.gather(batcher.score(["p"], ["ok"]), batcher.score(["p"], ["boom"]),
                                        batcher.score(["p", "p"], ["ok", "fine"]),
                                        return_exceptions=True)
        later = await batcher.score(["p"], ["still alive"])
        failed = batcher.stats.failed_batches
        await batcher.stop()
        return list(outcomes), later, failed

    outcomes, later, failed = asyncio.run(scenario())
    assert isinstance(outcomes[1], RuntimeError) and "exploded" in str(outcomes[1])
    assert isinstance(outcomes[0], Scored) and outcomes[0].rewards == [1.0]
    assert isinstance(outcomes[2], Scored) and outcomes[2].rewards == [1.0, 1.0]
    assert later.rewards == [1.0] and failed == 2  # the shared batch, then the culprit alone


def test_scoring_error_is_500_json_and_the_server_lives(rm: RewardModel) -> None:
    # a real failure inside the model: the tokenizer cannot pad without a pad token
    app = create_serve_app(rm, ServeConfig(precision="fp32"))
    saved = rm.tokenizer.pad_token_id
    with background_server(app) as url:
        rm.tokenizer.pad_token = None
        try:
            r = HTTP.post(f"{url}/score", json={"pairs": [{"prompt": "Human: a", "response": "b"}]})
        finally:
            rm.tokenizer.pad_token = rm.tokenizer.convert_ids_to_tokens(saved)
        assert r.status_code == 500 and r.json()["error"].startswith("scoring failed")
        assert r.json()["field"] is None
        _still_answers(url)


# --- decoders: the query is split by the model's input rule -----------------------------------------

def test_chat_template_queries_are_split_by_the_input_rule(tmp_path: Path) -> None:
    rm = RewardModel.load(make_tiny_decoder(tmp_path / "qwen", "qwen2", chat=True))
    assert rm.input_rule == "chat-template"
    prompts = ["Human: question one: apple\n\nAssistant: banana\n\nHuman: and cherry?",
               "Human: tell me about the river"]
    responses = ["the stone is wonderful", "a tiger by the ocean"]
    queries = [rm.tokenizer.apply_chat_template(
        [{"role": "user", "content": "question one: apple"}, {"role": "assistant", "content": "banana"},
         {"role": "user", "content": "and cherry?"},
         {"role": "assistant", "content": responses[0]}], tokenize=False),
        rm.tokenizer.apply_chat_template([{"role": "user", "content": "tell me about the river"},
                                          {"role": "assistant", "content": responses[1]}],
                                         tokenize=False)]
    with background_server(create_serve_app(rm, ServeConfig(precision="fp32"))) as url:
        r = HTTP.post(f"{url}/get_reward", json={"query": queries})
        assert r.status_code == 200, r.text
        bad = HTTP.post(f"{url}/get_reward", json={"query": ["Human: no template here"]})
    np.testing.assert_allclose(r.json()["rewards"], rm.score(prompts, responses), rtol=1e-5,
                               atol=1e-6)
    assert bad.status_code == 422 and bad.json()["field"] == "query[0]"


# --- the CLI: options before the model, refusal to bind beyond loopback, SIGTERM ---------------------

@pytest.mark.parametrize(("argv", "message"), [
    (["--host", "0.0.0.0"], "refusing to bind 0.0.0.0 without a token"),
    (["--host", "::"], "refusing to bind :: without a token"),
    (["--max-batch", "0"], "--max-batch must be at least 1"),
    (["--max-wait-ms", "nan"], "--max-wait-ms must be in [0, 10000]"),
    (["--port", "70000"], "--port must be in 1..65535"),
    (["--max-queries", "-1"], "--max-queries must be at least 1"),
    (["--workers", "0"], "--workers must be at least 1"),
    (["--token", " "], "--token is empty"),
])
def test_cli_refuses_bad_options_before_loading(argv: list[str], message: str,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("REWARDLAB_TOKEN", raising=False)
    # the directory does not exist: a message about the option proves it was checked first
    assert main(["serve", "/no/such/model", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_cli_names_a_missing_model_and_a_busy_port(checkpoint: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", str(tmp_path / "nothing")]) == 2
    assert "no model at" in capsys.readouterr().err
    app = create_serve_app(RewardModel.load(checkpoint), ServeConfig(precision="fp32"))
    with background_server(app) as url:
        port = url.rsplit(":", 1)[1]
        assert main(["serve", str(checkpoint), "--port", port]) == 2
        assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_sigterm_finishes_the_request_in_flight_and_exits_0(checkpoint: Path, rm: RewardModel
                                                            ) -> None:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "REWARDLAB_TOKEN": TOKEN}
    # a 3 s batching window holds the request in flight while SIGTERM arrives
    proc = subprocess.Popen([sys.executable, "-m", "rewardlab", "serve", str(checkpoint),
                             "--port", str(port), "--max-wait-ms", "3000", "--precision", "fp32"],
                            env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        result: dict[str, httpx.Response] = {}
        query = "\n\nHuman: how are you?\n\nAssistant: wonderful, thanks"
        sender = threading.Thread(target=lambda: result.setdefault("r", httpx.post(
            f"{url}/get_reward", headers=AUTH, json={"query": [query]}, timeout=60)))
        sender.start()
        _wait_in_flight(url)
        proc.send_signal(signal.SIGTERM)
        sender.join(timeout=60)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    _, err = proc.communicate()
    assert result["r"].status_code == 200, result["r"].text
    np.testing.assert_allclose(result["r"].json()["rewards"],
                               rm.score(["Human: how are you?"], ["wonderful, thanks"]),
                               rtol=1e-5, atol=1e-6)
    assert code == 0, err
    assert "rewardlab serve:" in err and "auth bearer token" in err


def _wait_in_flight(url: str, timeout: float = 60.0) -> None:
    """Until the server holds a request (in its batching window): /info counts it as pending."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if HTTP.get(f"{url}/info", headers=AUTH).json()["batches"]["pending"] > 0:
            return
        time.sleep(0.05)
    raise AssertionError("the request never reached the server")
