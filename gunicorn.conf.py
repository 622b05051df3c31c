"""gunicorn settings for `make run`.

Worker class: gthread. An answer stream stays open for as long as two models take to answer, so a sync worker
would be pinned to one stream; with gthread each open stream holds one thread, and a few hundred threads per
worker are cheap. (gevent would also do, but it needs monkey-patching of every library we call, the database
drivers included; threads need nothing.)
"""

import os
import sys

from arena.logs import gunicorn_logger
from arena.settings import SettingsError, load, use_multiprocess_metrics

try:
    settings = load()  # every ARENA_* variable, checked before any worker starts
except SettingsError as error:
    print(f"error: {error}", file=sys.stderr, flush=True)
    sys.exit(2)

# Every worker counts its metrics in files of one folder, which /metrics sums (arena.metrics); set before any
# worker imports prometheus-client.
use_multiprocess_metrics(settings)
from prometheus_client import multiprocess  # noqa: E402 - only once the folder above is chosen

bind = f"{settings.host}:{settings.port}"
worker_class = "gthread"
# Four workers on two cores: a gthread worker is one process with one GIL, and every thread of a worker that
# has a request in hand competes for it. With two workers, a burst of votes put dozens of threads behind each GIL,
# the CPU per vote rose by half (3.5 -> 5+ ms) and the server fell further behind the longer it was behind;
# at 300 votes/s offered, four workers got more votes done than two in 9 of 11 paired runs on the shared machine
# (bench/service.py, bench/README.md). Each still takes up to 256 threads, so any one worker can hold the 200
# simultaneous streams on its own: workers do not share out connections evenly (128 threads each missed it).
workers = settings.workers
threads = settings.threads
# The database pool is per worker (ARENA_DB_POOL_SIZE): unless set, 40 connections in all are shared among the
# workers, so more workers do not run PostgreSQL out of connections (max_connections is 100 by default).
os.environ.setdefault("ARENA_DB_POOL_SIZE", str(max(2, 40 // workers)))
worker_connections = 1000
timeout = 60  # heartbeat of an idle worker, not a limit on a request: gthread streams may run longer
graceful_timeout = 30
keepalive = 5
accesslog = "-" if settings.access_log else None
logger_class = gunicorn_logger(settings.log_format)  # ARENA_LOG_FORMAT=json: gunicorn's own lines as JSON too
# gunicorn 27 opens a control socket at ~/.gunicorn/gunicorn.ctl for every instance unless told otherwise, so a
# second server on the machine would take it over from the first: keep ours in the instance folder.
settings.instance_path.mkdir(parents=True, exist_ok=True)
control_socket = str(settings.instance_path / "gunicorn.ctl")


def child_exit(server, worker):
    """A worker's live gauges leave with it (its counters stay in the sums)."""
    multiprocess.mark_process_dead(worker.pid)
