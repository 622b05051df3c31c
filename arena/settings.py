"""Every setting of the arena, read from ARENA_* environment variables and checked once, when a process starts.

One typed object (pydantic-settings): the web workers, the builder, the command line and gunicorn.conf.py all
build it the same way, and a bad value stops the process before it serves, with the variable's name and what is
allowed (`SettingsError`, one line). Nothing else reads the environment or `app.config[...]` for arena
settings: code reads `settings_of(app)` (or `current()` in a request); the domain's groups of settings
(`SamplingSettings`, `IntegritySettings`, ...) are views of this object, not second parsers.

The defaults run the embedded demo as it is. Operator secrets come only from the environment (or, for a
self-hosted default, a key generated once into the instance folder); nothing secret is written to the repository.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Annotated, Literal

from flask import Flask, current_app
from limits import parse_many
from pydantic import AfterValidator, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent
EXTENSION = "arena.settings"

Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(gt=0, lt=1)]


def _rate_limit(value: str) -> str:
    """A `limits` string such as "20/minute;300/hour"; empty: no limit of this kind."""
    if not value.strip():
        return ""
    try:
        parse_many(value)
    except ValueError:
        raise ValueError('write limits as "N/unit", several joined by ";", e.g. "20/minute;300/hour"') from None
    return value


RateLimit = Annotated[str, AfterValidator(_rate_limit)]


class SettingsError(Exception):
    """The settings do not validate: one line naming each bad variable and what it allows."""


class Settings(BaseSettings):
    """The arena's settings; each field is the environment variable ARENA_<FIELD NAME>."""

    model_config = SettingsConfigDict(
        env_prefix="ARENA_", case_sensitive=False, extra="forbid", frozen=True, validate_default=True
    )

    # ---- where things are
    instance_path: Path = ROOT / "instance"
    database_url: str = ""  # empty: SQLite in the instance folder
    db_pool_size: int = Field(20, ge=1)  # per process; keep processes × this below max_connections
    redis_url: str | None = None  # rate-limit counts shared by every worker and host
    secret_key: str = ""  # empty: a random key kept in instance/secret_key, so sessions survive a restart
    signing_key_file: Path | None = None  # the snapshots' Ed25519 key; default instance/snapshot_signing_key.pem

    # ---- gunicorn (gunicorn.conf.py) and logs
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(4, ge=1)
    threads: int = Field(256, ge=1)
    access_log: bool = False
    log_format: Literal["text", "json"] = "text"
    # /readyz also wants this host's snapshot builder alive; off on a host that only serves (its builder runs on
    # another host of the same database).
    ready_needs_builder: bool = True
    # /metrics: with a token, only to "Authorization: Bearer <token>"; without one, only to loopback clients (a
    # Prometheus on the same host, or a proxy that forwards nothing from outside to /metrics).
    metrics_token: str = ""

    # ---- model endpoints and recorded answers
    allow_private_endpoints: bool = False  # loopback and private addresses (never metadata addresses)
    replay_speed: float = Field(1.0, ge=0, allow_inf_nan=False)  # recorded answers replay at this × their speed
    replay_max_seconds: float = Field(8.0, ge=0, allow_inf_nan=False)  # ... each capped at this many seconds
    provider_connect_timeout: Seconds = 5.0
    provider_first_token_timeout: Seconds = 30.0
    provider_total_timeout: Seconds = 120.0
    endpoint_check_timeout: Seconds = 10.0  # a new endpoint's one real request
    max_prompt_chars: int = Field(8000, ge=1)
    max_request_bytes: int = Field(1 << 20, ge=1024)

    # ---- the vote's proof of work (arena.battles.challenge). 16 bits is 65,536 SHA-256 on average: 0.08 s in
    # chromium here, 0.17 s (95th percentile 0.54 s) at 4x CPU throttling (a phone), solved while answers stream.
    vote_challenge: bool = True
    vote_challenge_bits: int = Field(16, ge=0, le=32)

    # ---- rate limits (arena.web.ratelimit), moving windows, shared through Redis when redis_url is set. A person
    # reads two answers before the next battle: 20 a minute is far above that. An address can be a whole office
    # or campus behind one NAT, hence ten times more.
    rate_limits: bool = True
    rate_limit_battles_per_voter: RateLimit = "20/minute;300/hour"
    rate_limit_battles_per_address: RateLimit = "200/minute;3000/hour"
    rate_limit_votes_per_voter: RateLimit = "20/minute;300/hour"
    rate_limit_votes_per_address: RateLimit = "200/minute;3000/hour"
    rate_limit_key_prefix: str = "arena"  # keeps arenas sharing one Redis apart

    # ---- leaderboard snapshots (arena.leaderboard.builds): bootstrap replicates (0: sandwich intervals) and
    # seed, the tie model, the counted votes below which a rating is provisional (FastChat shows a model from
    # 300), and a new snapshot after this many new counted votes (0: only when an operator runs `arena snapshot`).
    snapshot_replicates: int = Field(1000, ge=0)
    # The style-controlled board is fitted on battle rows: a bootstrap replicate refits every row (a million at a
    # large arena: ~0.5 s each). 0 gives sandwich intervals, the row bootstrap's large-sample limit, in one pass.
    snapshot_style_replicates: int = Field(0, ge=0)
    snapshot_seed: int = Field(0, ge=0)
    snapshot_ties: Literal["half", "davidson"] = "half"
    provisional_votes: int = Field(300, ge=0)
    snapshot_every_votes: int = Field(1000, ge=0)
    builder_check_seconds: Seconds = 5.0  # how often the builder looks whether a snapshot is due
    builder_nice: int = Field(10, ge=0, le=19)  # the builder's CPU priority below the web workers'

    # ---- which pair answers a battle (arena.leaderboard.sampling, ranking.sampling). Weighted by default: the
    # operators' published weights, all 1 unless they set them; active spends votes better (bench/sampling.py).
    # The boost multiplies a provisional model's weight (new_model_boost); the floor is the share of battles the
    # active policy draws by the weighted rule, the focus the exponent on its scores. Each process re-reads the fit
    # at most every refresh seconds. A model whose calls in the last failing_seconds failed at failing_rate or
    # more (over failing_min_calls calls at least) is not drawn until its failures age out.
    sampling_policy: Literal["uniform", "weighted", "new_model_boost", "active"] = "weighted"
    sampling_boost: float = Field(3.0, ge=1, allow_inf_nan=False)
    sampling_active_floor: float = Field(0.1, ge=0, le=1)
    sampling_active_focus: float = Field(3.0, gt=0, allow_inf_nan=False)
    sampling_refresh_seconds: float = Field(5.0, ge=0, allow_inf_nan=False)
    sampling_failing_rate: float = Field(0.5, gt=0, le=1)
    sampling_failing_min_calls: int = Field(4, ge=1)
    sampling_failing_seconds: Seconds = 600.0

    # ---- vote integrity rules, applied by every snapshot build (arena.leaderboard.integrity; bench/rigging.py).
    # A voter's counted votes per UTC day: 100 a day is hours of reading; beyond it a voter looks like a script.
    voter_daily_cap: int = Field(100, ge=0)  # 0: no cap
    integrity_rules: bool = True  # off: only void, flagged and excluded voters are left out
    integrity_recheck_leaks: bool = True  # stored answers re-read at every build
    integrity_alpha: Fraction = 1e-4  # each statistical test flags an honest voter with about this chance
    integrity_min_votes: int = Field(20, ge=1)  # a voter is tested from this many votes
    integrity_min_crowd: int = Field(10, ge=1)  # a pair's history needed to judge a vote
    integrity_improbable_below: Fraction = 0.1  # the fit's probability of the voted outcome
    integrity_improbable_min_count: int = Field(3, ge=1)
    repeated_prompt_votes: int = Field(50, ge=0)  # a free-text prompt counts as at most this many votes; 0: no limit

    # ---- the milestone board flags a safety metric whose |Spearman| with the rating reaches this: at 0.7,
    # rho^2 ~ 0.5, half of the metric's variance tracks capability ("safetywashing", Ren et al. 2024).
    board_correlation_flag: float = Field(0.7, gt=0, le=1)

    # ---- cookies and proxies
    secure_cookies: bool = False  # else Secure whenever the request is https
    # Reverse proxies in front of gunicorn (0: none). Only then are X-Forwarded-For/-Proto/-Host believed.
    trust_proxy: int = Field(0, ge=0)

    @field_validator("snapshot_replicates", "snapshot_style_replicates")
    @classmethod
    def _replicates(cls, value: int) -> int:
        if value == 1:  # one replicate gives no interval
            raise ValueError("must be 0 (sandwich intervals) or at least 2")
        return value

    # ---- derived values
    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.instance_path / 'arena.db'}"

    def flask_config(self) -> dict:
        """What Flask itself reads (app.config): the secret, the body limit, the session cookie's flags."""
        return {
            "SECRET_KEY": self.secret_key,
            "MAX_CONTENT_LENGTH": self.max_request_bytes,
            "SESSION_COOKIE_HTTPONLY": True,
            "SESSION_COOKIE_SAMESITE": "Lax",
            "SESSION_COOKIE_SECURE": self.secure_cookies,
            # The voter's cookie lasts PERMANENT_SESSION_LIFETIME (31 days) from when the voter is first seen:
            # re-signing and re-sending it with every response was ~8% of a vote's server CPU (bench/service.py).
            "SESSION_REFRESH_EACH_REQUEST": False,
        }


def _describe(error: ValidationError) -> str:
    """One line: each failing variable by its environment name, what was wrong and what was given."""
    parts = []
    for problem in error.errors():
        field = ".".join(str(p) for p in problem["loc"])
        name = f"ARENA_{field.upper()}" if field else "settings"
        message = problem["msg"].removeprefix("Value error, ")
        given = problem.get("input")
        shown = f" (got {given!r})" if field and not isinstance(given, dict) else ""
        parts.append(f"{name}: {message}{shown}")
    return "bad setting: " + "; ".join(parts)


def load(overrides: dict | None = None) -> Settings:
    """The settings from the environment, with `overrides` (field names, any case: tests and tools) on top;
    SettingsError in one line if anything is wrong. An empty secret key is resolved here, once."""
    changes = {key.lower(): value for key, value in (overrides or {}).items()}
    try:
        settings = Settings(**changes)
    except ValidationError as e:
        raise SettingsError(_describe(e)) from None
    if not settings.secret_key:
        settings = settings.model_copy(update={"secret_key": _instance_secret(settings.instance_path)})
    return settings


def _instance_secret(folder: Path) -> str:
    """A random key kept in instance/secret_key (created once, readable by its owner only)."""
    path = folder / "secret_key"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


METRICS_FOLDER_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def use_multiprocess_metrics(settings: Settings) -> Path:
    """Have this process and the ones it starts count their metrics in files that /metrics sums (prometheus-
    client's multiprocess mode): the folder PROMETHEUS_MULTIPROC_DIR names, else instance/metrics, emptied here
    when this call chose it (the counts of a previous run are not this run's).

    Here and not in arena.metrics: prometheus-client picks its mode when it is first imported, so this must run
    before anything imports arena.metrics (gunicorn.conf.py, `arena serve`).
    """
    chosen = os.environ.get(METRICS_FOLDER_VARIABLE)
    folder = Path(chosen) if chosen else settings.instance_path / "metrics"
    if not chosen:
        if folder.is_dir():
            for stale in folder.glob("*.db"):
                stale.unlink()
        os.environ[METRICS_FOLDER_VARIABLE] = str(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def install(app: Flask, settings: Settings) -> None:
    """Give the app its settings (and Flask its own keys from them)."""
    app.extensions[EXTENSION] = settings
    app.config.update(settings.flask_config())


def settings_of(app: Flask) -> Settings:
    return app.extensions[EXTENSION]


def current() -> Settings:
    """The settings of the app handling this request or command."""
    return current_app.extensions[EXTENSION]


def override(app: Flask, **changes) -> Settings:
    """Change some settings of a running app, validated like the environment's (tests and tools only)."""
    fields = settings_of(app).model_dump()
    fields.update({key.lower(): value for key, value in changes.items()})
    try:
        settings = Settings.model_validate(fields)
    except ValidationError as e:
        raise SettingsError(_describe(e)) from None
    install(app, settings)
    return settings
