"""The milestone board under /api/v1: milestone decisions on a stored snapshot, and the board's signed export.

Read only: decisions are computed from a stored snapshot, the stored safety scores and the declared milestones
(arena.board.exports); nothing here ranks or imports JAX, except the export's signing (arena.leaderboard.signing), on
first use.
"""

from __future__ import annotations

import re

from flask import Blueprint, Response, request

from arena import db
from arena.board import exports
from arena.errors import BadRequest, NotFound
from arena.settings import current
from arena.web import openapi
from arena.web.openapi import CSV, FORMAT_JSON_CSV, MAX_ID, VERSION, ErrorBody

bp = Blueprint("board_api", __name__, url_prefix="/api/v1")


def _snapshot(version: int | None):
    if version is not None and version > MAX_ID:
        raise NotFound("snapshot_not_found", f"There is no snapshot {version}.")
    try:
        return exports.find_snapshot(db.session(), version)
    except NotFound as missing:  # the same refusal, in the API's words
        if version is None:
            raise NotFound(
                "no_snapshot", "No leaderboard has been published yet (an operator runs 'arena snapshot')."
            ) from missing
        raise NotFound("snapshot_not_found", f"There is no snapshot {version}.") from missing


def _threshold() -> float:
    return float(current().board_correlation_flag)


@bp.get("/milestones")
@openapi.documented(
    "Every milestone decided on a snapshot (the newest by default)",
    "board",
    {200: openapi.MilestonesOut, 400: ErrorBody, 404: ErrorBody},
    query_params={"snapshot": {"type": "integer", "minimum": 1, "maximum": MAX_ID}},
    description="Each model's decision with its margins, the first snapshot where a model met the "
    "milestone, and each safety metric's correlation with capability.",
)
def milestones():
    """Every milestone on the newest snapshot (or ?snapshot=N): each model's decision with its margins, the
    first snapshot where a model met it, and each safety metric's correlation with capability."""
    wanted = request.args.get("snapshot")
    version = None
    if wanted is not None:
        if not re.fullmatch(r"[0-9]{1,10}", wanted) or not 1 <= int(wanted) <= MAX_ID:
            raise BadRequest("invalid_parameter", "'snapshot' must be a snapshot version (a positive integer).")
        version = int(wanted)
    return exports.board_report(db.session(), _snapshot(version), threshold=_threshold())


@bp.get("/board/snapshots/<int:version>")
@openapi.documented(
    "The milestone board's signed export for a snapshot (JSON, or CSV with ?format=csv)",
    "board",
    {200: (openapi.BoardExport, CSV), 400: ErrorBody, 404: ErrorBody},
    path_params={"version": VERSION},
    query_params=FORMAT_JSON_CSV,
    description="The JSON is signed like the snapshot; the CSV's detached Ed25519 signature (base64) "
    "is in the X-Arena-Signature header.",
)
def board_export(version: int):
    """The board's export for a snapshot: signed JSON (format arena-board/1), or ?format=csv with the CSV's
    detached Ed25519 signature (base64) in the X-Arena-Signature header."""
    wanted = request.args.get("format", "json")
    if wanted not in ("json", "csv"):
        raise BadRequest("invalid_parameter", "'format' must be json or csv.")
    snapshot = _snapshot(version)
    if wanted == "json":
        return exports.export_document(db.session(), current(), snapshot, threshold=_threshold())
    data, signature = exports.export_csv(db.session(), current(), snapshot, threshold=_threshold())
    return Response(
        data,
        mimetype="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="board-{version}.csv"',
            "X-Arena-Signature": signature["value"],
            "X-Arena-Key-Id": signature["key_id"],
        },
    )
