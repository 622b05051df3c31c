"""Settings, read from ARENA_* environment variables with defaults that run the embedded demo as it is.

Operator secrets come only from the environment (or, for a self-hosted default, a key generated once into the
instance folder); nothing secret is ever written to the repository.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _flag(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _number(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def instance_folder() -> Path:
    return Path(os.environ.get("ARENA_INSTANCE_PATH") or ROOT / "instance")


def _secret_key(folder: Path) -> str:
    """ARENA_SECRET_KEY, or a random key kept in instance/secret_key so sessions survive a restart."""
    if os.environ.get("ARENA_SECRET_KEY"):
        return os.environ["ARENA_SECRET_KEY"]
    path = folder / "secret_key"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


class Config:
    """Production defaults; every value can be overridden by the environment or by create_app(config)."""

    def __init__(self):
        folder = instance_folder()
        self.INSTANCE_PATH = str(folder)
        self.DATABASE_URL = os.environ.get("ARENA_DATABASE_URL") or f"sqlite:///{folder / 'arena.db'}"
        self.DB_POOL_SIZE = int(_number("ARENA_DB_POOL_SIZE", 20))  # per worker; keep workers × this < max_connections
        self.REDIS_URL = os.environ.get("ARENA_REDIS_URL") or None
        self.SECRET_KEY = _secret_key(folder)
        self.ALLOW_PRIVATE_ENDPOINTS = _flag("ARENA_ALLOW_PRIVATE_ENDPOINTS")
        # Recorded answers replay at their recorded speed times this factor, each capped at this many seconds.
        self.REPLAY_SPEED = _number("ARENA_REPLAY_SPEED", 1.0)
        self.REPLAY_MAX_SECONDS = _number("ARENA_REPLAY_MAX_SECONDS", 8.0)
        # Endpoint models: seconds to connect, to the first token, and for the whole answer.
        self.PROVIDER_CONNECT_TIMEOUT = _number("ARENA_PROVIDER_CONNECT_TIMEOUT", 5.0)
        self.PROVIDER_FIRST_TOKEN_TIMEOUT = _number("ARENA_PROVIDER_FIRST_TOKEN_TIMEOUT", 30.0)
        self.PROVIDER_TOTAL_TIMEOUT = _number("ARENA_PROVIDER_TOTAL_TIMEOUT", 120.0)
        self.ENDPOINT_CHECK_TIMEOUT = _number("ARENA_ENDPOINT_CHECK_TIMEOUT", 10.0)  # a lab's registration check
        self.MAX_PROMPT_CHARS = int(_number("ARENA_MAX_PROMPT_CHARS", 8000))
        self.MAX_CONTENT_LENGTH = int(_number("ARENA_MAX_REQUEST_BYTES", 1 << 20))
        # The vote's proof of work (arena.challenge): on unless ARENA_VOTE_CHALLENGE=off. 16 bits is 65,536 SHA-256
        # on average: 0.08 s in chromium here, 0.17 s (95th percentile 0.54 s) at 4x CPU throttling (a phone),
        # solved while the answers stream (README).
        self.VOTE_CHALLENGE = _flag("ARENA_VOTE_CHALLENGE", True)
        self.VOTE_CHALLENGE_BITS = int(_number("ARENA_VOTE_CHALLENGE_BITS", 16))
        # Rate limits (arena.ratelimit), moving windows shared through Redis when ARENA_REDIS_URL is set. A person
        # reads two answers before the next battle: 20 a minute is far above that. An address can be a whole
        # office or campus behind one NAT, hence ten times more.
        self.RATE_LIMITS = _flag("ARENA_RATE_LIMITS", True)
        for action in ("BATTLES", "VOTES"):
            for scope, default in (("VOTER", "20/minute;300/hour"), ("ADDRESS", "200/minute;3000/hour")):
                name = f"RATE_LIMIT_{action}_PER_{scope}"
                setattr(self, name, os.environ.get(f"ARENA_{name}", default))
        # Leaderboard snapshots (arena.leaderboard.builds): bootstrap replicates and seed, the tie model, the number of
        # counted votes below which a rating is marked provisional (FastChat shows a model from 300), and a new
        # snapshot after this many new counted votes (0: only when an operator runs `arena snapshot`).
        self.SNAPSHOT_REPLICATES = int(_number("ARENA_SNAPSHOT_REPLICATES", 1000))
        # The style-controlled board is fitted on battle rows, not pair counts: a bootstrap replicate refits every
        # row (a million at a large arena: ~0.5 s each). 0, the default, gives sandwich intervals instead, the
        # row bootstrap's large-sample limit, in one pass over the rows (ranking.style.sandwich_style_intervals);
        # 2 or more gives a row bootstrap of that many replicates.
        self.SNAPSHOT_STYLE_REPLICATES = int(_number("ARENA_SNAPSHOT_STYLE_REPLICATES", 0))
        self.SNAPSHOT_SEED = int(_number("ARENA_SNAPSHOT_SEED", 0))
        self.SNAPSHOT_TIES = os.environ.get("ARENA_SNAPSHOT_TIES") or "half"
        self.PROVISIONAL_VOTES = int(_number("ARENA_PROVISIONAL_VOTES", 300))
        self.SNAPSHOT_EVERY_VOTES = int(_number("ARENA_SNAPSHOT_EVERY_VOTES", 1000))
        # Which pair answers a battle (arena.leaderboard.sampling, ranking.sampling): uniform | weighted |
        # new_model_boost |
        # active. Weighted by default: the operators' published weights, all 1 (uniform) unless they set them;
        # active spends votes better (bench/sampling.py) and is the operators' choice to make. The boost
        # multiplies a provisional model's weight (new_model_boost); the floor is the share of
        # battles the active policy draws by the weighted rule, so every model keeps at least that fraction of
        # its weighted share, and the focus the exponent on its scores (bench/sampling.py). Each process re-reads
        # the fit at most every REFRESH seconds. A model whose calls in the last FAILING_SECONDS failed at
        # FAILING_RATE or more (over FAILING_MIN_CALLS calls at least) is not drawn until its failures age out.
        self.SAMPLING_POLICY = os.environ.get("ARENA_SAMPLING_POLICY") or "weighted"
        self.SAMPLING_BOOST = _number("ARENA_SAMPLING_BOOST", 3.0)
        self.SAMPLING_ACTIVE_FLOOR = _number("ARENA_SAMPLING_ACTIVE_FLOOR", 0.1)
        self.SAMPLING_ACTIVE_FOCUS = _number("ARENA_SAMPLING_ACTIVE_FOCUS", 3.0)
        self.SAMPLING_REFRESH_SECONDS = _number("ARENA_SAMPLING_REFRESH_SECONDS", 5.0)
        self.SAMPLING_FAILING_RATE = _number("ARENA_SAMPLING_FAILING_RATE", 0.5)
        self.SAMPLING_FAILING_MIN_CALLS = int(_number("ARENA_SAMPLING_FAILING_MIN_CALLS", 4))
        self.SAMPLING_FAILING_SECONDS = _number("ARENA_SAMPLING_FAILING_SECONDS", 600.0)
        # Vote integrity rules applied by every snapshot build (arena.leaderboard.integrity; bench/rigging.py measures
        # them).
        # A voter's counted votes per UTC day: reading two answers takes a minute or more, so 100 a day is
        # hours of reading; beyond it a voter looks like a script. 0: no cap.
        self.VOTER_DAILY_CAP = int(_number("ARENA_VOTER_DAILY_CAP", 100))
        self.INTEGRITY_RULES = _flag("ARENA_INTEGRITY_RULES", True)  # off: only void/flagged/excluded voters
        self.INTEGRITY_RECHECK_LEAKS = _flag("ARENA_INTEGRITY_RECHECK_LEAKS", True)  # stored answers re-read
        # Each statistical test flags an honest voter with about this probability (per test, per snapshot).
        self.INTEGRITY_ALPHA = _number("ARENA_INTEGRITY_ALPHA", 1e-4)
        self.INTEGRITY_MIN_VOTES = int(_number("ARENA_INTEGRITY_MIN_VOTES", 20))  # a voter is tested from here
        self.INTEGRITY_MIN_CROWD = int(_number("ARENA_INTEGRITY_MIN_CROWD", 10))  # a pair's history to judge by
        self.INTEGRITY_IMPROBABLE_BELOW = _number("ARENA_INTEGRITY_IMPROBABLE_BELOW", 0.1)  # the fit's P(outcome)
        self.INTEGRITY_IMPROBABLE_MIN_COUNT = int(_number("ARENA_INTEGRITY_IMPROBABLE_MIN_COUNT", 3))
        # A free-text prompt counts as at most this many votes in all (its votes down-weighted); 0: no limit.
        self.REPEATED_PROMPT_VOTES = int(_number("ARENA_REPEATED_PROMPT_VOTES", 50))
        # The milestone board flags a safety metric whose |Spearman| with the arena rating reaches this: at 0.7,
        # rho^2 ~ 0.5, half of the metric's variance tracks capability ("safetywashing", Ren et al. 2024).
        self.BOARD_CORRELATION_FLAG = _number("ARENA_BOARD_CORRELATION_FLAG", 0.7)
        # The Ed25519 key that signs snapshots; default instance/snapshot_signing_key.pem, created on first use.
        self.SIGNING_KEY_FILE = os.environ.get("ARENA_SIGNING_KEY_FILE") or None
        self.SESSION_COOKIE_HTTPONLY = True
        self.SESSION_COOKIE_SAMESITE = "Lax"
        self.SESSION_COOKIE_SECURE = _flag("ARENA_SECURE_COOKIES")  # else Secure whenever the request is https
        # Reverse proxies in front of gunicorn (0: none). Only then are X-Forwarded-For/-Proto/-Host believed: the
        # client address the rate limits key on, and https for the session cookie's Secure flag (arena.security).
        self.TRUST_PROXY = int(_number("ARENA_TRUST_PROXY", 0))
        # The voter's cookie is signed when the voter is first seen and lasts PERMANENT_SESSION_LIFETIME (31 days)
        # from then, not from the last request: re-signing and re-sending it with every response was ~8% of a
        # vote's server CPU (bench/service.py), and a pseudonymous voter id that expires is no loss for privacy.
        self.SESSION_REFRESH_EACH_REQUEST = False
        self.TESTING = False

    def update(self, overrides: dict | None) -> "Config":
        for key, value in (overrides or {}).items():
            setattr(self, key, value)
        return self
