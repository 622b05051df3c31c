"""Signed documents of the arena (snapshots, board exports): their canonical form and Ed25519 signatures.

No JAX here: checking or serving a signed document must stay cheap (a web worker imports this).

The signed bytes are the document without its "signature" member, written canonically: keys sorted, no
whitespace, UTF-8, no NaN or infinity (JSON has none; an unbounded interval end is null). Python's float repr
round-trips exactly, so parsing a document and writing it canonically again gives the signed bytes back.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import NamedTuple

SIGNATURE_ALGORITHM = "ed25519"


def canonical_json(document: dict) -> bytes:
    """The bytes that are signed and hashed: sorted keys, no whitespace, UTF-8; NaN and infinity refused."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def signed_bytes(document: dict) -> bytes:
    """The canonical bytes of a signed document without its "signature" member."""
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
        return SignatureCheck(
            False,
            key_id(raw),
            f"the signature does not match the document under {which} "
            "(the document was changed, or another key signed it)",
        )
    if public_key_raw is None:
        return SignatureCheck(
            True,
            key_id(raw),
            "valid under the key the snapshot carries (this proves the "
            "document intact, not who signed it: pass --public-key with "
            "the arena's published key)",
        )
    if embedded is not None and embedded != base64.b64encode(raw).decode():
        return SignatureCheck(False, key_id(raw), "valid under the given key, but the snapshot names another key")
    return SignatureCheck(True, key_id(raw), "valid under the given public key")
