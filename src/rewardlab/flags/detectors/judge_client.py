"""A small client for OpenAI-compatible chat completions (OpenAI, vLLM, Ollama, llama.cpp server…).

One `POST {url}/chat/completions` per call, standard library only (`urllib`, so the environment's
proxies apply), safe to share across threads. Retries with exponential backoff on 429, 5xx,
timeouts, dropped connections and malformed HTTP replies, honouring `Retry-After`; 401/403/404
and redirects stop further calls for that model (a wrong key, model name or URL would fail the
same way for every pair). Redirects are never followed: urllib would repeat the call, key
included, to whatever host the `Location` names. `timeout` is a deadline for the whole call
(connect, send, wait, read), not per socket read: a server sending a byte a second cannot keep a
call alive. The API key goes in the `Authorization: Bearer` header and nowhere else: every text
the client hands back passes through `ChatClient.shown`.

>>> client = ChatClient("http://127.0.0.1:8000/v1", key=None)           # doctest: +SKIP
>>> client.complete("llama3", [{"role": "user", "content": "hi"}]).content  # doctest: +SKIP
'Hello!'
"""

from __future__ import annotations

import email.utils
import http.client
import json
import math
import random
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from functools import partial
from typing import Any

__all__ = ["ChatClient", "ChatError", "ChatReply", "mask_secret", "parse_judgement"]

_RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_FATAL_STATUS = frozenset({401, 403, 404})  # the same answer for every call to this model
_MAX_BODY = 4 << 20  # a chat completion is a few KB; more is not an answer
_SHOWN_CHARS = 200  # a server's message is cut to this for notes and params
_KEY_PART = 6  # a piece of the key this long (its start or end, cut by someone) is masked too


@dataclass(frozen=True)
class ChatReply:
    """The assistant message of one completion, with what the endpoint reported spending."""

    content: str
    prompt_tokens: int
    completion_tokens: int
    cost: float | None  # `usage.cost` when the endpoint reports one (e.g. OpenRouter)
    attempts: int  # HTTP requests it took (1 + retries)


class ChatError(Exception):
    """A call that gave no reply: `kind` is what gets counted (e.g. "http 500", "timeout")."""

    def __init__(self, kind: str, message: str, attempts: int) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind, self.message, self.attempts = kind, message, attempts


def mask_secret(text: str, secret: str | None) -> str:
    """`text` with `secret` replaced by `***`, and also any piece of it at least `_KEY_PART`
    characters long that starts or ends where the secret does (what a cut echo leaves).

    >>> mask_secret("was Bearer sk-abcdefgh; cut: sk-abcd…, …cdefgh, sk-", "sk-abcdefgh")
    'was Bearer ***; cut: ***…, …***, sk-'
    """
    if not secret:
        return text
    text = text.replace(secret, "***")
    # the end pieces: the start pieces of the reversed text ("***" reads the same both ways)
    return _mask_starts(_mask_starts(text, secret)[::-1], secret[::-1])[::-1]


def _mask_starts(text: str, secret: str) -> str:
    """`text` with every run that is a start of `secret`, `_KEY_PART`+ characters, masked."""
    head = secret[:_KEY_PART]
    out, i = [], 0
    while (start := text.find(head, i)) >= 0:
        end = start + len(head)
        while end < len(text) and end - start < len(secret) and text[end] == secret[end - start]:
            end += 1
        out += [text[i:start], "***"]
        i = end
    return "".join(out) + text[i:]


@dataclass
class ChatClient:
    """Calls to one endpoint; `key` (may be None: local servers need none) is never shown."""

    url: str
    key: str | None = field(default=None, repr=False)
    timeout: float = 60.0  # seconds for a whole call: connect, send, wait and read
    retries: int = 4  # further attempts after a retryable failure
    backoff: float = 1.0  # seconds before the first retry, doubled each time
    max_wait: float = 60.0  # cap on one wait, Retry-After included
    _stopped: dict[str, str] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def endpoint(self) -> str:
        return self.url.rstrip("/") + "/chat/completions"

    def mask(self, text: str) -> str:
        """`text` with the key (and any cut piece of it) replaced by `***`: servers echo headers."""
        return mask_secret(text, self.key)

    def shown(self, text: str, limit: int = _SHOWN_CHARS) -> str:
        """`text` as one line of at most `limit` characters, safe to print, log and store: masked
        before the cut (so the cut never splits the key) and again after it."""
        return self.mask(" ".join(self.mask(text).split())[:limit])

    def complete(self, model: str, messages: list[dict[str, str]], *, max_tokens: int = 100,
                 temperature: float = 0.0) -> ChatReply:
        """One completion; ChatError when every attempt failed or the model was stopped."""
        with self._lock:
            stopped = self._stopped.get(model)
        if stopped is not None:
            raise ChatError("skipped", f"not called after an earlier {stopped}", 0)
        body = json.dumps({"model": model, "messages": messages, "max_tokens": max_tokens,
                           "temperature": temperature}).encode()
        for attempt in range(1, self.retries + 2):
            try:
                return _reply(self._post(body), attempts=attempt)
            except _Retryable as e:
                if attempt > self.retries:
                    raise ChatError(e.kind, self.shown(e.message), attempt) from None
                time.sleep(self._wait(attempt, e.retry_after))
            except ChatError as e:
                if _stops_the_model(e.kind):
                    with self._lock:
                        self._stopped.setdefault(model, e.kind)
                raise ChatError(e.kind, self.shown(e.message), attempt) from None
        raise AssertionError("unreachable")  # the loop returns or raises

    def _wait(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_wait)
        wait = self.backoff * 2.0 ** (attempt - 1)
        # a little jitter keeps concurrent workers from retrying in lockstep
        return min(wait * (1.0 + 0.25 * random.random()), self.max_wait)

    def _post(self, body: bytes) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        request = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
        with _Deadline(self.timeout) as deadline:
            try:
                with _opener(deadline).open(request, timeout=self.timeout) as response:
                    raw = response.read(_MAX_BODY + 1)
            except urllib.error.HTTPError as e:
                with e:  # its body is read here, under the deadline, then the socket goes
                    raise _http_error(e, self.endpoint) from None
            except (OSError, http.client.HTTPException) as e:
                raise self._transport_error(e, deadline.expired) from None
            if deadline.expired:  # the socket was shut under a reply without a length
                raise self._transport_error(TimeoutError(), expired=True)
        return _document(raw)

    def _transport_error(self, error: Exception, expired: bool) -> _Retryable:
        """What a call that got no HTTP status (or an unreadable reply) is counted as."""
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        if expired or isinstance(reason, TimeoutError):
            return _Retryable("timeout", f"no complete reply within {self.timeout:g} s")
        if isinstance(reason, http.client.HTTPException) and not isinstance(reason, ConnectionError):
            # BadStatusLine, IncompleteRead (a bad chunk size), LineTooLong, …
            return _Retryable("malformed http", f"{self.endpoint}: not a valid HTTP reply "
                                                f"({type(reason).__name__}: {reason})")
        return _Retryable("connection", f"{self.endpoint}: {reason}")


def _stops_the_model(kind: str) -> bool:
    """401/403/404 and every redirect: the next call to this model would get the same."""
    return kind in {f"http {s}" for s in _FATAL_STATUS} or kind.startswith("http 3")


def _document(raw: bytes) -> dict[str, Any]:
    if len(raw) > _MAX_BODY:
        raise ChatError("bad response", f"reply larger than {_MAX_BODY:,} bytes", 1)
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ChatError("bad response", "reply is not JSON", 1) from None
    if not isinstance(document, dict):
        raise ChatError("bad response", "reply is not a JSON object", 1)
    return document


class _Deadline:
    """Ends a call `seconds` after it starts, whatever the server does. Socket timeouts bound
    each read, so a server sending a byte a second would keep a call alive forever; at the
    deadline this shuts the call's sockets down, and the read blocked on one returns at once."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def watch(self, sock: socket.socket) -> socket.socket:
        """Shut `sock` down at the deadline (now, if it has passed)."""
        with self._lock:
            late = self.expired
            if not late:
                self._sockets.append(sock)
        if late:
            _shut(sock)
        return sock

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    # the plain socket's shutdown, also for a TLS socket (whose own would drop its state under
    # the reading thread); a socket closed since has no descriptor left and raises OSError
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


class _WatchedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection whose sockets `deadline` shuts down when the call's time is up."""

    def __init__(self, host: str, *, deadline: _Deadline, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        self._deadline = deadline
        # http.client opens its socket through this attribute: the socket is watched from the
        # start, the TLS handshake and a proxy's CONNECT included
        self._create_connection = self._watched_socket

    def _watched_socket(self, *args: Any, **kwargs: Any) -> socket.socket:
        return self._deadline.watch(socket.create_connection(*args, **kwargs))

    def connect(self) -> None:
        super().connect()
        self._deadline.watch(self.sock)  # HTTPS: the TLS socket that took over the plain one


class _WatchedHTTPSConnection(_WatchedHTTPConnection, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(partial(_WatchedHTTPConnection, deadline=self._deadline), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(partial(_WatchedHTTPSConnection, deadline=self._deadline), req)


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx stays an HTTPError: followed, it would send the key and the prompts to whatever
    host the `Location` names (urllib keeps the Authorization header across hosts)."""

    def redirect_request(self, *args: Any) -> None:
        return None


def _opener(deadline: _Deadline) -> urllib.request.OpenerDirector:
    """urllib's opener (the environment's proxies included) without redirects, every socket
    under `deadline`."""
    return urllib.request.build_opener(_RefuseRedirects(), _HTTPHandler(deadline),
                                       _HTTPSHandler(deadline))


class _Retryable(Exception):
    def __init__(self, kind: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.retry_after = kind, message, retry_after


def _http_error(error: urllib.error.HTTPError, endpoint: str) -> Exception:
    if 300 <= error.code < 400:
        where = urllib.parse.urljoin(endpoint, error.headers.get("Location") or "") or "nowhere"
        return ChatError(f"http {error.code}", f"redirect to {where} not followed (judge calls "
                                               "never follow redirects: the key would go along)", 1)
    detail = _error_detail(error)
    if error.code in _RETRY_STATUS or error.code >= 500:
        return _Retryable(f"http {error.code}", detail, _retry_after(error.headers.get("Retry-After")))
    return ChatError(f"http {error.code}", detail, 1)


def _error_detail(error: urllib.error.HTTPError) -> str:
    """The server's own message (OpenAI's {"error": {"message": …}}), uncut: the client masks
    the key in it before cutting it short (`ChatClient.shown`)."""
    try:
        raw = error.read(2000).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        raw = ""
    try:
        message = json.loads(raw)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = raw
    text = str(message)
    return f"{error.reason}" + (f": {text}" if text.strip() else "")


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), None if absent/odd."""
    if not value:
        return None
    try:
        seconds = float(value)
        return seconds if math.isfinite(seconds) else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time()


def _reply(document: dict[str, Any], *, attempts: int) -> ChatReply:
    """The first choice's message content and the usage block of a chat-completions reply."""
    try:
        content = document["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise ChatError("bad response", "no choices[0].message.content in the reply",
                        attempts) from None
    raw = document.get("usage")
    usage: dict[str, Any] = raw if isinstance(raw, dict) else {}
    cost = usage.get("cost")
    return ChatReply(content=content if isinstance(content, str) else "",
                     prompt_tokens=_count(usage.get("prompt_tokens")),
                     completion_tokens=_count(usage.get("completion_tokens")),
                     cost=float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool)
                     else None, attempts=attempts)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def parse_judgement(content: str) -> tuple[str, float]:
    """("A" | "B", confidence in [0, 1]) from a reply that is exactly one JSON object
    {"preferred": "A"|"B", "confidence": number} (other keys ignored; one ``` fence allowed).
    ValueError saying what is wrong otherwise: no prose around it, no guessing.

    >>> parse_judgement('{"preferred": "B", "confidence": 0.8}')
    ('B', 0.8)
    """
    text = content.strip()
    if text.startswith("```") and text.endswith("```") and len(text) > 6:
        text = text[3:-3].strip()
        text = text[4:].lstrip() if text[:4].lower() == "json" else text
    try:
        answer = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError("not a JSON object") from None
    if not isinstance(answer, dict):
        raise ValueError("not a JSON object")
    preferred, confidence = answer.get("preferred"), answer.get("confidence")
    if preferred not in ("A", "B"):
        raise ValueError(f'"preferred" must be "A" or "B", got {preferred!r}')
    if (isinstance(confidence, bool) or not isinstance(confidence, (int, float))
            or not 0.0 <= confidence <= 1.0):
        raise ValueError(f'"confidence" must be a number in [0, 1], got {confidence!r}')
    return preferred, float(confidence)
