"""Safe by default, shared by every rewardlab server: loopback binds, bearer tokens, body limits,
the Host allow-list and, for JSON APIs, no browser requests from other sites.

A server binds 127.0.0.1 unless told otherwise, and binding anything else without a token is refused
before it starts: a reward model or a review queue on 0.0.0.0 without auth is an open door.

A loopback server without a token is still reachable from a browser on this machine: any web page
can POST to it (`Content-Type: text/plain` needs no CORS preflight), and a page whose DNS name is
re-pointed at 127.0.0.1 (DNS rebinding) can even read the answers as "same origin". So the Host
header must name this server (loopback names, the bound address, names the user allows), and a JSON
API takes only JSON bodies from non-browser clients or its own origin (`JsonApiGuard`).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from rewardlab.errors import WebError

__all__ = [
    "TOKEN_ENV",
    "resolve_token",
    "check_token",
    "is_loopback",
    "check_address",
    "check_bind",
    "token_matches",
    "bearer_token",
    "BodyLimit",
    "BearerAuth",
    "host_name",
    "allowed_hosts",
    "host_allowed",
    "JsonApiGuard",
]

TOKEN_ENV = "REWARDLAB_TOKEN"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def resolve_token(token: str | None) -> str | None:
    """`--token`, else $REWARDLAB_TOKEN, else None; an empty token is an error, not "no auth"."""
    value = token if token is not None else os.environ.get(TOKEN_ENV)
    if value is not None and not value.strip():
        source = "--token" if token is not None else f"${TOKEN_ENV}"
        raise WebError(f"{source} is empty: give a token (any secret string) or leave it unset")
    if value is not None:
        check_token(value, "--token" if token is not None else f"${TOKEN_ENV}")
    return value


def check_token(value: str, source: str = "the token") -> None:
    """A token no client can send is refused at start, without echoing it: HTTP headers carry
    ASCII only (clients refuse or mangle anything else, so a non-ASCII token could never match),
    and the Bearer value is read without its surrounding spaces."""
    for i, char in enumerate(value):
        if not (char.isascii() and char.isprintable()):
            kind = "a non-ASCII" if not char.isascii() else "a control"
            raise WebError(f"{source} has {kind} character (at position {i + 1}): an HTTP "
                           "header carries printable ASCII only, so no client could send it; "
                           "use letters, digits and punctuation (e.g. `openssl rand -hex 16`)")
    if value != value.strip():
        raise WebError(f"{source} starts or ends with a space, which a Bearer header drops: "
                       "remove it")


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1; False for 0.0.0.0, :: and every other address."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def check_address(host: str, port: int) -> None:
    """`--host` not empty and `--port` in 1..65535 (each server's config checks them)."""
    if not host.strip():
        raise WebError("--host is empty: give an address, e.g. 127.0.0.1")
    if not 1 <= port <= 65535:
        raise WebError(f"--port must be in 1..65535 (got {port})")


def check_bind(host: str, token: str | None, *, command: str) -> None:
    """Refuse to listen beyond this machine without a token (raised before the server starts)."""
    if token is None and not is_loopback(host):
        raise WebError(f"{command}: refusing to bind {host} without a token: anyone who can reach "
                       f"it could use it. Pass --token T (or set ${TOKEN_ENV}), or bind 127.0.0.1")


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison, so response timing does not leak the token prefix."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def bearer_token(authorization: str | None) -> str | None:
    """The T of an `Authorization: Bearer T` header, or None."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` gets 413 with a JSON error, read no further.

    Checks Content-Length up front and counts the bytes of chunked bodies as they arrive, so a
    client cannot make the server buffer an unbounded body.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body = json.dumps({"error": f"request body exceeds {self.max_bytes} bytes",
                           "field": "body"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    """Raised inside the app's receive() when a streamed body passes the limit."""


class BearerAuth:
    """ASGI middleware: every HTTP path but `open_paths` needs `Authorization: Bearer <token>`.

    A missing or wrong token gets 401 with a JSON error and `WWW-Authenticate: Bearer`, before the
    app reads the body; unknown paths are refused too, so nothing can be probed without the token.
    """

    def __init__(self, app: ASGIApp, *, token: str, open_paths: tuple[str, ...] = ()) -> None:
        self.app = app
        self.token = token
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or []).get(b"authorization")
        given = bearer_token(header.decode("latin-1") if header is not None else None)
        if token_matches(given, self.token):
            await self.app(scope, receive, send)
            return
        reason = "missing" if given is None else "wrong"
        body = json.dumps({"error": f"{reason} bearer token: send 'Authorization: Bearer <token>'",
                           "field": "Authorization"}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})


# ---- the Host allow-list and same-origin JSON APIs -------------------------------------------------

_WILDCARDS = frozenset({"0.0.0.0", "::", ""})  # "every interface": names the server cannot know


def host_name(host_header: str) -> str:
    """'127.0.0.1:8501' → '127.0.0.1', '[::1]:8501' → '::1', 'LocalHost' → 'localhost'."""
    try:
        return (urlsplit(f"//{host_header.strip()}").hostname or "").lower()
    except ValueError:  # '[oops' and other unparseable headers name no host
        return ""


def allowed_hosts(bind_host: str, extra: Collection[str] = ()) -> frozenset[str] | None:
    """The host names a server bound to `bind_host` answers to, besides loopback ones: the bound
    address and `extra` (e.g. a reverse proxy's name). None = any: bound to every interface
    (0.0.0.0, ::) with no `extra`, the server is reached by names it cannot know, and a non-loopback
    bind has a token (`check_bind`), so a rebinding page has no credential to ride on.

    >>> sorted(allowed_hosts("127.0.0.1", ["rm.internal"]))
    ['127.0.0.1', 'rm.internal']
    >>> allowed_hosts("0.0.0.0") is None
    True
    """
    bound = bind_host.strip().strip("[]").lower()
    names = {name.strip().strip("[]").lower() for name in extra}
    if bound in _WILDCARDS and not names:
        return None
    return frozenset(names | ({bound} - _WILDCARDS))


def host_allowed(host_header: str, allowed: frozenset[str] | None) -> bool:
    """Whether a Host header names this server: a loopback name, or one of `allowed` (None: any).

    >>> host_allowed("localhost:8000", frozenset()), host_allowed("evil.example:8000", frozenset())
    (True, False)
    """
    if allowed is None:
        return True
    name = host_name(host_header)
    return bool(name) and (is_loopback(name) or name in allowed)


def _is_json(content_type: bytes | None) -> bool:
    """application/json or application/<something>+json, with any parameters (charset)."""
    if content_type is None:
        return False
    media = content_type.decode("latin-1").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/")
                                          and media.endswith("+json"))


class JsonApiGuard:
    """ASGI middleware for an API that programs call, not browsers: every request is refused with
    a JSON error, before the app reads the body, when

    - its Host header does not name this server (`host_allowed`): 400;
    - it carries an `Origin` that is not its own (a page of another site, or `null`): 403.
      Browsers send Origin with every cross-origin request and every POST; programs (OpenRLHF's
      `requests.post(url, json=...)`, the rewardlab client, curl) send none;
    - it writes (POST, PUT, PATCH) a body that is not declared JSON: 415. A cross-site form or
      `fetch` without preflight can only send text/plain, form or multipart bodies.
    """

    def __init__(self, app: ASGIApp, *, allowed: frozenset[str] | None) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, message, field = refusal
        await _send_json_error(send, status, message, field)

    def _refusal(self, scope: Scope) -> tuple[int, str, str] | None:
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1")
        if not host_allowed(host, self.allowed):
            names = ", ".join(["localhost", "127.0.0.1", "[::1]", *sorted(self.allowed or ())])
            return 400, (f"unexpected Host {host!r}: this server answers to {names} "
                         f"(more with --allow-host)"), "Host"
        origin = headers.get(b"origin")
        if origin is not None and _origin_netloc(origin.decode("latin-1")) != host.lower():
            return 403, (f"cross-origin request refused: Origin {origin.decode('latin-1')!r} is not "
                         f"this server (browser pages of other sites may not call it)"), "Origin"
        if scope["method"] in ("POST", "PUT", "PATCH") and not _is_json(
                headers.get(b"content-type")):
            given = headers.get(b"content-type", b"none").decode("latin-1")
            return 415, (f"Content-Type {given!r}: send the body as JSON with "
                         f"'Content-Type: application/json'"), "Content-Type"
        return None


def _origin_netloc(origin: str) -> str | None:
    """'http://LocalHost:8000' → 'localhost:8000'; 'null' and other non-URLs → None."""
    parts = urlsplit(origin.strip())
    return parts.netloc.lower() if parts.scheme in ("http", "https") and parts.netloc else None


async def _send_json_error(send: Send, status: int, message: str, field: str | None) -> None:
    body = json.dumps({"error": message, "field": field}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
