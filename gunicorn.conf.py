"""gunicorn settings for `make run`.

Worker class: gthread. An answer stream stays open for as long as two models take to answer, so a sync worker
would be pinned to one stream; with gthread each open stream holds one thread, and a few hundred threads per
worker are cheap. (gevent would also do, but it needs monkey-patching of every library we call, the database
drivers included; threads need nothing.)
"""
import os

from arena.config import instance_folder

bind = f"{os.environ.get('ARENA_HOST', '127.0.0.1')}:{os.environ.get('ARENA_PORT', '8000')}"
worker_class = "gthread"
workers = int(os.environ.get("ARENA_WORKERS", "2"))
threads = int(os.environ.get("ARENA_THREADS", "256"))
worker_connections = 1000
timeout = 60  # heartbeat of an idle worker, not a limit on a request: gthread streams may run longer
graceful_timeout = 30
keepalive = 5
accesslog = "-" if os.environ.get("ARENA_ACCESS_LOG") else None
# gunicorn 27 opens a control socket at ~/.gunicorn/gunicorn.ctl for every instance unless told otherwise, so a
# second server on the machine would take it over from the first: keep ours in the instance folder.
instance_folder().mkdir(parents=True, exist_ok=True)
control_socket = str(instance_folder() / "gunicorn.ctl")
