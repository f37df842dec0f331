"""A small client for OpenAI-compatible chat completions (OpenAI, vLLM, Ollama, llama.cpp server…).

One `POST {url}/chat/completions` per call, standard library only (`urllib`), safe to share across
threads. Retries with exponential backoff on 429, 5xx, timeouts and dropped connections, honouring
`Retry-After`; 401/403/404 stop further calls for that model (a wrong key or model name would fail
the same way for every pair). The API key goes in the `Authorization: Bearer` header and nowhere
else: every error message passes through `ChatClient.mask`.

>>> client = ChatClient("http://127.0.0.1:8000/v1", key=None)           # doctest: +SKIP
>>> client.complete("llama3", [{"role": "user", "content": "hi"}]).content  # doctest: +SKIP
'Hello!'
"""

from __future__ import annotations

import email.utils
import json
import math
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ChatClient", "ChatError", "ChatReply", "parse_judgement"]

_RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_FATAL_STATUS = frozenset({401, 403, 404})  # the same answer for every call to this model
_MAX_BODY = 4 << 20  # a chat completion is a few KB; more is not an answer


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


@dataclass
class ChatClient:
    """Calls to one endpoint; `key` (may be None: local servers need none) is never shown."""

    url: str
    key: str | None = field(default=None, repr=False)
    timeout: float = 60.0  # seconds per HTTP request
    retries: int = 4  # further attempts after a retryable failure
    backoff: float = 1.0  # seconds before the first retry, doubled each time
    max_wait: float = 60.0  # cap on one wait, Retry-After included
    _stopped: dict[str, str] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def endpoint(self) -> str:
        return self.url.rstrip("/") + "/chat/completions"

    def mask(self, text: str) -> str:
        """`text` with the key replaced by `***` (servers echo headers in error pages)."""
        return text.replace(self.key, "***") if self.key else text

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
                    raise ChatError(e.kind, self.mask(e.message), attempt) from None
                time.sleep(self._wait(attempt, e.retry_after))
            except ChatError as e:
                if e.kind in {f"http {s}" for s in _FATAL_STATUS}:
                    with self._lock:
                        self._stopped.setdefault(model, e.kind)
                raise ChatError(e.kind, self.mask(e.message), attempt) from None
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
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read(_MAX_BODY + 1)
        except urllib.error.HTTPError as e:
            raise _http_error(e) from None
        except (TimeoutError, socket.timeout):
            raise _Retryable("timeout", f"no reply within {self.timeout:g} s") from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, (TimeoutError, socket.timeout)):
                raise _Retryable("timeout", f"no reply within {self.timeout:g} s") from None
            raise _Retryable("connection", f"{self.endpoint}: {e.reason}") from None
        except (ConnectionError, OSError) as e:  # reset mid-reply, remote closed, …
            raise _Retryable("connection", f"{self.endpoint}: {e}") from None
        if len(raw) > _MAX_BODY:
            raise ChatError("bad response", f"reply larger than {_MAX_BODY:,} bytes", 1)
        try:
            document = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ChatError("bad response", "reply is not JSON", 1) from None
        if not isinstance(document, dict):
            raise ChatError("bad response", "reply is not a JSON object", 1)
        return document


class _Retryable(Exception):
    def __init__(self, kind: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.retry_after = kind, message, retry_after


def _http_error(error: urllib.error.HTTPError) -> Exception:
    detail = _error_detail(error)
    if error.code in _RETRY_STATUS or error.code >= 500:
        return _Retryable(f"http {error.code}", detail, _retry_after(error.headers.get("Retry-After")))
    return ChatError(f"http {error.code}", detail, 1)


def _error_detail(error: urllib.error.HTTPError) -> str:
    """The server's own message (OpenAI's {"error": {"message": …}}), one line, short."""
    try:
        raw = error.read(2000).decode("utf-8", "replace")
    except OSError:
        raw = ""
    try:
        message = json.loads(raw)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = raw
    text = " ".join(str(message).split())[:200]
    return f"{error.reason}" + (f": {text}" if text else "")


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
