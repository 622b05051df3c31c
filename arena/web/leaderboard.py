"""The published leaderboard under /api/v1/leaderboard: read from stored snapshots only, never recomputed."""

from __future__ import annotations

import base64
import csv
import io

from flask import Blueprint, Response, request

from arena import db
from arena.errors import BadRequest, NotFound
from arena.leaderboard import reading, signing
from arena.settings import current
from arena.web import openapi
from arena.web.openapi import CSV, FORMAT_JSON_CSV, JSONL, MAX_ID, PEM, VERSION, ErrorBody
from ranking.signature import key_id

bp = Blueprint("leaderboard_api", __name__, url_prefix="/api/v1/leaderboard")

_ROW_FIELDS = (
    "rank_ub",
    "tier",
    "model",
    "organization",
    "lab",
    "rating",
    "ci_low",
    "ci_high",
    "battles",
    "wins",
    "losses",
    "ties",
    "provisional",
    "retired",
    "status",
)


def _snapshot(version: int | None = None):
    # versions are 32-bit in the database: a larger number cannot name one (PostgreSQL would refuse the query)
    too_large = version is not None and version > MAX_ID
    snapshot = None if too_large else reading.get_snapshot(db.session(), version)
    if snapshot is None:
        if version is None:
            raise NotFound("no_snapshot", "No leaderboard has been published yet (an operator runs 'arena snapshot').")
        raise NotFound("snapshot_not_found", f"There is no snapshot {version}.")
    return snapshot


def _flag(name: str) -> bool:
    value = request.args.get(name, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise BadRequest("invalid_parameter", f"'{name}' must be true or false.")


def _summary(document: dict) -> dict:
    """What every leaderboard answer says of the snapshot it comes from."""
    version = document["version"]
    return {
        "version": version,
        "created_at": document["created_at"],
        "code_version": document["code_version"],
        "votes": document["votes"],
        "battle_file": document["battle_file"],
        "snapshot": f"/api/v1/leaderboard/snapshots/{version}",
        "public_key": document["public_key"],
        "key_id": document["signature"]["key_id"],
        **({"attribution": document["attribution"]} if "attribution" in document else {}),
    }


@bp.get("")
@openapi.documented(
    "The newest published leaderboard",
    "leaderboard",
    {200: openapi.LeaderboardOut, 400: ErrorBody, 404: ErrorBody},
    query_params={"category": {"type": "string"}, "style": {"type": "boolean"}},
    description="Read from the newest stored snapshot, never recomputed. ?category=NAME for a "
    "prompt category's board, ?style=true for the style-controlled board.",
)
def leaderboard():
    """The newest snapshot's board: overall, or ?category=NAME, or ?style=true (style-controlled)."""
    document = reading.newest_document(db.session())
    if document is None:
        _snapshot()  # the one "nothing published yet" answer
    category, style = request.args.get("category"), _flag("style")
    if category and style:
        raise BadRequest("invalid_parameter", "Ask for a category or for the style-controlled board, not both.")
    if category:
        board = document["boards"]["categories"].get(category)
        if board is None:
            known = ", ".join(sorted(document["boards"]["categories"])) or "none"
            raise NotFound("category_not_found", f"No board for category {category!r} (categories: {known}).")
        name = f"category:{category}"
    elif style:
        board = document["boards"]["style"]
        if board is None:
            raise NotFound("no_style_board", "This snapshot has no style-controlled board (no answer lengths).")
        name = "style"
    else:
        board, name = document["boards"]["overall"], "overall"
    return {
        **_summary(document),
        "board": name,
        "categories": sorted(document["boards"]["categories"]),
        "style_available": document["boards"]["style"] is not None,
        "provisional_votes": document["settings"]["provisional_votes"],
        **board,
        "unrated": [m for m in document["models"] if not m["rated"]],
    }


@bp.get("/snapshots")
@openapi.documented("Every published snapshot, newest first", "leaderboard", {200: openapi.SnapshotList})
def list_snapshots():
    rows = db.session().execute(reading.snapshot_index()).all()
    return {
        "snapshots": [
            {
                "version": row.version,
                "created_at": reading.iso_utc(row.created_at),
                "code_version": row.code_version,
                "votes_counted": row.votes_counted,
                "votes_excluded": row.votes_excluded,
                "battle_file_sha256": row.battle_file_sha256,
                "key_id": row.key_id,
                "url": f"/api/v1/leaderboard/snapshots/{row.version}",
            }
            for row in rows
        ]
    }


@bp.get("/snapshots/<int:version>")
@openapi.documented(
    "One snapshot: the signed document, or its boards as CSV",
    "leaderboard",
    {200: (openapi.SnapshotDocument, CSV), 400: ErrorBody, 404: ErrorBody},
    path_params={"version": VERSION},
    query_params=FORMAT_JSON_CSV,
    description="Check it with `python -m ranking verify snapshot.json battles.jsonl --public-key KEY`.",
)
def show_snapshot(version: int):
    """The signed document (JSON), or every board's rows as CSV with ?format=csv."""
    document = reading.published_document(_snapshot(version))
    wanted = request.args.get("format", "json")
    if wanted == "json":
        return document
    if wanted != "csv":
        raise BadRequest("invalid_parameter", "'format' must be json or csv.")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["version", "board", *_ROW_FIELDS])
    for name, board in reading.named_boards(document["boards"]):
        for row in board["models"]:
            writer.writerow([version, name, *("" if row.get(f) is None else row.get(f) for f in _ROW_FIELDS)])
    return _download(out.getvalue().encode(), f"snapshot-{version}.csv", "text/csv; charset=utf-8")


@bp.get("/snapshots/<int:version>/battles")
@openapi.documented(
    "The snapshot's exact battle file (JSON Lines; its SHA-256 is in the snapshot)",
    "leaderboard",
    {200: JSONL, 404: ErrorBody},
    path_params={"version": VERSION},
)
def snapshot_battles(version: int):
    """The exact battle file the snapshot was computed from (its SHA-256 is in the snapshot)."""
    return _file(version, "battles")


@bp.get("/snapshots/<int:version>/votes")
@openapi.documented(
    "Every vote the snapshot considered, with the reason for each one left out (JSON Lines)",
    "leaderboard",
    {200: JSONL, 404: ErrorBody},
    path_params={"version": VERSION},
)
def snapshot_votes(version: int):
    """Every vote the snapshot considered, counted or not, with the reason for each one left out."""
    return _file(version, "votes")


@bp.get("/public-key")
@openapi.documented(
    "The Ed25519 key that signs snapshots (PEM, or JSON with ?format=json)",
    "leaderboard",
    {200: (openapi.PublicKeyOut, PEM), 400: ErrorBody},
    query_params={"format": {"type": "string", "enum": ["pem", "json"]}},
)
def public_key():
    """The Ed25519 key that signs snapshots: PEM, or ?format=json with the raw key in base64 and its id."""
    wanted = request.args.get("format", "pem")
    if wanted not in ("pem", "json"):
        raise BadRequest("invalid_parameter", "'format' must be pem or json.")
    pem = signing.public_key_pem(current())
    if wanted == "json":
        raw = signing.public_key_raw(current())
        return {"algorithm": "ed25519", "public_key": base64.b64encode(raw).decode(), "key_id": key_id(raw), "pem": pem}
    return Response(pem, mimetype="application/x-pem-file")


def _file(version: int, kind: str):
    _snapshot(version)
    data = reading.snapshot_file(db.session(), version, kind)
    if data is None:
        raise NotFound("file_not_found", f"Snapshot {version} has no {kind} file.")
    return _download(data, f"snapshot-{version}-{kind}.jsonl", "application/jsonl")


def _download(data: bytes, filename: str, mimetype: str) -> Response:
    return Response(
        data,
        mimetype=mimetype,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "public, max-age=31536000, immutable",
        },
    )
