"""The arena's Prometheus metrics (prometheus-client), counted where things happen and read at `/metrics`.

Two kinds:

- **events**, counted by the process they happen in: requests, votes, battles reaching a state, answers and
  their latency per model, rate-limit refusals, database errors, snapshot builds. Under gunicorn every worker
  counts its own, and the builder its builds, so they run in prometheus-client's multiprocess mode: each
  process writes its values to files in PROMETHEUS_MULTIPROC_DIR (set by gunicorn.conf.py and `arena serve`,
  before prometheus-client is imported: see `arena.settings.use_multiprocess_metrics`), and `/metrics` sums
  them over every process, dead workers included, so a counter never goes back when a worker is recycled.
- **state**, read from the database at each scrape (arena.health): battles by state, stored votes, the newest
  snapshot's version and age. The database holds the truth for those, whichever process changed it.

This module imports nothing of the arena's, so that any module can count in it.

Labels are bounded: a model's name (the operators register them), a route's endpoint name, a status code.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY

CONTENT_TYPE = CONTENT_TYPE_LATEST  # the text format's media type, version included
# Seconds, for an answer that takes from a fraction of a second to the 120 s provider limit.
ANSWER_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BUILD_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)

HTTP_REQUESTS = Counter(
    "arena_http_requests",
    "HTTP requests answered, by route (Flask endpoint), method and status",
    ["endpoint", "method", "status"],
)
HTTP_SECONDS = Histogram(
    "arena_http_request_seconds",
    "Time to answer a request (an answer stream: until its headers), by route",
    ["endpoint"],
    buckets=REQUEST_BUCKETS,
)
BATTLES = Counter(
    "arena_battles", "Battles that reached a state: created, ready (both answers stored), voted, void", ["state"]
)
VOTES = Counter("arena_votes", "Votes taken, by outcome (a, b, tie, bothbad)", ["outcome"])
ANSWER_SECONDS = Histogram(
    "arena_answer_seconds",
    "Time to a model's whole answer, by model and source (endpoint: a provider call; recorded: a replay)",
    ["model", "source"],
    buckets=ANSWER_BUCKETS,
)
FIRST_TOKEN_SECONDS = Histogram(
    "arena_answer_first_token_seconds",
    "Time to a model's first answer text, by model and source",
    ["model", "source"],
    buckets=ANSWER_BUCKETS,
)
ANSWER_FAILURES = Counter(
    "arena_answer_failures",
    "Answers that failed (an error, a timeout, an empty answer), by model and source",
    ["model", "source"],
)
RATE_LIMITED = Counter("arena_rate_limited", "Requests refused by a rate limit, by action (battles, votes)", ["action"])
DATABASE_ERRORS = Counter(
    "arena_database_errors",
    "Requests that met a database error: unavailable (answered 503) or other (answered 500)",
    ["kind"],
)
SNAPSHOT_BUILDS = Counter("arena_snapshot_builds", "Snapshot builds by outcome (built, failed)", ["outcome"])
SNAPSHOT_BUILD_SECONDS = Histogram(
    "arena_snapshot_build_seconds", "Time to build, sign and store a snapshot", buckets=BUILD_BUCKETS
)


def registry() -> CollectorRegistry:
    """What this process reports: every process's counts in multiprocess mode, else this process's own."""
    if values.ValueClass is values.MutexValue:  # the mode prometheus-client chose when first imported
        return REGISTRY
    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined)
    return combined


def exposition(families: list[GaugeMetricFamily]) -> bytes:
    """The text format Prometheus scrapes: every process's counts, then `families` (read for this scrape)."""
    state = CollectorRegistry(auto_describe=False)
    state.register(_Fixed(families))
    return generate_latest(registry()) + generate_latest(state)


class _Fixed:
    """A collector of families computed once, for this scrape."""

    def __init__(self, families: list):
        self.families = families

    def collect(self):
        return iter(self.families)
