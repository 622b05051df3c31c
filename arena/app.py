"""The web application: settings, the database, error mapping, security headers, rate limits, blueprints.

`build_app` is all of it but the operator's commands; `arena.create_app` adds those (for `flask --app arena`),
and the `arena` console script builds the app here and runs its own command group, so that the command line
and the application never import each other.
"""

from __future__ import annotations

from flask import Flask

from arena import db, errors, settings
from arena.settings import ROOT, Settings
from arena.web import battles, board, health, labs, leaderboard, pages, ratelimit, security


def build_app(overrides: dict | None = None, *, arena_settings: Settings | None = None) -> Flask:
    """Build the application from the environment's settings (arena.settings; a bad one raises SettingsError
    before anything starts). `overrides`: settings by name (tests pass their own database URL); a name that
    is not an arena setting (TESTING) goes to Flask's own config."""
    overrides = dict(overrides or {})
    flask_only = {key: overrides.pop(key) for key in list(overrides) if key.lower() not in Settings.model_fields}
    chosen = arena_settings or settings.load(overrides)
    # "arena": templates are in arena/templates. Pages' CSS, JavaScript and vendored libraries live in the
    # repository's top-level static/ folder.
    app = Flask(
        "arena", instance_path=str(chosen.instance_path), static_folder=str(ROOT / "static"), static_url_path="/static"
    )
    settings.install(app, chosen)
    app.config.update(flask_only)
    db.init_app(app)
    errors.init_app(app)
    security.init_app(app)
    ratelimit.init_app(app)
    health.init_app(app)
    for blueprint in (battles.bp, labs.bp, leaderboard.bp, board.bp, pages.bp, health.bp):
        app.register_blueprint(blueprint)
    return app
