"""gunicorn entry point: `gunicorn wsgi:app`.

A bad ARENA_* setting stops the worker with one line and gunicorn's boot-error status (3), which stops gunicorn
itself instead of restarting workers that cannot start.
"""

import sys

from arena import create_app, logs
from arena.settings import SettingsError, settings_of

try:
    app = create_app()
except SettingsError as error:
    print(f"error: {error}", file=sys.stderr, flush=True)
    sys.exit(3)
logs.configure(settings_of(app).log_format)  # the arena's own log lines, as text or JSON (ARENA_LOG_FORMAT)
