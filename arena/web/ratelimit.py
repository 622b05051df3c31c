"""Rate limits on battle creation and on votes, per voter session and per address hash.

Each action has limits per voter (the random id in the signed session cookie) and per address (the keyed hash
of the client address, as battles store it in `address_hash`, but of the whole /64 for IPv6; the address is the
proxy's unless ARENA_TRUST_PROXY says how many proxies to believe). Follow-up turns count as battles (each calls
both models again). A request over any limit answers 429 `rate_limited` with a Retry-After
header (whole seconds) and is not carried out. Limits are moving windows in the `limits` library's notation,
several separated by ";" ("20/minute;300/hour"), set by ARENA_RATE_LIMIT_{BATTLES,VOTES}_PER_{VOTER,ADDRESS};
an empty value removes that limit and ARENA_RATE_LIMITS=off removes them all.

**Where the counts live.** With ARENA_REDIS_URL, in Redis: every gunicorn worker and every host counts together,
so a limit holds across a whole deployment. Without it, in each worker process's memory: exact for one worker;
with W workers a client whose requests spread over them can get up to W times a limit.

**When Redis does not answer** (connect and read time out after REDIS_TIMEOUT seconds), the limiter:
- logs ONE warning line (`rate limits: Redis at ... is unreachable ...`), with the URL's password left out;
- counts in this process's memory instead, so requests go on being limited (per worker, as without Redis) and
  never fail or wait because Redis is down: a looser limit for a while, never an error;
- tries Redis again with the next request after REDIS_RETRY_SECONDS (that one request pays at most the timeout);
- on the first success logs ONE info line (`rate limits: Redis at ... answers again ...`) and shares again.
Counts made in memory meanwhile are not carried over to Redis (they age out within their windows).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from collections import deque
from typing import NamedTuple
from urllib.parse import urlsplit, urlunsplit

from flask import Flask, current_app
from limits import RateLimitItem, parse_many
from limits.errors import StorageError
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter, WindowStats

from arena import metrics
from arena.battles.lifecycle import address_hash
from arena.errors import RateLimited
from arena.settings import Settings, current, settings_of

log = logging.getLogger(__name__)

ACTIONS = ("battles", "votes")
SCOPES = ("voter", "address")
REDIS_TIMEOUT = 0.25  # seconds: a vote must not hang on a dead Redis
REDIS_RETRY_SECONDS = 5.0


def setting_name(action: str, scope: str) -> str:
    return f"RATE_LIMIT_{action.upper()}_PER_{scope.upper()}"


class Limit(NamedTuple):
    action: str
    scope: str
    items: tuple[RateLimitItem, ...]


def parse_limits(settings: Settings) -> dict[str, list[Limit]]:
    """The limits of each action from the settings; a malformed one stops the app at start, naming its variable."""
    limits: dict[str, list[Limit]] = {action: [] for action in ACTIONS}
    for action in ACTIONS:
        for scope in SCOPES:
            text = getattr(settings, setting_name(action, scope).lower()).strip()
            if not text:
                continue
            try:
                items = tuple(parse_many(text))
            except ValueError:
                raise ValueError(
                    f'ARENA_{setting_name(action, scope)} must look like "20/minute" or '
                    f'"20/minute;300/hour", not {text!r}'
                ) from None
            limits[action].append(Limit(action, scope, items))
    return limits


def redacted(url: str) -> str:
    """The URL without its password, for log lines."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class MemoryMovingWindow:
    """The moving-window limiter's `hit` and `get_window_stats` over plain deques of hit times, in this process.

    Not the library's MemoryStorage: that one sweeps every key from a new timer thread every 10 ms, which cost
    11 % of a core with 1,000 voters and 32 % with 20,000 at 300 hits/s (measured here). This one drops a key's
    old hits when the key is used and forgets idle keys in one pass a minute, inline.
    """

    SWEEP_SECONDS = 60.0

    def __init__(self):
        self._hits: dict[str, tuple[float, deque]] = {}  # key -> (window in seconds, times of its hits)
        self._lock = threading.Lock()
        self._next_sweep = time.time() + self.SWEEP_SECONDS

    def _window(self, item: RateLimitItem, identifiers: tuple[str, ...], now: float) -> deque:
        key, expiry = item.key_for(*identifiers), item.get_expiry()
        entry = self._hits.get(key)
        if entry is None:
            entry = self._hits[key] = (expiry, deque())
        hits = entry[1]
        while hits and hits[0] <= now - expiry:
            hits.popleft()
        return hits

    def _sweep(self, now: float) -> None:
        if now >= self._next_sweep:
            self._next_sweep = now + self.SWEEP_SECONDS
            for key in [k for k, (expiry, hits) in self._hits.items() if not hits or hits[-1] <= now - expiry]:
                del self._hits[key]

    def hit(self, item: RateLimitItem, *identifiers: str) -> bool:
        now = time.time()
        with self._lock:
            self._sweep(now)
            hits = self._window(item, identifiers, now)
            if len(hits) >= item.amount:
                return False
            hits.append(now)
            return True

    def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        now = time.time()
        with self._lock:
            hits = self._window(item, identifiers, now)
            return WindowStats(hits[0] + item.get_expiry() if hits else now, item.amount - len(hits))


class RateLimiter:
    """Moving-window counters in Redis when configured and answering, else in this process's memory."""

    def __init__(
        self,
        limits: dict[str, list[Limit]],
        redis_url: str | None = None,
        *,
        key_prefix: str = "arena",
        retry_seconds: float = REDIS_RETRY_SECONDS,
    ):
        self.limits = limits
        self.redis_url = redis_url
        self.retry_seconds = retry_seconds
        self._memory = MemoryMovingWindow()
        self._shared = None
        if redis_url:
            storage = RedisStorage(
                redis_url,
                key_prefix=f"{key_prefix}-ratelimit",
                wrap_exceptions=True,
                socket_timeout=REDIS_TIMEOUT,
                socket_connect_timeout=REDIS_TIMEOUT,
            )
            self._shared = MovingWindowRateLimiter(storage)
        self._lock = threading.Lock()
        self._down_since: float | None = None  # monotonic time Redis was found unreachable; None while it answers
        self._next_try = 0.0

    @property
    def shared(self) -> bool:
        """Whether counts currently go to Redis."""
        return self._shared is not None and self._down_since is None

    def hit(self, action: str, identities: dict[str, str | None]) -> int | None:
        """Count one `action` for each identity ({"voter": ..., "address": ...}; None: not known, not limited).
        Returns None when every limit allows it, else the seconds to wait before one would."""
        for limit in self.limits[action]:
            identity = identities.get(limit.scope)
            if identity is None:
                continue
            for item in limit.items:
                key = (action, limit.scope, identity)
                if not self._call("hit", item, key):
                    reset_time, _ = self._call("get_window_stats", item, key)
                    return max(1, math.ceil(reset_time - time.time()))
        return None

    def _call(self, method: str, item: RateLimitItem, key: tuple[str, ...]):
        if self._shared is not None and (self._down_since is None or time.monotonic() >= self._next_try):
            try:
                result = getattr(self._shared, method)(item, *key)
            except StorageError as error:
                self._went_down(error)
            else:
                if self._down_since is not None:
                    self._came_back()
                return result
        return getattr(self._memory, method)(item, *key)

    def _went_down(self, error: Exception) -> None:
        with self._lock:
            self._next_try = time.monotonic() + self.retry_seconds
            if self._down_since is not None:
                return  # still down: said once already
            self._down_since = time.monotonic()
        cause = error.__cause__ or error
        log.warning(
            "rate limits: Redis at %s is unreachable (%s: %s); counting in this process's memory until it "
            "answers again (tried every %g s)",
            redacted(self.redis_url),
            type(cause).__name__,
            str(cause).splitlines()[0] if str(cause) else "",
            self.retry_seconds,
        )

    def _came_back(self) -> None:
        with self._lock:
            if self._down_since is None:
                return
            down_for, self._down_since = time.monotonic() - self._down_since, None
        log.info(
            "rate limits: Redis at %s answers again after %.0f s; limits are shared again",
            redacted(self.redis_url),
            down_for,
        )


def init_app(app: Flask) -> None:
    app.extensions["arena.ratelimit"] = RateLimiter(
        parse_limits(settings_of(app)), settings_of(app).redis_url, key_prefix=settings_of(app).rate_limit_key_prefix
    )


def address_key(secret_key: str, address: str | None) -> str | None:
    """The keyed hash that the per-address limits count under: of the IPv4 address (as battles.address_hash), or
    of the IPv6 address's /64, the block one subscriber is given (any address in it costs nothing to take)."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address_hash(secret_key, address)
    if ip.version == 6:
        address = str(ip.ipv4_mapped or ipaddress.ip_network(f"{ip}/64", strict=False))
    return address_hash(secret_key, address)


def check(action: str, *, voter: str | None, address: str | None) -> None:
    """Count this request (from client `address`) against `action`'s limits; 429 rate_limited with Retry-After
    when over one."""
    if not current().rate_limits:
        return
    key = address_key(current().secret_key, address)
    wait = current_app.extensions["arena.ratelimit"].hit(action, {"voter": voter, "address": key})
    if wait is not None:
        metrics.RATE_LIMITED.labels(action).inc()
        what = "battles" if action == "battles" else "votes"
        raise RateLimited("rate_limited", f"Too many {what} in a short time: try again in {wait} s.", retry_after=wait)
