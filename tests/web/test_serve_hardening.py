"""`rewardlab serve` and checkpoint loading under hostile input (issue 27 items 4, 11, 13, 14, 15, 17).

Real loopback servers on free ports with a tiny BERT checkpoint, as in test_serve.py:
- browsers of other sites and DNS-rebinding pages are refused (Host allow-list, Origin, JSON only),
  while OpenRLHF's plain `requests.post(url, json=...)` still scores;
- a hostile `rewardlab.json` or a checkpoint without its tokenizer is one line, exit 2, and a
  `max_length` beyond the model's positions is capped (and said);
- a token no client can send is refused at start;
- a client that disconnects mid-body is one INFO line, not an ERROR traceback;
- a stop with queued work answers the queue 503 + Retry-After at once and lets the batch being
  scored finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from rewardlab.cli.main import main
from rewardlab.errors import ModelError, WebError
from rewardlab.models.backbones import load_backbone
from rewardlab.models.reward_model import INFO_FILE, RewardModel
from rewardlab.web.security import allowed_hosts, host_allowed
from rewardlab.web.serve import MicroBatcher, Scored, ServeConfig, create_serve_app
from rewardlab.web.serve.batcher import BatcherClosed
from rewardlab.web.server import background_server, free_port
from tests._tiny import make_tiny_backbone

REPO = Path(__file__).resolve().parents[2]
HTTP = httpx.Client(timeout=60.0)
QUERY = "\n\nHuman: how are you?\n\nAssistant: wonderful, thanks"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A rewardlab checkpoint of a random tiny BERT (128 positions, max_length 64)."""
    backbone = make_tiny_backbone(tmp_path_factory.mktemp("tiny-bert"))
    model, tok = load_backbone(str(backbone), max_length=64, seed=0)
    info = {"config": {"model": "tiny-bert", "max_length": 64, "seed": 0}}
    return RewardModel(model, tok, max_length=64).save(tmp_path_factory.mktemp("rm"), info=info)


@pytest.fixture(scope="module")
def rm(checkpoint: Path) -> RewardModel:
    return RewardModel.load(checkpoint)


@pytest.fixture(scope="module")
def server(rm: RewardModel) -> Iterator[str]:
    """No token (loopback), one extra allowed name."""
    app = create_serve_app(rm, ServeConfig(precision="fp32", max_wait_ms=0,
                                           allow_hosts=("rm.internal",)))
    with background_server(app) as url:
        yield url


def _raw_post(url: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    """One POST with exactly these headers (plus Host, unless given): what a program sends."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.putrequest("POST", path, skip_host="Host" in headers, skip_accept_encoding=True)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            conn.putheader(key, value)
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def _hosted(url: str) -> str:
    return url.removeprefix("http://")


# --- item 4: Host allow-list, Origin, JSON content types ------------------------------------------

def test_openrlhf_client_request_still_scores(server: str, rm: RewardModel) -> None:
    # the headers `requests.post(url, json=data, headers={"Content-Type": "application/json"})`
    # sends, as OpenRLHF's remote reward client does: no Origin, Host = the URL's
    body = json.dumps({"query": [QUERY], "prompts": ["\n\nHuman: how are you?"],
                       "labels": [None]}).encode()
    status, out = _raw_post(server, "/get_reward", body, {
        "Host": _hosted(server), "User-Agent": "python-requests/2.32.3",
        "Accept-Encoding": "gzip, deflate", "Accept": "*/*", "Connection": "keep-alive",
        "Content-Type": "application/json"})
    assert status == 200, out
    np.testing.assert_allclose(out["rewards"], rm.score(["Human: how are you?"],
                                                        ["wonderful, thanks"]), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("content_type", [
    "text/plain",  # what a cross-site fetch/form may send without a CORS preflight
    "text/plain;charset=UTF-8",
    "application/x-www-form-urlencoded",  # an HTML form, or `curl -d`
    "multipart/form-data; boundary=x",
    None,  # no Content-Type at all (a Blob body)
])
def test_a_body_not_declared_json_is_415(server: str, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    status, out = _raw_post(server, "/get_reward", json.dumps({"query": [QUERY]}).encode(),
                            headers)
    assert status == 415, out
    assert out["field"] == "Content-Type" and "application/json" in out["error"]


@pytest.mark.parametrize("origin", ["http://evil.example", "null",
                                    "http://localhost:1",  # another local page is another site
                                    "https://evil.example:443"])
def test_browser_requests_from_another_site_are_403(server: str, origin: str) -> None:
    r = HTTP.post(f"{server}/get_reward", json={"query": [QUERY]}, headers={"Origin": origin})
    assert r.status_code == 403, r.text
    assert r.json()["field"] == "Origin" and "cross-origin" in r.json()["error"]
    r = HTTP.get(f"{server}/info", headers={"Origin": origin})
    assert r.status_code == 403 and r.json()["field"] == "Origin"


def test_its_own_origin_and_loopback_names_are_served(server: str) -> None:
    port = server.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}",
                 f"rm.internal:{port}", "rm.internal"):
        r = HTTP.post(f"{server}/get_reward", json={"query": [QUERY]},
                      headers={"Host": host, "Origin": f"http://{host}"})
        assert r.status_code == 200, (host, r.text)
        assert len(r.json()["rewards"]) == 1


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.evil.example",
                                  "rm.internal.evil.example:{port}", ""])
def test_a_host_that_is_not_this_server_is_400(server: str, host: str) -> None:
    # DNS rebinding: a page whose name now points at 127.0.0.1 sends its own name as Host
    host = host.format(port=server.rsplit(":", 1)[1])
    r = HTTP.get(f"{server}/info", headers={"Host": host})
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "Host" and "unexpected Host" in r.json()["error"]
    status, out = _raw_post(server, "/get_reward", json.dumps({"query": [QUERY]}).encode(),
                            {"Host": host, "Content-Type": "application/json"})
    assert status == 400 and out["field"] == "Host"


def test_with_a_token_the_guard_still_holds(rm: RewardModel) -> None:
    app = create_serve_app(rm, ServeConfig(precision="fp32", max_wait_ms=0), token="t0ken")
    auth = {"Authorization": "Bearer t0ken"}
    with background_server(app) as url:
        assert HTTP.post(f"{url}/get_reward", json={"query": [QUERY]},
                         headers={**auth, "Origin": "http://evil.example"}).status_code == 403
        assert HTTP.post(f"{url}/get_reward", content=json.dumps({"query": [QUERY]}),
                         headers={**auth, "Content-Type": "text/plain"}).status_code == 415
        assert HTTP.post(f"{url}/get_reward", json={"query": [QUERY]},
                         headers=auth).status_code == 200


def test_allowed_hosts_rules() -> None:
    assert allowed_hosts("0.0.0.0") is None and allowed_hosts("::") is None  # any: token-bound
    assert allowed_hosts("0.0.0.0", ["Proxy.Example"]) == frozenset({"proxy.example"})
    assert allowed_hosts("10.1.2.3") == frozenset({"10.1.2.3"})
    assert host_allowed("10.1.2.3:8000", allowed_hosts("10.1.2.3"))
    assert host_allowed("[::1]:8000", frozenset()) and host_allowed("127.0.0.2", frozenset())
    assert not host_allowed("[oops", frozenset()) and not host_allowed("", frozenset())
    assert ServeConfig(allow_hosts=("RM.internal:8000", "[fe80::1]")).allow_hosts == (
        "rm.internal", "fe80::1")


@pytest.mark.parametrize("value", ["", " ", "http://x/y", "two words"])
def test_cli_refuses_a_bad_allow_host_before_loading(value: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "/no/such/model", "--allow-host", value]) == 2
    err = capsys.readouterr().err
    assert "--allow-host" in err and err.count("\n") == 1


# --- item 13: a token no client can send -----------------------------------------------------------

@pytest.mark.parametrize("token", ["pässwort", "tok\u00e9n", "токен", "tab\there", " padded "])
def test_a_token_no_client_can_send_is_refused_at_start(token: str,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("REWARDLAB_TOKEN", raising=False)
    # the model does not exist: a message about the token proves it was checked first
    assert main(["serve", "/no/such/model", "--token", token]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rewardlab: error: --token") and err.count("\n") == 1
    assert token.strip() not in err  # never echoed
    monkeypatch.setenv("REWARDLAB_TOKEN", token)
    assert main(["serve", "/no/such/model"]) == 2
    assert "$REWARDLAB_TOKEN" in capsys.readouterr().err


def test_the_library_refuses_a_non_ascii_token_too(rm: RewardModel) -> None:
    with pytest.raises(WebError, match="non-ASCII") as caught:
        create_serve_app(rm, ServeConfig(), token="geheim-ä")
    assert "geheim" not in str(caught.value)


# --- item 11: a hostile rewardlab.json --------------------------------------------------------------

def _with_info(checkpoint: Path, target: Path, info: Any) -> Path:
    shutil.copytree(checkpoint, target)
    (target / INFO_FILE).write_text(json.dumps(info), encoding="utf-8")
    return target


@pytest.mark.parametrize(("info", "field"), [
    ({"config": {"max_length": "abc"}}, "config.max_length"),
    ({"config": {"max_length": -1}}, "config.max_length"),
    ({"config": {"max_length": 0.5}}, "config.max_length"),
    ({"config": {"max_length": True}}, "config.max_length"),
    ({"config": [1, 2]}, "config must be an object"),
    ({"config": {"eval_batch_size": "x"}}, "config.eval_batch_size"),
    ({"metrics": [1, 2]}, "metrics must be an object"),
    ({"reward_stats": {"mean": "high"}}, "reward_stats.mean"),
    ({"input_rule": ["text-pair"]}, "input_rule"),
    ([1, 2], "expected a JSON object"),
])
def test_hostile_rewardlab_json_is_one_line_exit_2(checkpoint: Path, tmp_path: Path, info: Any,
                                                   field: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    bad = _with_info(checkpoint, tmp_path / "bad", info)
    with pytest.raises(ModelError, match=field):
        RewardModel.load(bad)
    capsys.readouterr()
    assert main(["score", str(bad), "--prompt", "Human: hi", "--response", "hello"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bad / INFO_FILE}:" in err and field in err


def test_max_length_beyond_the_positions_is_capped_and_said(checkpoint: Path, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture
                                                            ) -> None:
    big = _with_info(checkpoint, tmp_path / "big", {"config": {"max_length": 10**12}})
    with caplog.at_level(logging.WARNING, logger="rewardlab"):
        model = RewardModel.load(big)
    assert model.max_length == 128  # the tiny BERT's positions
    assert any("more than the model's 128 positions; using 128" in r.getMessage()
               for r in caplog.records)
    long_query = "\n\nHuman: " + "tell me about the river " * 60 + "\n\nAssistant: a tiger"
    app = create_serve_app(model, ServeConfig(precision="fp32", max_wait_ms=0))
    with background_server(app) as url:
        r = HTTP.post(f"{url}/get_reward", json={"query": [long_query]})
        assert HTTP.get(f"{url}/info").json()["model"]["max_length"] == 128
    assert r.status_code == 200, r.text
    assert r.json()["extra_logs"]["rm_truncated"] == [1.0]
    prompt, response = model.split_query(long_query)
    np.testing.assert_allclose(r.json()["rewards"], model.score([prompt], [response]), rtol=1e-5,
                               atol=1e-6)


def test_a_hostile_run_record_does_not_crash_finished_run(tmp_path: Path) -> None:
    from rewardlab.training.checkpoint import finished_run

    (tmp_path / INFO_FILE).write_text(json.dumps({"complete": True, "config": [1, 2]}))
    with pytest.raises(ModelError, match="config must be an object"):
        finished_run(tmp_path, config={"seed": 0}, fingerprints={})
    (tmp_path / INFO_FILE).write_text(json.dumps([1, 2]))
    with pytest.raises(ModelError, match="expected a JSON object"):
        finished_run(tmp_path, config={"seed": 0}, fingerprints={})


# --- item 17: a checkpoint without its tokenizer -----------------------------------------------------

def _without_tokenizer(checkpoint: Path, target: Path) -> Path:
    shutil.copytree(checkpoint, target)
    for f in target.iterdir():
        if "token" in f.name or f.name in ("vocab.txt", "vocab.json", "merges.txt"):
            f.unlink()
    return target


def test_a_checkpoint_without_its_tokenizer_is_refused(checkpoint: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    bare = _without_tokenizer(checkpoint, tmp_path / "bare")
    with pytest.raises(ModelError, match="the tokenizer has 5 tokens but the model's vocabulary "
                                         "has 30,522"):
        RewardModel.load(bare)
    capsys.readouterr()
    assert main(["score", str(bare), "--prompt", "Human: hi", "--response", "hello"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tokenizer files are missing" in err
    db = f"sqlite:///{tmp_path / 'empty.db'}"
    assert main(["evaluate", str(bare), "hh", "--db", db]) == 2
    assert "tokenizer files are missing" in capsys.readouterr().err


def test_serve_refuses_a_checkpoint_without_its_tokenizer(checkpoint: Path, tmp_path: Path
                                                          ) -> None:
    bare = _without_tokenizer(checkpoint, tmp_path / "bare")
    # a process: unfixed, this server would start and serve [UNK] rewards until the timeout
    proc = subprocess.run([sys.executable, "-m", "rewardlab", "serve", str(bare), "--port",
                           str(free_port())], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1",
                                            "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("rewardlab: error:")]
    assert len(lines) == 1 and "tokenizer has 5 tokens" in lines[0]


def test_a_model_with_spare_embedding_rows_still_loads(checkpoint: Path, tmp_path: Path) -> None:
    # models round their embedding table up (Qwen2.5: 151,936 rows, 151,665 tokens)
    model = RewardModel.load(checkpoint)
    padded = tmp_path / "padded"
    model.model.resize_token_embeddings(len(model.tokenizer) + 128)
    model.save(padded)
    assert RewardModel.load(padded).model.get_input_embeddings().weight.shape[0] == 30_522 + 128


# --- item 14: a client that disconnects mid-body ----------------------------------------------------

class _Records(logging.Handler):
    """Collects records; `seen` is set at the first that `wanted` accepts."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if record.levelno >= logging.ERROR or "disconnected" in record.getMessage():
            self.seen.set()


def test_a_client_disconnecting_mid_body_is_one_info_line(server: str) -> None:
    records = _Records()
    loggers = [logging.getLogger(n) for n in ("uvicorn.error", "rewardlab.web.serve.reward_api")]
    levels = [lg.level for lg in loggers]
    loggers[1].setLevel(logging.INFO)
    for lg in loggers:
        lg.addHandler(records)
    try:
        host, port = server.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=60) as s:
            s.sendall(f"POST /get_reward HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: "
                      f"application/json\r\nContent-Length: 1000\r\n\r\n".encode()
                      + b'{"query": ["')
        assert records.seen.wait(60), "the server logged nothing about the disconnect"
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(records)
            lg.setLevel(level)
    errors = [r for r in records.records if r.levelno >= logging.WARNING]
    assert not errors, [r.getMessage()[:200] for r in errors]
    lines = [r for r in records.records if "disconnected" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO and lines[0].exc_info is None
    assert "/get_reward" in lines[0].getMessage()
    assert HTTP.post(f"{server}/get_reward", json={"query": [QUERY]}).status_code == 200


# --- item 15: a stop with queued work ----------------------------------------------------------------

def test_stop_answers_the_queue_503_and_finishes_the_batch_in_flight(
        checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = RewardModel.load(checkpoint)
    entered, release = threading.Event(), threading.Event()
    score_encoded = model.score_encoded

    def gated(enc: Any, **kwargs: Any) -> np.ndarray:  # the batch in flight waits for the test
        entered.set()
        assert release.wait(300)
        return score_encoded(enc, **kwargs)

    monkeypatch.setattr(model, "score_encoded", gated)
    app = create_serve_app(model, ServeConfig(max_batch=1, max_wait_ms=0, precision="fp32"))
    queries = [f"\n\nHuman: question {i}\n\nAssistant: answer {i}" for i in range(6)]
    stack = contextlib.ExitStack()
    # a grace period far longer than the test: nothing here may depend on uvicorn's timeout
    url = stack.enter_context(background_server(app, graceful_seconds=600))
    pool = ThreadPoolExecutor(max_workers=6)
    stopper = threading.Thread(target=stack.close, name="stopper")
    try:
        def post(q: str) -> httpx.Response:
            return httpx.post(f"{url}/get_reward", json={"query": [q]}, timeout=300)

        in_flight = pool.submit(post, queries[0])
        assert entered.wait(60), "the first request never reached the model"
        queued = [pool.submit(post, q) for q in queries[1:]]
        _until(lambda: app.state.batcher.stats.pending == 6, "5 requests queued")
        stopper.start()  # what SIGTERM does: uvicorn's shutdown
        answers = [f.result(timeout=60) for f in queued]  # while the batch in flight still waits
        assert not in_flight.done()
        for r in answers:
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "5" and r.headers["content-type"].startswith(
                "application/json")
            assert "shutting down" in r.json()["error"] and r.json()["field"] is None
        release.set()
        first = in_flight.result(timeout=300)
        assert first.status_code == 200, first.text
        np.testing.assert_allclose(first.json()["rewards"],
                                   model.score(["Human: question 0"], ["answer 0"]), rtol=1e-5,
                                   atol=1e-6)
        stopper.join(timeout=300)
        assert not stopper.is_alive()
    finally:
        release.set()
        pool.shutdown(wait=True)
        if not stopper.is_alive() and not stopper.ident:
            stack.close()


def _until(condition: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout:g} s: {what}")
        time.sleep(0.02)


def test_a_closed_batcher_turns_new_requests_away() -> None:
    def score(prompts: list[str], responses: list[str]) -> Scored:
        return Scored([1.0] * len(prompts), [False] * len(prompts))

    async def scenario() -> tuple[int, BaseException | None]:
        batcher = MicroBatcher(score, max_batch=4, max_wait_s=0.0)
        await batcher.start()
        await batcher.score(["p"], ["r"])
        turned_away = batcher.close()
        error: BaseException | None = None
        try:
            await batcher.score(["p"], ["r"])
        except BatcherClosed as e:
            error = e
        await batcher.stop()
        return turned_away, error

    turned_away, error = asyncio.run(scenario())
    assert turned_away == 0 and isinstance(error, BatcherClosed)
