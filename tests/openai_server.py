"""A small OpenAI chat-completions server for tests: real HTTP on loopback, standard library only.

`POST /v1/chat/completions` answers as the requested `model` behaves (the name's prefix decides;
"oracle-a" and "oracle-b" are two judges that both behave as "oracle"):

- oracle      prefers the reply with the higher synthetic quality (`quality_of`), confidence 0.9
- contrarian  the opposite of oracle
- first       always "A", whatever the replies (a pure position bias)
- malformed   prose instead of JSON for requests whose content hash is divisible by 3, else oracle
- flaky       the first attempt at each distinct request fails (429 and 500 alternately), the
              second answers as oracle
- retryafter  the first attempt at each distinct request is a 429 with `Retry-After: 1`
- broken      always 500
- slow        sleeps `slow_seconds` before answering as oracle
- priced      oracle, with `usage.cost` = 0.001 per call
- echokey     400 whose error message echoes the request's Authorization header
- anything else: 404 "model not found"

With `key` set, a request without `Authorization: Bearer {key}` gets 401. Every request is recorded
(`requests`: model, the two replies as shown, the Authorization header, arrival time), so tests can
count calls, check both orders were asked and that the key went as a Bearer token.

>>> with OpenAIServer() as server:                                   # doctest: +SKIP
...     LlmJudge(url=server.url, models="oracle").detect(pairs)
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from rewardlab.data.synthetic import quality_of

__all__ = ["OpenAIServer", "Seen", "responses_of"]

_RESPONSE = {side: re.compile(rf"\[Response {side}\]\n(.*?)\n\[End of Response {side}\]", re.S)
             for side in "AB"}
BEHAVIOURS = ("oracle", "contrarian", "first", "malformed", "flaky", "retryafter", "broken",
              "slow", "priced", "echokey")


def responses_of(messages: list[dict[str, str]]) -> tuple[str, str]:
    """(Response A, Response B) as the bundled template shows them in the user message."""
    user = next(m["content"] for m in messages if m["role"] == "user")
    a, b = (_RESPONSE[side].search(user) for side in "AB")
    assert a is not None and b is not None, user
    return a.group(1), b.group(1)


@dataclass
class Seen:
    """One request as the server received it."""

    model: str
    response_a: str
    response_b: str
    authorization: str | None
    at: float  # time.monotonic() on arrival


@dataclass
class OpenAIServer:
    """`with OpenAIServer() as server:` serves on 127.0.0.1 (a free port) until the block ends."""

    key: str | None = None
    slow_seconds: float = 2.0
    requests: list[Seen] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)  # (model, messages) hash -> requests
    malformed_sent: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> OpenAIServer:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True  # a sleeping "slow" answer must not hold up shutdown
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def calls(self, model: str | None = None) -> int:
        """Requests received so far (for one model name, or all)."""
        with self._lock:
            return sum(1 for r in self.requests if model is None or r.model == model)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.attempts.clear()
            self.malformed_sent = 0

    # ---- answering ------------------------------------------------------------------------

    def answer(self, body: dict[str, Any], authorization: str | None) -> tuple[int, dict[str, Any],
                                                                              dict[str, str]]:
        """(status, JSON body, extra headers) for one request."""
        model, messages = body["model"], body["messages"]
        a, b = responses_of(messages)
        digest = hashlib.sha256(json.dumps([model, messages]).encode()).hexdigest()
        with self._lock:
            self.requests.append(Seen(model, a, b, authorization, time.monotonic()))
            self.attempts[digest] += 1
            attempt = self.attempts[digest]
        if self.key is not None and authorization != f"Bearer {self.key}":
            return 401, _error("invalid api key"), {}
        behaviour = next((name for name in BEHAVIOURS if model.startswith(name)), None)
        if behaviour is None:
            return 404, _error(f"model {model!r} not found"), {}
        if behaviour == "broken":
            return 500, _error("internal error"), {}
        if behaviour == "echokey":
            return 400, _error(f"bad request from {authorization}"), {}
        if behaviour == "flaky" and attempt == 1:
            return (429, _error("slow down"), {"Retry-After": "0"}) if int(digest, 16) % 2 \
                else (500, _error("try again"), {})
        if behaviour == "retryafter" and attempt == 1:
            return 429, _error("rate limited"), {"Retry-After": "1"}
        if behaviour == "slow":
            time.sleep(self.slow_seconds)
        if behaviour == "malformed" and int(digest, 16) % 3 == 0:
            with self._lock:
                self.malformed_sent += 1
            return 200, _completion("I think Response A is better.", messages), {}
        content = self._verdict(behaviour, a, b)
        completion = _completion(content, messages)
        if behaviour == "priced":
            completion["usage"]["cost"] = 0.001
        return 200, completion, {}

    @staticmethod
    def _verdict(behaviour: str, a: str, b: str) -> str:
        if behaviour == "first":
            preferred = "A"
        else:
            a_better = quality_of(a) > quality_of(b)
            preferred = "A" if a_better != (behaviour == "contrarian") else "B"
        return json.dumps({"preferred": preferred, "confidence": 0.9})


def _error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "test_server"}}


def _completion(content: str, messages: list[dict[str, str]]) -> dict[str, Any]:
    prompt_tokens = sum(len(m["content"].split()) for m in messages)
    return {"id": "cmpl-test", "object": "chat.completion", "model": "test",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(content.split()),
                      "total_tokens": prompt_tokens + len(content.split())}}


def _handler(server: OpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, _error(f"no route {self.path}"), {})
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            self._send(*server.answer(body, self.headers.get("Authorization")))

        def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str]) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test): nothing to answer

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: pytest output is for failures

    return Handler
