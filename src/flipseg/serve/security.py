"""The guards of ``flipseg serve``: the token, the Host and Origin checks, request sizes and
the files a request may read.

- Bound to a loopback address (the default) the server answers only requests whose ``Host``
  is that address or ``localhost`` (a page of another site cannot reach it through DNS
  rebinding). Bound to any other address it needs a token (given, or generated and
  printed): in the ``X-Flipseg-Token`` header, as ``Authorization: Bearer T``, or in the
  cookie that ``?token=T`` on any page address sets.
- A request that changes something must send JSON (``Content-Type: application/json``) and,
  when the browser names an ``Origin``, come from the server's own: a form on another site
  cannot post to it.
- Bodies are limited in size (413). Errors are JSON objects ``{"error": message}``.
- Files are served only from under the data and output folders (:func:`safe_file`).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from http.cookies import SimpleCookie
from pathlib import Path, PurePosixPath
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl, urlencode, urlsplit

__all__ = ["COOKIE", "Guard", "PathRefused", "error_body", "is_loopback", "safe_file"]

COOKIE = "flipseg_token"
HEADER = "x-flipseg-token"
_UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
     b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    (b"cache-control", b"no-store"),
]

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


class PathRefused(Exception):
    """A file path outside the served folders (403) or a file that is not there (404)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def is_loopback(host: str) -> bool:
    """``127.0.0.1``, ``::1``, ``localhost``: reachable from this machine only."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def safe_file(root: Path, rel: str) -> Path:
    """The file ``rel`` under ``root``, refused when it would lie outside ``root``.

    Refused (403): an empty path, an absolute path, a ``..`` part, a backslash or a NUL, and
    a path that leaves ``root`` once symbolic links are followed. A path inside ``root``
    that is not a file is 404.
    """
    if not rel or "\x00" in rel or "\\" in rel:
        raise PathRefused(403, f"path {rel!r} refused")
    parts = PurePosixPath(rel)
    if parts.is_absolute() or rel.startswith("/") or ".." in parts.parts:
        raise PathRefused(403, f"path {rel!r} refused: only files under the served folder")
    root = root.resolve()
    full = (root / parts).resolve()
    if full != root and root not in full.parents:
        raise PathRefused(403, f"path {rel!r} refused: it leads outside the served folder")
    if not full.is_file():
        raise PathRefused(404, f"no file {rel!r}")
    return full


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode("utf-8")


async def _send_json(send: Any, status: int, message: str,
                     headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = error_body(message)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]
                + SECURITY_HEADERS + (headers or [])})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware: the checks of the module docstring, before the app sees a request.

    Parameters
    ----------
    app
        The application.
    token
        The token every request must carry (None: none, only on a loopback address).
    host
        The address the server is bound to.
    max_body
        The largest request body, in bytes.
    """

    def __init__(self, app: ASGIApp, *, token: str | None, host: str, max_body: int) -> None:
        self.app, self.token, self.max_body = app, token, int(max_body)
        self.hosts = {"127.0.0.1", "localhost", "::1", host.strip("[]").lower()}

    def _token_ok(self, headers: dict[str, str]) -> bool:
        given = headers.get(HEADER)
        auth = headers.get("authorization", "")
        if given is None and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if given is None and "cookie" in headers:
            cookie = SimpleCookie()
            try:
                cookie.load(headers["cookie"])
            except Exception:  # noqa: BLE001 - a malformed cookie header is no token
                cookie = SimpleCookie()
            if COOKIE in cookie:
                given = cookie[COOKIE].value
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        method = scope["method"]
        host = headers.get("host", "")
        hostname = urlsplit(f"//{host}").hostname or ""
        if self.token is None and hostname.lower() not in self.hosts:
            return await _send_json(send, 400, f"unexpected Host {host!r}: open the address "
                                    "the server printed")
        if self.token is not None and not self._token_ok(headers):
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            given = query.get("token")
            if method == "GET" and given is not None and hmac.compare_digest(
                    given.encode(), self.token.encode()):
                rest = urlencode([(k, v) for k, v in query.items() if k != "token"])
                location = scope["path"] + (f"?{rest}" if rest else "")
                cookie = f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                await send({"type": "http.response.start", "status": 303,
                            "headers": [(b"location", location.encode()),
                                        (b"set-cookie", cookie.encode()),
                                        (b"content-length", b"0")] + SECURITY_HEADERS})
                return await send({"type": "http.response.body", "body": b""})
            return await _send_json(send, 401, "this server needs its token: open the address "
                                    "with ?token=... that it printed, or send the "
                                    "X-Flipseg-Token header")
        if method in _UNSAFE_METHODS:
            origin = headers.get("origin")
            if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
                return await _send_json(send, 403, f"requests from {origin!r} are refused")
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype != "application/json":
                return await _send_json(send, 415, "send JSON (Content-Type: application/json)")
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return await _send_json(send, 400, f"bad Content-Length {length!r}")
            if int(length) > self.max_body:
                return await _send_json(send, 413, f"request body of {int(length)} bytes is over "
                                        f"the limit of {self.max_body} bytes")

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _v in message.get("headers", [])}
                message = dict(message, headers=list(message.get("headers", []))
                               + [h for h in SECURITY_HEADERS if h[0] not in have])
            await send(message)

        await self.app(scope, receive, send_with_headers)
