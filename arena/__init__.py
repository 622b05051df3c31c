"""The arena service: blind pairwise battles between AI models, votes, and the labs' API.

The layout (each package's docstring says more):
- `web/`: blueprints and pages, a thin layer over the domain packages; `cli/`: the operator's commands;
- domain packages, importing downward only: `battles/` (a battle from pairing to its vote) over
  `leaderboard/` (counting rules, sampling, snapshot builds and reads) and `board/` (safety scores, milestones),
  over `catalog/` (labs, models, keys, answers, the audit log), over `egress/` (calls out to model endpoints);
- beneath them all: `models` (the schema), `db`, `settings` (every ARENA_* variable, checked once), `errors`
  (the one error dialect);
- `ranking/`, beside `arena/`: the pure ranking library, which imports nothing of arena.
"""

from __future__ import annotations

from flask import Flask


def create_app(config: dict | None = None) -> Flask:
    """The application with the operator's commands registered (`flask --app arena ...`; tests' CLI runner)."""
    from arena.app import build_app
    from arena.cli import register_commands

    app = build_app(config)
    register_commands(app)
    return app
