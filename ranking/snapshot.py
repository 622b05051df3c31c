"""Published snapshots, checked by anyone: their canonical form, their Ed25519 signature, and their numbers.

A snapshot is a JSON document that the arena signs; its battle file is published beside it. Checking one needs
no trust in the arena: the signature shows who published the document (against the arena's public key, which
the checker fetches on their own), the SHA-256 shows that the battle file is the one the document names, and
re-running the ranking on the file with the document's options must give back every published number.

The signed bytes are the document without its "signature" member, written canonically: keys sorted, no
whitespace, UTF-8, no NaN or infinity (JSON has none; an unbounded interval end is null). Python's float repr
round-trips exactly, so parsing a snapshot and writing it canonically again gives the signed bytes back.
"""
from __future__ import annotations

import base64
import hashlib
import json
import math
import warnings
from typing import NamedTuple

from ranking import bradley_terry as bt
from ranking.data import Battles
from ranking.leaderboard import RankingOptions, board_dict, rank_battles

SNAPSHOT_FORMAT = "arena-snapshot/1"
SIGNATURE_ALGORITHM = "ed25519"
# The numbers compared between a published board and its recomputation, per model.
COMPARED_FIELDS = ("rating", "ci_low", "ci_high", "rank_ub", "tier", "battles", "wins", "losses", "ties")


def canonical_json(document: dict) -> bytes:
    """The bytes that are signed and hashed: sorted keys, no whitespace, UTF-8; NaN and infinity refused."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def signed_bytes(document: dict) -> bytes:
    """The canonical bytes of a snapshot document without its "signature" member."""
    return canonical_json({k: v for k, v in document.items() if k != "signature"})


def key_id(public_key_raw: bytes) -> str:
    """A short name for a public key: the first 16 hex digits of the SHA-256 of its 32 raw bytes."""
    return hashlib.sha256(public_key_raw).hexdigest()[:16]


def load_public_key(text: str | bytes) -> bytes:
    """The 32 raw bytes of an Ed25519 public key given as PEM (SubjectPublicKeyInfo) or base64 of the raw key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = text.encode() if isinstance(text, str) else text
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as error:
            raise ValueError(f"not a PEM public key: {error}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("the PEM key is not an Ed25519 public key")
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except ValueError:
        raise ValueError("a public key must be PEM or the base64 of the 32-byte Ed25519 key") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key has 32 bytes, this one {len(raw)}")
    return raw


class SignatureCheck(NamedTuple):
    ok: bool
    key_id: str | None
    message: str


def check_signature(document: dict, public_key_raw: bytes | None = None) -> SignatureCheck:
    """Whether the document's signature is valid, against `public_key_raw` or else the key it carries.

    A document checked only against the key it carries proves that it is intact, not who signed it; the
    message says so, and the caller should ask for the arena's published key.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    signature = document.get("signature")
    if not isinstance(signature, dict) or not isinstance(signature.get("value"), str):
        return SignatureCheck(False, None, "the snapshot carries no signature")
    if signature.get("algorithm") != SIGNATURE_ALGORITHM:
        return SignatureCheck(False, None, f"unknown signature algorithm {signature.get('algorithm')!r}")
    embedded = signature.get("public_key")
    raw = public_key_raw
    if raw is None:
        try:
            raw = base64.b64decode(str(embedded), validate=True)
        except ValueError:
            return SignatureCheck(False, None, "the public key the snapshot carries is not base64")
    try:
        value = base64.b64decode(signature["value"], validate=True)
        Ed25519PublicKey.from_public_bytes(raw).verify(value, signed_bytes(document))
    except (InvalidSignature, ValueError):
        which = "the given public key" if public_key_raw is not None else "the key the snapshot carries"
        return SignatureCheck(False, key_id(raw), f"the signature does not match the document under {which} "
                                                  "(the document was changed, or another key signed it)")
    if public_key_raw is None:
        return SignatureCheck(True, key_id(raw), "valid under the key the snapshot carries (this proves the "
                                                  "document intact, not who signed it: pass --public-key with "
                                                  "the arena's published key)")
    if embedded is not None and embedded != base64.b64encode(raw).decode():
        return SignatureCheck(False, key_id(raw), "valid under the given key, but the snapshot names another key")
    return SignatureCheck(True, key_id(raw), "valid under the given public key")


class BoardCheck(NamedTuple):
    board: str  # "overall", "style" or "category:<name>"
    models: int
    exact: bool
    problems: list[str]  # empty when every published number was reproduced


def board_specs(document: dict) -> list[tuple[str, dict]]:
    """(name, published board) for every board of a snapshot document, overall first."""
    boards = document.get("boards") or {}
    specs = [("overall", boards["overall"])] if boards.get("overall") else []
    if boards.get("style"):
        specs.append(("style", boards["style"]))
    for name, board in sorted((boards.get("categories") or {}).items()):
        specs.append((f"category:{name}", board))
    return specs


def options_of(board: dict) -> RankingOptions:
    """The RankingOptions a published board names (unknown option names are refused, not ignored)."""
    options = dict(board.get("options") or {})
    unknown = sorted(set(options) - set(RankingOptions._fields))
    if unknown:
        raise ValueError(f"the snapshot names ranking options this code does not know: {', '.join(unknown)}")
    return RankingOptions(**options)


def recompute_board(battles: Battles, published: dict, name: str) -> BoardCheck:
    """Rank the battles with the board's own options and compare every published number with the result."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bt.RankingWarning)
        ours = board_dict(rank_battles(battles, options_of(published)))
    problems = []
    if ours["battles_used"] != published.get("battles_used"):
        problems.append(f"{published.get('battles_used')} battles published as used, {ours['battles_used']} "
                        "selected from the file")
    mine = {row["model"]: row for row in ours["models"]}
    theirs = {row["model"]: row for row in published.get("models", [])}
    for model in sorted(set(theirs) - set(mine)):
        problems.append(f"{model}: published, but has no battle in the file")
    for model in sorted(set(mine) - set(theirs)):
        problems.append(f"{model}: in the file, but not published")
    for model in sorted(set(mine) & set(theirs)):
        for field in COMPARED_FIELDS:
            published_value, value = theirs[model].get(field), mine[model][field]
            if not _same(published_value, value):
                problems.append(f"{model}: {field} published {published_value}, recomputed {value}")
    return BoardCheck(name, len(theirs), not problems, problems)


def _same(published, value) -> bool:
    if published is None or value is None:
        return published is None and value is None
    if isinstance(value, float) or isinstance(published, float):
        return float(published) == float(value) or (math.isnan(float(published)) and math.isnan(float(value)))
    return published == value
