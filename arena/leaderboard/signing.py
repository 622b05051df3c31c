"""The arena's Ed25519 signing key: created on first use, kept in the instance folder, public half published.

Anyone checks a snapshot with `python -m ranking verify` against the public key served at
/api/v1/leaderboard/public-key (and printed by `arena snapshot key`). The private key never leaves the
instance folder (mode 0600); `ARENA_SIGNING_KEY_FILE` puts it elsewhere, for example on a volume that
several hosts share, since every host must sign with the same key.
"""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from arena.settings import Settings
from ranking.signature import SIGNATURE_ALGORITHM, key_id, signed_bytes


def key_path(settings: Settings) -> Path:
    return Path(settings.signing_key_file or Path(settings.instance_path) / "snapshot_signing_key.pem")


def load_or_create_key(settings: Settings) -> Ed25519PrivateKey:
    """The arena's private key; the first caller creates it. Creation is atomic (written to a temporary file,
    then hard-linked into place, which fails if another worker got there first), so every worker of every
    process ends up with the same key."""
    path = key_path(settings)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".signing-key-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
            try:
                os.link(temporary, path)
            except FileExistsError:
                pass  # another worker created it first: use theirs
        finally:
            os.unlink(temporary)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return key


def public_key_raw(settings: Settings) -> bytes:
    return (
        load_or_create_key(settings)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


def public_key_pem(settings: Settings) -> str:
    return (
        load_or_create_key(settings)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def sign_document(settings: Settings, document: dict) -> dict:
    """The signature block for a document (which must not carry one yet): algorithm, key, key id, value."""
    key = load_or_create_key(settings)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {
        "algorithm": SIGNATURE_ALGORITHM,
        "public_key": base64.b64encode(raw).decode(),
        "key_id": key_id(raw),
        "value": base64.b64encode(key.sign(signed_bytes(document))).decode(),
    }
