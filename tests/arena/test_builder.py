"""Snapshot builds run in the builder process (arena.leaderboard.builder), never in a web worker: votes past the
threshold start nothing in the worker, the builder builds when due, a builder killed halfway through a build
leaves nothing behind and its restart builds it, and `arena serve` keeps a dying builder running."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from arena.catalog import demo
from arena.cli.serve import Supervisor
from arena.leaderboard.builder import Builder, builder_alive, read_heartbeat
from arena.models import Snapshot, SnapshotFile
from arena.settings import override, settings_of
from tests.arena.conftest import gen_prompt, gen_recorded_model

REPO = Path(__file__).resolve().parents[2]
REPLICATES = 20


def wait_for(condition, timeout_s: float = 300.0, what: str = "condition"):
    """Poll until `condition()` is true; the timeout only ends a hung run, it is no budget."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def count(session, table) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(table))


def test_votes_never_build_in_the_web_worker_and_the_builder_builds_when_due(app, client, session):
    override(app, SNAPSHOT_REPLICATES=REPLICATES, SNAPSHOT_STYLE_REPLICATES=REPLICATES, SNAPSHOT_EVERY_VOTES=2)
    prompt = gen_prompt(session)
    gen_recorded_model(session, "One", "Org", {prompt.id: "First answer."})
    gen_recorded_model(session, "Two", "Org", {prompt.id: "Second answer."})
    threads_before = set(threading.enumerate())
    for _ in range(3):
        created = client.post("/api/v1/battles", json={"prompt_id": prompt.id}).get_json()
        client.get(created["stream"]).data  # read to the end: the answers are stored when both are done
        assert client.post(f"/api/v1/battles/{created['id']}/vote", json={"winner": "tie"}).status_code == 200
    assert count(session, Snapshot) == 0  # past the threshold, and the worker built nothing
    assert not [t for t in set(threading.enumerate()) - threads_before if "build" in t.name]

    builder = Builder(app)
    built = builder.run_once()
    assert built is not None and built.votes_counted == 3
    assert builder.run_once() is None  # not due again until two more counted votes
    beat = read_heartbeat(settings_of(app))
    assert (beat.pid, beat.state, beat.builds) == (os.getpid(), "idle", 1)
    assert builder_alive(settings_of(app)) and not builder_alive(settings_of(app), now=beat.at + 3600)
    assert client.get("/api/v1/leaderboard").get_json()["votes"]["counted"] == 3


def test_with_every_votes_zero_only_the_operator_builds(app, session):
    override(app, SNAPSHOT_EVERY_VOTES=0)
    assert Builder(app).run_once() is None and count(session, Snapshot) == 0


def builder_env(app) -> dict:
    settings = settings_of(app)
    return {
        **os.environ,
        "ARENA_DATABASE_URL": settings.sqlalchemy_url,
        "ARENA_INSTANCE_PATH": str(settings.instance_path),
        "ARENA_SECRET_KEY": settings.secret_key,
        "ARENA_SNAPSHOT_EVERY_VOTES": "1",
        "ARENA_SNAPSHOT_REPLICATES": str(REPLICATES),
        "ARENA_SNAPSHOT_STYLE_REPLICATES": "0",
        "ARENA_BUILDER_CHECK_SECONDS": "0.1",
        "ARENA_BUILDER_NICE": "7",
    }


def test_a_builder_killed_mid_build_leaves_nothing_and_its_restart_builds_the_snapshot(app, session):
    demo.load_demo(session)
    env = builder_env(app)
    settings = settings_of(app)
    first = subprocess.Popen(
        [sys.executable, "-m", "arena.cli", "builder"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(
            lambda: (beat := read_heartbeat(settings)) and beat.pid == first.pid and beat.state == "building",
            what="the first builder to start its build",
        )
        # the builder runs below the test's own CPU priority (what the web workers have)
        assert os.getpriority(os.PRIO_PROCESS, first.pid) >= max(7, os.getpriority(os.PRIO_PROCESS, 0))
        first.kill()
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
    assert count(session, Snapshot) == 0 and count(session, SnapshotFile) == 0  # nothing half-written
    assert not builder_alive(settings)  # its heartbeat names a process that is gone

    second = subprocess.Popen(
        [sys.executable, "-m", "arena.cli", "builder"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: count(session, Snapshot) == 1, what="the restarted builder's snapshot")
        assert builder_alive(settings)
        second.terminate()  # stops after the check in progress
        _, errors = second.communicate(timeout=120)
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 0, errors
    stored = session.scalars(select(Snapshot)).one()
    assert stored.votes_counted > 0 and count(session, SnapshotFile) == 2  # the document and both files


def test_the_supervisor_restarts_a_builder_that_dies_and_stops_it_with_the_server(tmp_path):
    starts = tmp_path / "starts"
    dying = [sys.executable, "-c", f"open({str(starts)!r}, 'a').write('x'); raise SystemExit(1)"]
    # the "server" exits once the builder has been started three times
    server = [
        sys.executable,
        "-c",
        f"import pathlib, time\np = pathlib.Path({str(starts)!r})\n"
        "while not (p.exists() and len(p.read_text()) >= 3): time.sleep(0.01)\n"
        "raise SystemExit(7)",
    ]
    supervisor = Supervisor(server, dying, first_delay=0.01, max_delay=0.02)
    assert supervisor.run() == 7  # the server's status
    assert supervisor.restarts >= 2 and len(starts.read_text()) >= 3


def test_the_supervisor_stops_a_running_builder_when_the_server_ends(tmp_path):
    pid_file = tmp_path / "builder.pid"
    builder = [
        sys.executable,
        "-c",
        f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid()))\nwhile True: time.sleep(1)",
    ]
    server = [
        sys.executable,
        "-c",
        f"import pathlib, time\np = pathlib.Path({str(pid_file)!r})\n"
        "while not p.exists() or not p.read_text(): time.sleep(0.01)",
    ]
    supervisor = Supervisor(server, builder)
    assert supervisor.run() == 0 and supervisor.restarts == 0
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # terminated and reaped
        os.kill(pid, 0)
