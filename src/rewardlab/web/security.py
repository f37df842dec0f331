"""Safe by default, shared by every rewardlab server: loopback binds, bearer tokens, body limits.

A server binds 127.0.0.1 unless told otherwise, and binding anything else without a token is refused
before it starts: a reward model or a review queue on 0.0.0.0 without auth is an open door.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from rewardlab.errors import WebError

__all__ = [
    "TOKEN_ENV",
    "resolve_token",
    "is_loopback",
    "check_address",
    "check_bind",
    "token_matches",
    "bearer_token",
    "BodyLimit",
    "BearerAuth",
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
    return value


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
