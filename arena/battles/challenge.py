"""The vote's proof of work: a self-hosted challenge that makes every vote cost its sender some computing.

Each battle comes with a challenge `{"algorithm": "sha256", "salt": ..., "difficulty": bits}`; the vote must carry
a `proof` such that SHA-256(salt + ":" + proof) begins with `difficulty` zero bits. The browser finds one while the
answers stream (static/js/challenge.js), so a person never waits for it; a script voting in bulk pays for every
vote. No third-party service is involved, so an arena without Internet access keeps it.

The salt is stateless: an HMAC of the battle id under a key derived from SECRET_KEY, so nothing is stored, every
worker and host (sharing the secret key) checks it alike, and a proof is good for its own battle only. A battle
takes one vote, so a proof cannot be replayed. Proof of work is a speed bump, not a wall: at the default 16 bits a
native SHA-256 loop solves one in a few milliseconds. The rate limits (arena.ratelimit) and the snapshot's
exclusion rules do the rest; the challenge keeps naive bulk voting expensive and is free for a person.

Difficulty is read when the vote is checked: raising ARENA_VOTE_CHALLENGE_BITS refuses proofs solved at the old
difficulty for battles created before the change (their voters start a new battle).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from itertools import count

from arena.errors import Refused
from arena.settings import Settings

ALGORITHM = "sha256"
MAX_BITS = 32  # beyond this a phone would search for minutes
MAX_PROOF_CHARS = 64


@functools.lru_cache(maxsize=4)
def _salt_key(secret_key: str) -> bytes:
    return hashlib.sha256(b"arena-vote-challenge:" + secret_key.encode()).digest()


def salt(secret_key: str, battle_id: str) -> str:
    """The battle's salt: 128 bits of HMAC-SHA256(battle id), in hex."""
    return hmac.new(_salt_key(secret_key), battle_id.encode(), hashlib.sha256).hexdigest()[:32]


def check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 0 <= bits <= MAX_BITS:
        raise ValueError(f"ARENA_VOTE_CHALLENGE_BITS must be a whole number from 0 to {MAX_BITS}, not {bits!r}")
    return bits


def issue(settings: Settings, battle_id: str) -> dict | None:
    """The challenge to send with a battle, or None when the challenge is off."""
    if not settings.vote_challenge:
        return None
    return {
        "algorithm": ALGORITHM,
        "salt": salt(settings.secret_key, battle_id),
        "difficulty": settings.vote_challenge_bits,
    }


def solves(salt_hex: str, proof: str, difficulty: int) -> bool:
    digest = hashlib.sha256(f"{salt_hex}:{proof}".encode("utf-8")).digest()
    return int.from_bytes(digest, "big") >> (256 - difficulty) == 0 if difficulty else True


def check(settings: Settings, battle_id: str, proof) -> None:
    """Raise 403 challenge_failed unless `proof` solves the battle's challenge (nothing to check when off)."""
    if not settings.vote_challenge:
        return
    if not isinstance(proof, str) or not proof:
        raise Refused(
            "challenge_failed", 'This vote needs "proof": the answer to the battle\'s challenge (see "challenge").'
        )
    if len(proof) > MAX_PROOF_CHARS or not solves(
        salt(settings.secret_key, battle_id), proof, settings.vote_challenge_bits
    ):
        raise Refused("challenge_failed", "The proof does not solve this battle's challenge.")


def solve(challenge: dict) -> str:
    """A proof for `challenge`, found like the browser finds it (tests and the benchmark's client use this)."""
    salt_hex, difficulty = challenge["salt"], challenge["difficulty"]
    prefix = hashlib.sha256(f"{salt_hex}:".encode("utf-8"))
    shift = 256 - difficulty
    for nonce in count():
        digest = prefix.copy()
        digest.update(str(nonce).encode())
        if not difficulty or int.from_bytes(digest.digest(), "big") >> shift == 0:
            return str(nonce)
    raise AssertionError("unreachable")
