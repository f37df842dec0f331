"""llm_judge against hostile endpoints (issue 27): real sockets on loopback that redirect, echo the
key, answer garbage or dribble a byte at a time. The key must go to the configured host only and
never reach the terminal, a log or the store; one bad reply must never end `rewardlab flag`.
"""

from __future__ import annotations

import json
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import MetaData, create_engine, select

from rewardlab.cli.main import main
from rewardlab.data.pairs import PreferencePair
from rewardlab.data.synthetic import read_synthetic
from rewardlab.errors import SelectionError
from rewardlab.flags.detectors.judge import LlmJudge
from rewardlab.flags.detectors.judge_client import ChatClient, mask_secret
from rewardlab.store.store import Store
from tests.openai_server import OpenAIServer

KEY = "sk-Qz7vXw2Rk9Lm4Np8Ts6Yb3Hc5Jd1Fg0"  # no 6 characters of it occur in any other text here
PIECE = 6  # the shortest piece of the key that counts as leaked
N = 6  # pairs

Reply = Callable[["Request"], bytes | None]


def assert_no_key(text: str | bytes, where: str) -> None:
    """Neither the key nor any PIECE characters of it are in `text`."""
    data = text.encode("latin-1", "replace") if isinstance(text, str) else text
    for i in range(len(KEY) - PIECE + 1):
        assert KEY[i:i + PIECE].encode() not in data, f"{KEY[i:i + PIECE]!r} leaked into {where}"


class Request:
    """One request as a raw server received it."""

    def __init__(self, head: bytes, sock: socket.socket, stop: threading.Event) -> None:
        self.head, self.body, self.sock, self.stop = head, b"", sock, stop
        lines = head.decode("latin-1").split("\r\n")
        self.method = lines[0].split(" ")[0]
        self.headers = {k.strip().lower(): v.strip()
                        for k, _, v in (line.partition(":") for line in lines[1:] if line)}

    @property
    def model(self) -> str:
        return str(json.loads(self.body)["model"]) if self.body else ""


class RawServer(socketserver.ThreadingTCPServer):
    """A TCP server on loopback that reads one HTTP request per connection, records it and lets
    `reply` answer: the bytes it returns are sent as they are (it may also write to the socket
    itself and return None)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, reply: Reply, host: str = "127.0.0.1") -> None:
        super().__init__((host, 0), _RawHandler)
        self.reply = reply
        self.requests: list[Request] = []
        self.stop = threading.Event()  # a dribbling reply ends when this is set
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"


class _RawHandler(socketserver.BaseRequestHandler):
    server: RawServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        request = Request(head, sock, self.server.stop)
        length = int(request.headers.get("content-length", "0"))
        while len(body) < length:
            body += sock.recv(65536)
        request.body = body
        with self.server.lock:
            self.server.requests.append(request)
        try:
            answer = self.server.reply(request)
            if answer is not None:
                sock.sendall(answer)
        except OSError:
            pass  # the client gave up (the deadline tests)


@contextmanager
def raw_server(reply: Reply, host: str = "127.0.0.1") -> Iterator[RawServer]:
    try:
        server = RawServer(reply, host)
    except OSError:  # 127.0.0.2 is loopback on Linux; elsewhere another port is another origin
        server = RawServer(reply, "127.0.0.1")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        server.shutdown()
        server.server_close()


def http_reply(status: str, payload: object, headers: str = "") -> bytes:
    body = json.dumps(payload).encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
            f"\r\nConnection: close\r\n{headers}\r\n").encode() + body


def completion(content: str) -> bytes:
    return http_reply("200 OK", {"choices": [{"index": 0, "message": {"role": "assistant",
                                                                        "content": content}}],
                                 "usage": {"prompt_tokens": 1, "completion_tokens": 1}})


VERDICT = completion(json.dumps({"preferred": "A", "confidence": 1.0}))


@pytest.fixture(scope="module")
def pairs() -> list[PreferencePair]:
    return read_synthetic(f"synthetic:n={N},noise=0.25,seed=0", split="train").pairs


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("HARDENING_KEY", KEY)
    return KEY


def judge(url: str, models: str = "oracle", **options: object) -> LlmJudge:
    settings: dict = {"progress": False, "backoff": 0.0, "retries": 0, "concurrency": 1,
                      "key_env": "HARDENING_KEY", **options}
    return LlmJudge(url=url, models=models, **settings)


def ingest(tmp_path: Path, n: int = N) -> str:
    db = f"sqlite:///{tmp_path}/flag.db"
    with Store(db) as store:
        store.ingest("syn", read_synthetic(f"synthetic:n={n},noise=0.25,seed=0"))
    return db


def flag(db: str, url: str, models: str, *extra: str) -> list[str]:
    return ["flag", "syn", "--detectors", "llm_judge", "--db", db, "--judge-url", url,
            "--judge-model", models, "--judge-key-env", "HARDENING_KEY", "--judge-retries", "0",
            "--judge-concurrency", "1", *extra]


def error_lines(err: str) -> list[str]:
    """stderr without the progress bars."""
    return [line for line in err.splitlines() if line.startswith("rewardlab")]


def stored_text(db_url: str) -> str:
    """Every row of every table, as text (the whole store, whatever its schema)."""
    engine = create_engine(db_url)
    try:
        meta = MetaData()
        meta.reflect(engine)
        with engine.connect() as connection:
            return "\n".join(repr(row) for table in meta.sorted_tables
                             for row in connection.execute(select(table)))
    finally:
        engine.dispose()


# ---- item 1: redirects ----------------------------------------------------------------------

@pytest.mark.parametrize("status", ["301 Moved Permanently", "302 Found", "303 See Other",
                                    "307 Temporary Redirect", "308 Permanent Redirect"])
def test_a_redirect_is_never_followed_and_stops_the_judge(status: str, key: str,
                                                          pairs: list[PreferencePair]) -> None:
    with raw_server(lambda r: VERDICT, host="127.0.0.2") as elsewhere:
        target = f"{elsewhere.url}/chat/completions"
        with raw_server(lambda r: http_reply(status, {}, f"Location: {target}\r\n")) as endpoint:
            result = judge(endpoint.url).detect(pairs)
    # the other host heard nothing: no key, no prompts, and none of its answers became verdicts
    assert elsewhere.requests == []
    assert len(endpoint.requests) == 1  # every later call would be redirected too: not sent
    assert endpoint.requests[0].headers["authorization"] == f"Bearer {KEY}"
    code = status.split()[0]
    assert result.params["errors"] == {"oracle": {f"http {code}": 1, "skipped": 2 * N - 1}}
    assert result.params["unjudged"] == N and np.isnan(result.scores).all()
    assert any(f"redirect to {target} not followed" in note for note in result.params["notes"])


# ---- item 2: the key is never shown or stored -------------------------------------------------

def echo_the_key(request: Request) -> bytes:
    """Replies that repeat the Authorization header the way careless servers do: whole, and
    where a cut at 120 (an unparseable reply) or 200 characters (an error message) splits it."""
    header = request.headers.get("authorization", "")
    if request.model == "echo":
        return completion(f"I cannot. Your header was {header}")
    if request.model == "cut":  # "Bearer " starts 5 characters before the 120-character cut
        return completion("I cannot comply, " + "x" * 71 + f" your header was {header} ok")
    # a 400 whose message reaches the 200-character cut in the middle of the key
    return http_reply("400 Bad Request", {"error": {"message": "y" * 160 + f" got {header}"}})


def test_a_key_echoed_by_the_server_is_never_printed_logged_or_stored(
        key: str, tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    with Store(db_url) as store:
        store.ingest("syn", read_synthetic(f"synthetic:n={N},noise=0.25,seed=0"))
    with raw_server(echo_the_key) as server, caplog.at_level(logging.DEBUG):
        capsys.readouterr()
        codes = [main(flag(db_url, server.url, "echo,cut,err"))]
        out, err = capsys.readouterr()
        codes.append(main([*flag(db_url, server.url, "echo,cut,err"), "--json"]))
        out_json, err_json = capsys.readouterr()
    # the servers did echo it: the test would prove nothing otherwise
    assert {r.headers["authorization"] for r in server.requests} == {f"Bearer {KEY}"}
    assert "unparseable replies, e.g." in out and "failed calls (http 400)" in out
    assert "Bearer ***" in out
    for text, where in [(out, "stdout"), (err, "stderr"), (out_json, "--json stdout"),
                        (err_json, "--json stderr"), (caplog.text, "the log"),
                        (stored_text(db_url), "the store")]:
        assert_no_key(text, where)
    if db_url.startswith("sqlite"):  # the file itself, free pages and journal included
        for path in tmp_path.glob("t.db*"):
            assert_no_key(path.read_bytes(), path.name)
    with Store(db_url) as store:
        params = store.latest_runs("syn")["llm_judge"]["params"]
    assert params["unparseable"] == {"echo": 2 * N, "cut": 2 * N}
    assert params["errors"] == {"err": {"http 400": 2 * N}}
    assert codes == [1, 1]  # nothing could be judged (item 8)


def test_no_cut_of_a_message_leaves_a_piece_of_the_key() -> None:
    client = ChatClient("http://127.0.0.1:9/v1", key=KEY)
    text = f"error: your header was Bearer {KEY}, which we log"
    for limit in range(len(text) + 1):
        shown = client.shown(text, limit)
        assert_no_key(shown, f"a cut at {limit}")
        assert len(shown) <= limit
    # a piece the server itself cut off is masked too, at either end of the key
    assert mask_secret(f"got {KEY[:12]}… and …{KEY[-9:]}", KEY) == "got ***… and …***"
    assert mask_secret("nothing secret here", KEY) == "nothing secret here"
    assert mask_secret(f"x{KEY}y", None) == f"x{KEY}y"


# ---- item 3: user:password in the URL ---------------------------------------------------------

def test_a_password_in_the_judge_url_is_refused_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = ingest(tmp_path)
    with OpenAIServer() as server:
        rest = server.url.split("//")[1]  # 127.0.0.1:PORT/v1
        capsys.readouterr()
        url = f"http://judge-user:pa55w0rd-x9@{rest}"
        assert main(flag(db, url, "oracle")) == 2
        out, err = capsys.readouterr()
        assert len(error_lines(err)) == 1 and "must not contain a user name or password" in err
        assert f"http://***@{rest}" in err
        assert main(["flag", "syn", "--db", db, "--detectors", "llm_judge", "--param",
                     f"llm_judge.url={url}", "--param", "llm_judge.models=oracle"]) == 2
        out2, err2 = capsys.readouterr()
        assert server.calls() == 0  # nothing was sent
    for text in (out, err, out2, err2):
        assert "pa55w0rd" not in text and "judge-user" not in text
    with Store(db) as store:
        assert store.latest_runs("syn") == {}  # nothing ran, nothing stored
    for bad in ("http://u:pa55w0rd-x9@127.0.0.1:9/v1", "http://pa55w0rd-x9@127.0.0.1:9/v1",
                "u:pa55w0rd-x9@127.0.0.1:9/v1", "https://:pa55w0rd-x9@host/v1"):
        with pytest.raises(SelectionError, match="must not contain a user name") as caught:
            LlmJudge(url=bad, models="m")
        assert "pa55w0rd" not in str(caught.value)
    for bad in ("http://127.0.0.1:99999/v1", "http://127.0.0.1:x/v1", "http://[::1/v1"):
        with pytest.raises(SelectionError, match="--judge-url"):
            LlmJudge(url=bad, models="m")
    for timeout in (0.0, float("nan"), float("inf"), 1e12):  # a timer or socket would overflow
        with pytest.raises(SelectionError, match=r"timeout must be in \(0, 86400\]"):
            LlmJudge(url="http://127.0.0.1:9/v1", models="m", timeout=timeout)
    # an '@' after the host is not a password
    assert LlmJudge(url="http://127.0.0.1:9/v1?x=a@b", models="m").params["url"].endswith("a@b")


# ---- item 6: malformed HTTP replies -----------------------------------------------------------

GARBAGE = {
    "not HTTP": b"HELLO THERE\r\n\r\n",  # BadStatusLine
    "bad chunk size": (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                       b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"),
    "header line too long": b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n",
}


@pytest.mark.parametrize("garbage", list(GARBAGE))
def test_a_malformed_http_reply_is_a_failed_call_like_a_500(
        garbage: str, key: str, pairs: list[PreferencePair]) -> None:
    with raw_server(lambda r: GARBAGE[garbage]) as server:
        result = judge(server.url, retries=1).detect(pairs)
    assert result.params["errors"] == {"oracle": {"malformed http": 2 * N}}
    assert len(server.requests) == 2 * 2 * N  # retried once, as a 500 is
    assert result.params["unjudged"] == N
    assert any("failed calls (malformed http), e.g. http://127.0.0.1:" in note
               for note in result.params["notes"])


def test_flag_survives_malformed_replies_and_keeps_the_good_answers(
        key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = ingest(tmp_path)

    def half_garbage(request: Request) -> bytes:
        return GARBAGE["not HTTP"] if request.model == "garbage" else VERDICT

    with raw_server(half_garbage) as server:
        capsys.readouterr()
        assert main(flag(db, server.url, "garbage,fine")) == 0  # one judge answered: a result
        out, err = capsys.readouterr()
    train = len(Store(db).load_pairs("syn", split="train"))
    assert f"llm_judge: garbage: {2 * train} failed calls (malformed http)" in out
    assert "Traceback" not in out + err and error_lines(err) == []
    run = Store(db).latest_runs("syn")["llm_judge"]
    assert run["params"]["judged"] == train and run["params"]["usage"]["fine"]["answers_new"] == 2 * train


# ---- item 7: the timeout is a deadline for the whole call -------------------------------------

def dribble(prefix: bytes) -> Reply:
    """Send `prefix` at once, then a valid reply's bytes one every half second: each read gets a
    byte well within any per-read timeout, so only a deadline on the whole call ends it."""

    def reply(request: Request) -> None:
        request.sock.sendall(prefix)
        for byte in VERDICT[len(prefix):]:
            if request.stop.wait(0.5):  # the test is over
                return
            request.sock.sendall(bytes([byte]))

    return reply


@pytest.mark.parametrize("prefix", [b"", VERDICT[:VERDICT.index(b"\r\n\r\n") + 4]],
                         ids=["status line and headers", "body"])
def test_a_dribbling_server_cannot_keep_a_call_alive(prefix: bytes, key: str,
                                                     pairs: list[PreferencePair]) -> None:
    outcome = {}
    with raw_server(dribble(prefix)) as server:
        detector = judge(server.url, timeout=1.0, concurrency=2)
        started = time.monotonic()
        worker = threading.Thread(target=lambda: outcome.update(result=detector.detect(pairs[:1])),
                                  daemon=True)
        worker.start()
        worker.join(60)  # the dribble alone would take VERDICT's length / 2 s (over 100 s)
        elapsed = time.monotonic() - started
        assert not worker.is_alive(), "the call outlived its 1 s deadline by a minute"
    assert outcome["result"].params["errors"] == {"oracle": {"timeout": 2}}
    assert len(server.requests) == 2 and elapsed < 60


# ---- item 8: a run that judged nothing fails ----------------------------------------------------

def test_flag_exits_non_zero_only_when_nothing_was_judged(
        key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = ingest(tmp_path)
    train = len(Store(db).load_pairs("syn", split="train"))
    with OpenAIServer() as server:
        capsys.readouterr()
        assert main(flag(db, server.url, "broken")) == 1
        out, err = capsys.readouterr()
        assert f"UNJUDGED: {train} of {train} pairs" in out
        assert error_lines(err) == [f"rewardlab: error: llm_judge judged none of the {train} "
                                    "pairs: every call failed or did not parse (the notes say why)"]
        # one judge of two answering is a result, with the other's failures in the notes
        assert main(flag(db, server.url, "oracle,broken")) == 0
        out, err = capsys.readouterr()
        assert error_lines(err) == [] and f"broken: {2 * train} failed calls (http 500)" in out
        # answered from the cache on a re-run: judged, exit 0 although no call was made
        server.reset()
        assert main(flag(db, server.url, "oracle")) == 0
        assert server.calls() == 0
