"""The web application: settings, the database, error mapping, security headers, rate limits, blueprints.

`build_app` is all of it but the operator's commands; `arena.create_app` adds those (for `flask --app arena`),
and the `arena` console script builds the app here and runs its own command group, so that the command line
and the application never import each other.
"""
from __future__ import annotations

from flask import Flask

from arena import db, errors
from arena.config import ROOT, Config
from arena.web import battles, board, labs, leaderboard, pages, ratelimit, security


def build_app(config: dict | None = None) -> Flask:
    """Build the application; `config` overrides settings (tests pass their own database URL)."""
    settings = Config().update(config)
    # "arena": templates are in arena/templates. Pages' CSS, JavaScript and vendored libraries live in the
    # repository's top-level static/ folder.
    app = Flask("arena", instance_path=settings.INSTANCE_PATH, static_folder=str(ROOT / "static"),
                static_url_path="/static")
    app.config.from_object(settings)
    db.init_app(app)
    errors.init_app(app)
    security.init_app(app)
    ratelimit.init_app(app)
    for blueprint in (battles.bp, labs.bp, leaderboard.bp, board.bp, pages.bp):
        app.register_blueprint(blueprint)
    return app
