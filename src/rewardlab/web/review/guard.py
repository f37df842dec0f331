"""Who may use the review app, and from where: host check, token login, same-origin writes.

Layered on `web/security.py` (loopback bind, constant-time tokens), for an app that a browser
drives:

- **Host check** (no token, loopback bind): the Host header must name this machine (localhost,
  127.x, ::1). A page on another site whose DNS name is re-pointed at 127.0.0.1 (DNS rebinding)
  is then refused instead of reading and writing the store as "same origin".
- **Token** (when one is set): API clients send `Authorization: Bearer T`; a browser opens any page
  once with `?token=T`, which sets an HttpOnly, SameSite=Strict session cookie (an HMAC of the
  token, not the token) and redirects to the same URL without it, so the token stays out of the
  history and of Referer headers. Everything else gets 401, including the static files.
- **Same-origin writes**: a POST authenticated by the cookie, or by nothing (loopback without a
  token), must come from this origin: `Origin` (else `Referer`) equal to the request's own
  scheme://host. Browsers send Origin with every POST; a request with neither header is not
  from a browser and passes when it carries no cookie. Bearer requests carry no ambient
  credential, so they need no check.
- Security headers on every response: a CSP allowing only this origin's scripts (no inline
  script at all), no framing, no sniffing, Referer only to this origin.
"""

from __future__ import annotations

import hashlib
import hmac
import html
from collections.abc import Awaitable, Callable
from urllib.parse import quote, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from rewardlab.web.security import bearer_token, host_name, is_loopback, token_matches

__all__ = ["SESSION_COOKIE", "SECURITY_HEADERS", "session_value", "same_origin_path",
           "ReviewGuard"]

SESSION_COOKIE = "rewardlab_review"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self'; connect-src 'self'; form-action 'self'; "
                               "base-uri 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}
CallNext = Callable[[Request], Awaitable[Response]]


def session_value(token: str) -> str:
    """The cookie value for `token`: derived, so the cookie jar never holds the token itself."""
    return hmac.new(token.encode(), b"rewardlab review session", hashlib.sha256).hexdigest()


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _refuse(request: Request, status: int, message: str) -> Response:
    if _is_api(request) or request.method not in SAFE_METHODS:
        response: Response = JSONResponse({"error": message, "field": None}, status_code=status)
    else:
        page = (f"<!doctype html><title>rewardlab review</title><h1>{status}</h1>"
                f"<p>{html.escape(message)}</p>")
        response = Response(page, status_code=status, media_type="text/html")
    if status == 401:
        response.headers["www-authenticate"] = "Bearer"
    return response


def same_origin_path(path: str) -> str:
    """`path` as a redirect target that stays on this server: one leading slash, percent-encoded.

    Browsers read a Location of `//evil.com/` (or `/\\evil.com`, or a path that arrived as
    `/%2F%2Fevil.com` and was decoded) as another host: an open redirect after login.

    >>> same_origin_path("//evil.com/a b")
    '/evil.com/a%20b'
    >>> same_origin_path("/queue")
    '/queue'
    """
    return "/" + quote(path.lstrip("/\\"), safe="/!$&'()*+,;=:@-._~")


def _origin_of(request: Request) -> str | None:
    """The Origin header, else the origin of the Referer, else None."""
    origin = request.headers.get("origin")
    if origin:
        return origin
    referer = request.headers.get("referer")
    if referer:
        parts = urlsplit(referer)
        return f"{parts.scheme}://{parts.netloc}"
    return None


class ReviewGuard:
    """The checks above as one `app.middleware("http")` function object."""

    def __init__(self, *, token: str | None, local_only: bool) -> None:
        self.token = token
        self.local_only = local_only
        self.session = session_value(token) if token is not None else None

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        response = await self._check(request, call_next)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    async def _check(self, request: Request, call_next: CallNext) -> Response:
        host = request.headers.get("host", "")
        if self.local_only and not is_loopback(host_name(host)):
            return _refuse(request, 400, f"unexpected Host {host!r}: this server answers "
                                         "only to localhost / 127.0.0.1 / [::1]")
        by_bearer = False
        if self.token is not None:
            login = request.query_params.get("token")
            if login is not None and request.method == "GET" and not _is_api(request):
                return self._login(request, login)
            by_bearer = token_matches(bearer_token(request.headers.get("authorization")),
                                      self.token)
            assert self.session is not None
            by_cookie = token_matches(request.cookies.get(SESSION_COOKIE), self.session)
            if not (by_bearer or by_cookie):
                return _refuse(request, 401, "this review server needs its token: open the URL "
                                             "`rewardlab review` printed (…/?token=…) or send "
                                             "'Authorization: Bearer <token>'")
        if request.method not in SAFE_METHODS and not by_bearer:
            refused = self._cross_site(request)
            if refused is not None:
                return refused
        return await call_next(request)

    def _login(self, request: Request, given: str) -> Response:
        assert self.token is not None and self.session is not None
        if not token_matches(given, self.token):
            return _refuse(request, 401, "wrong token in the URL")
        rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
        target = same_origin_path(request.url.path) + (f"?{urlencode(rest)}" if rest else "")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(SESSION_COOKIE, self.session, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", path="/")
        return response

    def _cross_site(self, request: Request) -> Response | None:
        """403 unless the write comes from this origin (see the module docstring)."""
        origin = _origin_of(request)
        own = f"{request.url.scheme}://{request.headers.get('host', '')}"
        if origin is None and SESSION_COOKIE not in request.cookies:
            return None  # not a browser: nothing ambient to abuse
        if origin != own:
            return _refuse(request, 403, f"cross-site write refused: origin {origin or 'none'} "
                                         f"is not {own}")
        return None

