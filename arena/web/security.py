"""Protections that hold for every request: security headers, cross-site write refusal, the session cookie's
Secure flag behind TLS, the trusted reverse proxy, and checks of the operator's settings at start.

A short after-request hook and a before-request check rather than flask-talisman and flask-wtf: the headers are
one fixed set, and CSRF tokens would need every page and script to carry one, where the browser's own
Sec-Fetch-Site / Origin headers already say whether a write comes from our pages (the contract in the pages'
JavaScript: same-origin fetch needs nothing special).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, has_request_context, request
from flask.sessions import SecureCookieSessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix

from arena.battles import challenge
from arena.errors import ArenaError, BadRequest, Refused
from arena.settings import settings_of

# Everything from our own origin, nothing inline: pages keep scripts and styles in /static, data for scripts in
# <script type="application/json"> blocks, and no page may be framed (clickjacking a vote).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
HEADERS = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),  # a battle's URL never leaves the arena in a Referer
)
UNSAFE_METHODS = frozenset(("POST", "PUT", "PATCH", "DELETE"))
_DEFAULT_PORTS = {"http": "80", "https": "443"}


class SessionInterface(SecureCookieSessionInterface):
    """The signed cookie session, marked Secure whenever the request came over TLS.

    ARENA_SECURE_COOKIES forces it; otherwise request.is_secure decides, which reflects X-Forwarded-Proto only
    when ARENA_TRUST_PROXY names the proxies in front (ProxyFix), so a client cannot spoof it.
    """

    def get_cookie_secure(self, app: Flask) -> bool:
        return super().get_cookie_secure(app) or (has_request_context() and request.is_secure)


def init_app(app: Flask) -> None:
    challenge.check_bits(settings_of(app).vote_challenge_bits)
    proxies = settings_of(app).trust_proxy
    if proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies, x_port=proxies)
    app.session_interface = SessionInterface()
    app.before_request(refuse_nul_in_url)
    app.before_request(refuse_cross_site_writes)
    app.after_request(add_security_headers)


def add_security_headers(response):
    for name, value in HEADERS:
        response.headers.setdefault(name, value)
    return response


def refuse_nul_in_url() -> None:
    """400 for a NUL byte in the path or query: no page or resource has one in its name, and PostgreSQL refuses
    NUL in text, so it would otherwise reach the database as a query parameter and fail there as a 500."""
    if "\x00" in request.path or b"%00" in request.query_string:
        raise BadRequest("invalid_request", "The address contains a NUL character.")


def refuse_cross_site_writes() -> None:
    """403 cross_site_request for a write that a browser says comes from another site.

    Sec-Fetch-Site (every current browser sends it) decides when present: only same-origin and none (typed by
    the user) pass. Without it, an Origin header must name this host. A request with neither is not from a
    browser that could carry a voter's cookie across sites, and a lab's `Authorization: Bearer` request cannot be
    forged by another site (it cannot set that header without our CORS consent, which we never give).
    """
    if request.method not in UNSAFE_METHODS:
        return
    if request.headers.get("Authorization", "")[:7].lower() == "bearer ":
        return
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        if site.strip().lower() in ("same-origin", "none"):
            return
        raise _cross_site()
    origin = request.headers.get("Origin")
    if origin is not None and not same_origin(origin, request.host):
        raise _cross_site()


def _cross_site() -> ArenaError:
    return Refused("cross_site_request", "Writes from another site are refused: use the arena's own pages.")


def same_origin(origin: str, host: str) -> bool:
    """Whether an Origin header names `host` (the request's Host): same host name and port, a scheme's default
    port written or not. The scheme itself is not compared: behind a TLS proxy that is not trusted the request
    looks like http while the browser's Origin says https."""
    try:
        parts = urlsplit(origin.strip())
        origin_host, origin_port = parts.hostname, parts.port
    except ValueError:
        return False
    if parts.scheme not in _DEFAULT_PORTS or not origin_host:
        return False  # "null" (sandboxed frames, file: pages) and anything odd
    try:
        ours = urlsplit("//" + host)
        our_host, our_port = ours.hostname, ours.port
    except ValueError:
        return False
    default = {None, 80, 443}
    same_port = origin_port == our_port or (origin_port in default and our_port in default)
    return origin_host == our_host and same_port
