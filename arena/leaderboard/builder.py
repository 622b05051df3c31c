"""The builder: the one process that builds snapshots when they are due, never a web worker.

A build is a JAX fit of every board, seconds of CPU at a large arena. Run inside a gunicorn worker it took the
votes' p99 with it (4.1 s at 300 votes/s offered while a build ran), and a worker that gunicorn recycled took its
build along. So `arena builder` runs beside gunicorn (`arena serve`, which `make run` starts, restarts it if it
dies), at a lower CPU priority than the web workers (ARENA_BUILDER_NICE), and:

- every ARENA_BUILDER_CHECK_SECONDS it asks whether ARENA_SNAPSHOT_EVERY_VOTES new counted votes have arrived
  since the newest snapshot, and builds one if so (`build_snapshot(only_if_due=True)`: alone across processes
  and hosts, by the lock in arena.leaderboard.locks);
- a build killed halfway leaves nothing: the snapshot and both of its files are stored in one transaction, the
  lock dies with its holder, and the next check (of the restarted builder) finds the build still due and runs it;
- a heartbeat file in the instance folder (pid, time, state) says it is alive, written by a thread of its own so
  that a long build does not look like a dead builder; `/readyz` reads it.

`arena snapshot` still builds at once from the command line.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import NamedTuple

from flask import Flask

from arena.leaderboard.builds import build_snapshot
from arena.models import Snapshot
from arena.settings import Settings, settings_of

log = logging.getLogger(__name__)

HEARTBEAT_FILE = "builder-heartbeat.json"


class Heartbeat(NamedTuple):
    pid: int
    at: float  # time.time() of the beat
    state: str  # "idle" or "building"
    builds: int  # snapshots this process has built
    checks: int = 0  # times it has looked whether a snapshot is due


def heartbeat_path(settings: Settings) -> Path:
    return settings.instance_path / HEARTBEAT_FILE


def read_heartbeat(settings: Settings) -> Heartbeat | None:
    try:
        return Heartbeat(**json.loads(heartbeat_path(settings).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def builder_alive(settings: Settings, *, now: float | None = None) -> bool:
    """Whether this host's builder beat recently (within three check intervals, at least 30 s) and its process
    still exists."""
    beat = read_heartbeat(settings)
    if beat is None:
        return False
    if (now if now is not None else time.time()) - beat.at > max(3 * settings.builder_check_seconds, 30.0):
        return False
    try:
        os.kill(beat.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, under another user
        return True
    return True


class Builder:
    """One builder process's loop; `stop` ends it between checks (a build in progress runs to its end)."""

    def __init__(self, app: Flask):
        self.app = app
        self.settings = settings_of(app)
        self.stop = threading.Event()
        self.state = "idle"
        self.builds = self.checks = 0

    def beat(self) -> None:
        """Write the heartbeat atomically: a reader sees the old one or the new one, never half of one."""
        path = heartbeat_path(self.settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        beat = Heartbeat(os.getpid(), time.time(), self.state, self.builds, self.checks)
        temporary.write_text(json.dumps(beat._asdict()))
        os.replace(temporary, path)

    def _beating(self) -> None:
        while not self.stop.wait(min(self.settings.builder_check_seconds, 5.0)):
            try:
                self.beat()
            except OSError:
                log.exception("the builder could not write its heartbeat")

    def run_once(self) -> Snapshot | None:
        """One check: build a snapshot if one is due (and no other process is building); the new one, or None."""
        if self.settings.snapshot_every_votes <= 0:  # snapshots only on the operator's command
            return None
        self.state = "building"
        self.beat()
        try:
            built = build_snapshot(self.app, only_if_due=True)
        finally:
            self.state = "idle"
            self.checks += 1
        if built is not None:
            self.builds += 1
            log.info("built snapshot %d", built.version)
        self.beat()
        return built

    def run(self) -> None:
        """Check and build until stopped. A failed build is logged and tried again at the next check."""
        lower_priority(self.settings.builder_nice)
        self.beat()
        beating = threading.Thread(target=self._beating, name="builder-heartbeat", daemon=True)
        beating.start()
        log.info(
            "builder started (pid %d): a snapshot after %d new counted votes, checked every %g s",
            os.getpid(),
            self.settings.snapshot_every_votes,
            self.settings.builder_check_seconds,
        )
        while not self.stop.is_set():
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - the builder outlives a failed build; the next check retries it
                log.exception("snapshot build failed; tried again at the next check")
            self.stop.wait(self.settings.builder_check_seconds)
        log.info("builder stopped")


def lower_priority(nice: int) -> int:
    """Raise this process's niceness to at least `nice` (never lower it); the niceness now."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if nice > current:
        os.nice(nice - current)
    return os.getpriority(os.PRIO_PROCESS, 0)
