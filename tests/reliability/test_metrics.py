"""Two gunicorn workers count in prometheus-client's multiprocess mode, and /metrics shows their sum; with
ARENA_LOG_FORMAT=json every line gunicorn and the arena write is one JSON object."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.parser import text_string_to_metric_families

from arena import db
from tests.reliability.harness import Server, gunicorn_available

HEALTHZ = {"endpoint": "health.healthz", "method": "GET", "status": "200"}


def healthz_count(families) -> float:
    return sum(
        s.value
        for family in families
        for s in family.samples
        if s.name == "arena_http_requests_total" and s.labels == HEALTHZ
    )


def per_worker(folder, pid: int, scratch) -> float:
    """One worker's own count: its files alone, summed by the same collector /metrics uses."""
    scratch.mkdir()
    for path in folder.glob(f"*_{pid}.db"):
        shutil.copy(path, scratch)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(scratch))
    return healthz_count(registry.collect())


@pytest.mark.skipif(not gunicorn_available(), reason="needs gunicorn")
def test_two_workers_counts_add_up_and_logs_are_json(tmp_path):
    url = f"sqlite:///{tmp_path / 'arena.db'}"
    db.upgrade(url)
    with Server(
        tmp_path, url, workers=2, threads=4, extra={"ARENA_LOG_FORMAT": "json", "ARENA_ACCESS_LOG": "1"}
    ) as server:
        folder = server.instance / "metrics"
        workers = server.wait_for_workers()
        sent = 0

        def hit(_):
            with httpx.Client() as client:  # a connection each: gunicorn's workers take turns accepting
                return client.get(f"{server.base}/healthz").status_code

        with ThreadPoolExecutor(8) as pool:
            for _ in range(50):  # batches until both workers have served some (by count, never by time)
                assert set(pool.map(hit, range(16))) == {200}
                sent += 16
                counts = {pid: per_worker(folder, pid, tmp_path / f"w{pid}-{sent}") for pid in workers}
                if all(counts.values()):
                    break
        assert all(counts.values()), f"one worker served every request: {counts}"
        scrape = httpx.get(f"{server.base}/metrics")
        assert scrape.status_code == 200
        total = healthz_count(text_string_to_metric_families(scrape.text))
        assert sum(counts.values()) == total == sent
    lines = [line for line in server.log.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line: a JSON object, or this fails
    requests = [r for r in records if r["logger"] == "gunicorn.access" and r.get("path") == "/healthz"]
    assert len(requests) == sent and {r["status"] for r in requests} == {200}
    assert any("Booting worker" in r["message"] for r in records if r["logger"] == "gunicorn.error")
