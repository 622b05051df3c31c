"""`arena serve` (what `make run` starts) and `arena builder`: the web server and the snapshot builder, side by
side, the builder supervised.

`arena serve` runs gunicorn (gunicorn.conf.py, wsgi:app) and `arena builder` as two child processes. When the
builder exits while the server runs (a crash, the OOM killer, `kill`), it is started again, after 1 s, doubling up
to 30 s while it keeps dying at once. When gunicorn exits, or on SIGINT/SIGTERM, both are stopped and `arena serve`
exits with gunicorn's status.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time

import click
from flask import current_app

from arena import logs
from arena.cli.common import reports_errors
from arena.leaderboard.builder import Builder
from arena.settings import settings_of, use_multiprocess_metrics

log = logging.getLogger(__name__)

FIRST_RESTART_DELAY_S, MAX_RESTART_DELAY_S = 1.0, 30.0
STEADY_S = 60.0  # a builder that ran this long before it died is restarted after the first delay again


class Supervisor:
    """Runs `web` and `builder` (argument lists); keeps the builder running for as long as `web` runs."""

    def __init__(
        self,
        web: list[str],
        builder: list[str],
        *,
        first_delay: float = FIRST_RESTART_DELAY_S,
        max_delay: float = MAX_RESTART_DELAY_S,
    ):
        self.web_command, self.builder_command = web, builder
        self.first_delay, self.max_delay = first_delay, max_delay
        self.stopping = threading.Event()
        self.restarts = 0

    def _start_builder(self) -> subprocess.Popen:
        return subprocess.Popen(self.builder_command)

    def run(self) -> int:
        web = subprocess.Popen(self.web_command)
        builder, started, delay = self._start_builder(), time.monotonic(), self.first_delay
        try:
            while not self.stopping.is_set() and web.poll() is None:
                code = builder.poll()
                if code is not None:
                    delay = self.first_delay if time.monotonic() - started >= STEADY_S else delay
                    click.echo(
                        f"arena serve: the builder exited with status {code}; starting it again in {delay:g} s",
                        err=True,
                    )
                    if self.stopping.wait(delay) or web.poll() is not None:
                        break
                    builder, started = self._start_builder(), time.monotonic()
                    self.restarts += 1
                    delay = min(delay * 2, self.max_delay)
                    continue
                self.stopping.wait(0.2)
        finally:
            for process in (builder, web):
                _stop(process)
        return web.returncode if web.returncode is not None else 0


def _stop(process: subprocess.Popen, grace_s: float = 30.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@click.command("serve")
@reports_errors
def serve() -> None:
    """Serve the arena with gunicorn (gunicorn.conf.py) and run the snapshot builder beside it, supervised."""
    settings = settings_of(current_app)
    logs.configure(settings.log_format)
    use_multiprocess_metrics(settings)  # both children count their metrics in one folder, which /metrics sums
    supervisor = Supervisor(
        [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"],
        [sys.executable, "-m", "arena.cli", "builder"],
    )
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: supervisor.stopping.set())
    sys.exit(supervisor.run())


@click.command("builder")
@reports_errors
def builder() -> None:
    """Build snapshots when due (ARENA_SNAPSHOT_EVERY_VOTES new counted votes), at a lower CPU priority, until
    stopped (SIGTERM or SIGINT: after the build in progress)."""
    logs.configure(settings_of(current_app).log_format)
    loop = Builder(current_app._get_current_object())
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: loop.stop.set())
    loop.run()


GROUPS = (serve, builder)
