"""The board for one snapshot, and its signed export (JSON and CSV), one file per leaderboard snapshot."""

from __future__ import annotations

import base64
import csv
import hashlib
import io

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.orm import Session

from arena.board.correlations import correlations
from arena.board.milestones import (
    evaluate_milestone,
    list_milestones,
    met_first,
    snapshot_day,
)
from arena.board.scores import load_scores, score_dict, scores_on
from arena.errors import NotFound
from arena.leaderboard import signing
from arena.leaderboard.reading import get_snapshot, published_document
from arena.models import Snapshot
from arena.settings import Settings
from ranking.signature import SIGNATURE_ALGORITHM, key_id, signed_bytes

EXPORT_FORMAT = "arena-board/1"


# ------------------------------------------------------------------------------------------------ the board


def find_snapshot(session: Session, version: int | None = None) -> Snapshot:
    """The snapshot of that version (the newest by default); NotFound saying what is missing."""
    snapshot = get_snapshot(session, version)
    if snapshot is None:
        if version is None:
            raise NotFound("no_snapshot", "no leaderboard snapshot has been published yet (run 'arena snapshot')")
        raise NotFound("snapshot_not_found", f"there is no snapshot {version}")
    return snapshot


def board_report(session: Session, snapshot: Snapshot, *, threshold: float) -> dict:
    """Every milestone evaluated on the snapshot, with "met first" over the history up to it, the safety
    scores used, and each metric's correlation with capability."""
    document = published_document(snapshot)
    scores = load_scores(session)
    definitions = [m.definition for m in list_milestones(session)]
    day = snapshot_day(document)
    chosen = scores_on(scores, day)
    firsts = met_first(session, snapshot.version, definitions, scores)
    metrics = {t["metric"] for d in definitions for t in d["safety"]}
    return {
        "snapshot": {
            "version": document["version"],
            "created_at": document["created_at"],
            "url": f"/api/v1/leaderboard/snapshots/{document['version']}",
            "key_id": document["signature"]["key_id"],
            "provisional_votes": document["settings"]["provisional_votes"],
        },
        "scores_dated_on_or_before": day.isoformat(),
        "milestones": [
            {**evaluate_milestone(d, document, chosen), "met_first": firsts[d["name"]]} for d in definitions
        ],
        "correlations": correlations(document, chosen, threshold=threshold, metrics=metrics),
        "safety_scores": [score_dict(chosen[key]) for key in sorted(chosen)],
    }


def export_document(session: Session, settings: Settings, snapshot: Snapshot, *, threshold: float) -> dict:
    """The board's signed export for one snapshot (format arena-board/1): the overall board's rows, the
    safety scores used, the milestone decisions and the correlations, tied to the snapshot by the SHA-256 of
    its signed bytes, and signed like the snapshot (`ranking.signature.check_signature` verifies it)."""
    document = published_document(snapshot)
    report = board_report(session, snapshot, threshold=threshold)
    overall = document["boards"]["overall"]
    export = {
        "format": EXPORT_FORMAT,
        "snapshot": {**report["snapshot"], "signed_sha256": hashlib.sha256(signed_bytes(document)).hexdigest()},
        "scores_dated_on_or_before": report["scores_dated_on_or_before"],
        "capability": {
            "board": "overall",
            "interval_method": overall.get("interval_method"),
            "models": overall["models"],
            "unrated": sorted(m["model"] for m in document["models"] if not m["rated"]),
        },
        "safety_scores": report["safety_scores"],
        "milestones": report["milestones"],
        "correlations": report["correlations"],
        "public_key": document["public_key"],
    }
    export["signature"] = signing.sign_document(settings, export)
    return export


CSV_CAPABILITY = ("rating", "ci_low", "ci_high", "rank_ub", "tier", "battles", "provisional")


def export_csv(session: Session, settings: Settings, snapshot: Snapshot, *, threshold: float) -> tuple[bytes, dict]:
    """The same board as CSV, one row per model of the snapshot (capability numbers, each metric's value,
    each milestone's decision), with a detached Ed25519 signature of the bytes: (bytes, signature block)."""
    export = export_document(session, settings, snapshot, threshold=threshold)
    metrics = sorted({s["metric"] for s in export["safety_scores"]})
    values = {(s["model"], s["metric"]): s["value"] for s in export["safety_scores"]}
    decisions = {(m["name"], d["model"]): d["met"] for m in export["milestones"] for d in m["models"]}
    milestones = [m["name"] for m in export["milestones"]]
    document = published_document(snapshot)
    info = {m["model"]: m for m in document["models"]}
    rows = list(export["capability"]["models"]) + [{"model": name} for name in export["capability"]["unrated"]]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "snapshot",
            "snapshot_signed_sha256",
            "model",
            "organization",
            "lab",
            "status",
            "rated",
            *CSV_CAPABILITY,
            *(f"safety:{m}" for m in metrics),
            *(f"milestone:{n}" for n in milestones),
        ]
    )
    for row in rows:
        model = row["model"]
        known = info.get(model, {})
        writer.writerow(
            [
                export["snapshot"]["version"],
                export["snapshot"]["signed_sha256"],
                model,
                known.get("organization", ""),
                known.get("lab") or "",
                known.get("status", ""),
                _cell("rating" in row),
                *(_cell(row.get(f)) for f in CSV_CAPABILITY),
                *(_cell(values.get((model, m))) for m in metrics),
                *("met" if decisions.get((n, model)) else "not met" for n in milestones),
            ]
        )
    data = out.getvalue().encode("utf-8")
    return data, sign_bytes(settings, data)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def sign_bytes(settings: Settings, data: bytes) -> dict:
    """A detached Ed25519 signature of the bytes, with the arena's key (as arena.leaderboard.signing signs
    snapshots)."""
    key = signing.load_or_create_key(settings)
    raw = signing.public_key_raw(settings)
    return {"algorithm": SIGNATURE_ALGORITHM, "key_id": key_id(raw), "value": base64.b64encode(key.sign(data)).decode()}


def verify_bytes(data: bytes, signature: str, public_key_raw: bytes) -> bool:
    """Whether `signature` (base64) is the Ed25519 signature of `data` under the 32-byte public key."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key_raw).verify(base64.b64decode(signature, validate=True), data)
    except (InvalidSignature, ValueError):
        return False
    return True
