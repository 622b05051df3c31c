"""The arena service: blind pairwise battles between AI models, votes, and the labs' API."""
from __future__ import annotations

from flask import Flask

from arena.config import ROOT, Config


def create_app(config: dict | None = None) -> Flask:
    """Build the application; `config` overrides settings (tests pass their own database URL)."""
    settings = Config().update(config)
    # Pages' CSS, JavaScript and vendored libraries live in the repository's top-level static/ folder.
    app = Flask(__name__, instance_path=settings.INSTANCE_PATH, static_folder=str(ROOT / "static"),
                static_url_path="/static")
    app.config.from_object(settings)

    from arena import db, errors, ratelimit, security

    db.init_app(app)
    errors.init_app(app)
    security.init_app(app)
    ratelimit.init_app(app)

    from arena import api, board_api, lab_api, leaderboard_api

    app.register_blueprint(api.bp)
    app.register_blueprint(lab_api.bp)
    app.register_blueprint(leaderboard_api.bp)
    app.register_blueprint(board_api.bp)

    from arena import pages

    app.register_blueprint(pages.bp)

    from arena.cli import register_commands

    register_commands(app)
    return app
