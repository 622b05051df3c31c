"""The operator's endpoints: `/healthz` (the process answers), `/readyz` (it can serve: arena.health), `/metrics`
(Prometheus), and the per-request counts behind them."""

from __future__ import annotations

import hmac
import ipaddress
import time

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request

from arena import health, metrics
from arena.errors import NotFound
from arena.settings import current

bp = Blueprint("health", __name__)

# Any other method name (werkzeug takes any token) is counted as "other": a label value is never the client's.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    return jsonify({"status": "ready", "checks": health.require_ready(current_app._get_current_object())})


@bp.get("/metrics")
def prometheus_metrics():
    _allow_scrape()
    body = metrics.exposition(health.state_families(current_app._get_current_object()))
    return Response(body, content_type=metrics.CONTENT_TYPE)


def _allow_scrape() -> None:
    """ARENA_METRICS_TOKEN as a bearer token when set; else loopback clients only. Others get a 404, as for a
    route that does not exist."""
    token = current().metrics_token
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if hmac.compare_digest(given.encode(), token.encode()):
            return
    else:
        try:
            if ipaddress.ip_address(request.remote_addr or "").is_loopback:
                return
        except ValueError:
            pass
    raise NotFound("not_found", "The requested URL was not found on the server.")


def init_app(app: Flask) -> None:
    """Count every request by route, method and status, and time it (until its headers, for a stream)."""

    @app.before_request
    def _start_clock():
        g.request_started = time.perf_counter()

    @app.after_request
    def _count(response):
        endpoint = request.endpoint or "unmatched"
        method = request.method if request.method in _METHODS else "other"
        metrics.HTTP_REQUESTS.labels(endpoint, method, str(response.status_code)).inc()
        started = g.get("request_started")
        if started is not None:
            metrics.HTTP_SECONDS.labels(endpoint).observe(time.perf_counter() - started)
        return response
