"""Who may look, and who may act.

- With a token configured, every page, API and /metrics request needs it: as
  `Authorization: Bearer TOKEN`, or as the session cookie the /login form sets (an
  HMAC of the token, never the token itself). A page request without it is sent to
  /login; an API request gets 401.
- Actions (trigger, cancel, retry) are POSTs guarded against cross-site requests
  with a double-submit token: the `tideflow_csrf` cookie must match the form's
  `csrf_token` field or the `X-CSRF-Token` header (403 otherwise). A request
  that carries the right bearer token is exempt: a browser never adds that header
  to a cross-site request.
- Without a token (loopback only), the Host header must name the loopback, so a
  web page cannot reach the dashboard through DNS rebinding.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Iterable
from http.cookies import SimpleCookie
from typing import Final
from urllib.parse import parse_qs, quote

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CSRF_COOKIE",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "LOOPBACK_HOSTS",
    "SESSION_COOKIE",
    "CsrfError",
    "GuardMiddleware",
    "check_csrf",
    "is_loopback",
    "safe_next",
    "session_value",
]

SESSION_COOKIE: Final = "tideflow_session"
CSRF_COOKIE: Final = "tideflow_csrf"
CSRF_FIELD: Final = "csrf_token"
CSRF_HEADER: Final = "x-csrf-token"
LOOPBACK_HOSTS: Final = ("127.0.0.1", "localhost", "::1", "[::1]")
# reachable without the token: the login form and what it needs to look right
PUBLIC_PATHS: Final = ("/login", "/static/", "/favicon.ico")
SECURITY_HEADERS: Final = (
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        b"script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
)


class CsrfError(Exception):
    """A POST without a matching CSRF token."""


def is_loopback(host: str) -> bool:
    """Whether binding to `host` keeps the dashboard on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def session_value(token: str) -> str:
    """What the session cookie holds for `token`: a keyed hash, not the token."""
    return hmac.new(token.encode("utf-8"), b"tideflow-session-v1", hashlib.sha256).hexdigest()


def safe_next(target: str | None) -> str:
    """A local path to go to after logging in (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _bearer(headers: Headers) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, credentials = value.partition(" ")
    if scheme.lower() != "bearer" or not credentials:
        return None
    return credentials.strip()


def _cookies(headers: Headers) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except Exception:  # a malformed Cookie header is treated as no cookies
        return {}
    return {key: morsel.value for key, morsel in jar.items()}


class GuardMiddleware:
    """Authentication, the host check, the CSRF cookie and security headers (pure ASGI,
    so that no route can be left out)."""

    def __init__(
        self, app: ASGIApp, *, token: str | None, allowed_hosts: Iterable[str] | None
    ) -> None:
        self.app = app
        self.token = token
        self.session = session_value(token) if token else None
        hosts = list(allowed_hosts) if allowed_hosts is not None else None
        if hosts is None and token is None:
            hosts = list(LOOPBACK_HOSTS)
        self.allowed_hosts = None if hosts is None or "*" in hosts else set(hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if self.allowed_hosts is not None and _host(headers) not in self.allowed_hosts:
            await PlainTextResponse("unknown host", status_code=400)(scope, receive, send)
            return
        cookies = _cookies(headers)
        state = scope.setdefault("state", {})
        state["auth"] = self._authenticate(headers, cookies)
        state["auth_required"] = self.token is not None
        path: str = scope["path"]
        if state["auth"] is None and not path.startswith(PUBLIC_PATHS):
            await self._refuse(scope, path)(scope, receive, send)
            return
        csrf = cookies.get(CSRF_COOKIE)
        new_csrf = None
        if not csrf or len(csrf) < 20:
            csrf = new_csrf = secrets.token_urlsafe(32)
        state["csrf"] = csrf

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    if name.decode() not in out:
                        out.raw.append((name, value))
                # only pages carry forms; a cookie set by a parallel request for a
                # stylesheet would replace the one the page's forms were rendered with
                if new_csrf is not None and out.get("content-type", "").startswith("text/html"):
                    out.append(
                        "set-cookie", f"{CSRF_COOKIE}={new_csrf}; Path=/; HttpOnly; SameSite=Lax"
                    )
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _authenticate(self, headers: Headers, cookies: dict[str, str]) -> str | None:
        """ "open" without a token; "bearer" or "cookie" when the token was shown; else None."""
        if self.token is None or self.session is None:
            return "open"
        bearer = _bearer(headers)
        if bearer is not None and hmac.compare_digest(bearer.encode(), self.token.encode()):
            return "bearer"
        session = cookies.get(SESSION_COOKIE)
        if session is not None and hmac.compare_digest(session.encode(), self.session.encode()):
            return "cookie"
        return None

    @staticmethod
    def _refuse(scope: Scope, path: str) -> Response:
        if path.startswith("/api/") or path in ("/metrics", "/openapi.json"):
            return JSONResponse(
                {"detail": "authentication required: send `Authorization: Bearer <token>`"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        query = scope.get("query_string", b"").decode("latin-1")
        target = path + (f"?{query}" if query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


def _host(headers: Headers) -> str:
    host = headers.get("host", "")
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def check_csrf(request: Request) -> None:
    """Raise CsrfError unless the POST proves it comes from our own page (or carries the
    bearer token)."""
    if request.state.auth == "bearer":
        return
    expected = request.cookies.get(CSRF_COOKIE)
    supplied = request.headers.get(CSRF_HEADER)
    if supplied is None and request.headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        supplied = (await form_fields(request)).get(CSRF_FIELD)
    if not expected or not supplied:
        raise CsrfError("missing CSRF token: reload the page and try again")
    if not hmac.compare_digest(expected.encode(), supplied.encode()):
        raise CsrfError("CSRF token mismatch: reload the page and try again")


async def form_fields(request: Request) -> dict[str, str]:
    """An url-encoded form body as a dict (first value of each field)."""
    body = await request.body()
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {key: values[0] for key, values in parsed.items() if values}
