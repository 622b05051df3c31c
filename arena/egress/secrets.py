"""Endpoint API keys encrypted at rest, with a key derived from the application's SECRET_KEY.

What this protects against: a copy of the database alone (a dump, a backup, a leaked replica, someone with
read access to the tables) does not reveal the keys the arena uses to call the labs' endpoints. The stored
value is AES-256-GCM ciphertext, authenticated, so a tampered value fails to decrypt instead of decrypting to
something else.

What it does not protect against: anyone who has the SECRET_KEY as well as the database (the running service
must be able to decrypt, so it holds both), or a compromised running service. Changing SECRET_KEY makes the
stored endpoint keys unreadable: they must then be entered again.

Format of a stored value: ``v1:`` followed by URL-safe base64 (no padding) of a 12-byte random nonce and the
GCM ciphertext with its 16-byte tag. The AES key is HKDF-SHA256(SECRET_KEY, info="arena endpoint keys v1"),
so this key is separate from any other use of SECRET_KEY (session cookies, address hashes).
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = "v1:"
_INFO = b"arena endpoint keys v1"
_NONCE_BYTES = 12


class SecretDecryptionError(ValueError):
    """A stored secret that cannot be decrypted: another SECRET_KEY, or a damaged value."""


def _aead(secret_key: str) -> AESGCM:
    if not secret_key:
        raise ValueError("SECRET_KEY is empty: endpoint keys cannot be encrypted without it")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret_key.encode())
    return AESGCM(key)


def encrypt_secret(secret_key: str, plaintext: str) -> str:
    """Encrypt `plaintext` (an endpoint's API key) for storage; a fresh random nonce each time."""
    nonce = os.urandom(_NONCE_BYTES)
    sealed = _aead(secret_key).encrypt(nonce, plaintext.encode(), None)
    return _VERSION + base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")


def decrypt_secret(secret_key: str, token: str) -> str:
    """The plaintext of a value made by `encrypt_secret` with the same SECRET_KEY.

    Raises SecretDecryptionError when the value was made with another SECRET_KEY or has been altered.
    """
    if not token.startswith(_VERSION):
        raise SecretDecryptionError("not an encrypted secret of a known version")
    body = token[len(_VERSION) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise SecretDecryptionError("the encrypted secret is damaged (not base64)") from None
    if len(raw) < _NONCE_BYTES + 16:
        raise SecretDecryptionError("the encrypted secret is damaged (too short)")
    try:
        plain = _aead(secret_key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], None)
    except InvalidTag:
        raise SecretDecryptionError(
            "the encrypted secret cannot be decrypted: it was made with another SECRET_KEY or altered"
        ) from None
    return plain.decode()
