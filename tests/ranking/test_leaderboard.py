"""Tiers, the board serialisation and the snapshot document's canonical form and signature."""

import base64
import json
import math

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from scipy.stats import norm

from ranking import signature as snap
from ranking.data import encode_battles
from ranking.leaderboard import RankingOptions, board_dict, rank_battles, tiers
from ranking.snapshot import SNAPSHOT_FORMAT


def brute_force_tiers(ratings, samples, confidence):
    """Tiers by the definition, one comparison at a time: a model leads a new tier exactly when the current
    leader's replicate differences put the leader significantly ahead of it."""
    position = int((1 - confidence) / 2 * (len(samples) - 1))  # a whole number for the replicate counts used
    result, leader, tier = [], 0, 1
    for j in range(len(ratings)):
        if j and sorted(samples[:, leader] - samples[:, j])[position] > 0:
            leader, tier = j, tier + 1
        result.append(tier)
    return result


def test_tiers_follow_the_replicate_differences():
    rng = np.random.default_rng(0)
    truth = np.array([1200.0, 1195.0, 1120.0, 1118.0, 1000.0, 990.0, 700.0])
    # replicates 1001 so that the quantile falls on a replicate and numpy and the loop agree exactly
    samples = truth + rng.normal(0, 15, size=(1001, truth.size))
    low, high = np.quantile(samples, [0.025, 0.975], axis=0)
    got = tiers(truth, low, high, samples, confidence=0.95)
    assert got == brute_force_tiers(truth, samples, 0.95)
    assert got == [1, 1, 2, 2, 3, 3, 4]
    assert tiers(truth, low, high, samples, confidence=0.5)[-1] >= got[-1]  # a looser level never merges tiers


def test_tiers_keep_the_correlation_between_two_ratings():
    """Two ratings whose intervals overlap can still be told apart when their errors move together."""
    rng = np.random.default_rng(1)
    shared = rng.normal(0, 30, size=(2001, 1))
    samples = np.array([1010.0, 1000.0]) + shared + rng.normal(0, 1, size=(2001, 2))
    low, high = np.quantile(samples, [0.025, 0.975], axis=0)
    assert low[0] < high[1]  # the intervals overlap
    assert tiers([1010.0, 1000.0], low, high, samples) == [1, 2]
    assert tiers([1010.0, 1000.0], low, high, None) == [1, 1]  # the normal approximation assumes independence


def test_tiers_without_samples_use_the_normal_approximation():
    z, se = norm.ppf(0.975), 10.0
    ratings = np.array([1000.0, 1000.0 - se * math.sqrt(2) * z - 1e-6])  # just beyond the critical gap
    assert tiers(ratings, ratings - z * se, ratings + z * se) == [1, 2]
    ratings[1] += 1e-3  # just inside it
    assert tiers(ratings, ratings - z * se, ratings + z * se) == [1, 1]
    assert tiers([1000.0, 900.0], [950.0, -np.inf], [1050.0, 950.0]) == [1, 1]  # unbounded: cannot be told apart


def test_a_board_lists_tiers_and_serialises_for_json():
    rows = (
        [{"model_a": "strong", "model_b": "weak", "winner": "model_a"}] * 60
        + [{"model_a": "strong", "model_b": "middle", "winner": "model_a"}] * 30
        + [{"model_a": "middle", "model_b": "weak", "winner": "model_a"}] * 30
        + [{"model_a": "middle", "model_b": "strong", "winner": "model_a"}] * 10
        + [{"model_a": "weak", "model_b": "middle", "winner": "model_a"}] * 10
    )
    board = rank_battles(encode_battles(rows), RankingOptions(replicates=200, seed=3))
    data = board_dict(board)
    assert [row["model"] for row in data["models"]] == ["strong", "middle", "weak"]
    assert [row["tier"] for row in data["models"]] == [row.tier for row in board.models]
    assert data["models"][0]["tier"] == 1 and data["models"][-1]["tier"] >= 2
    json.dumps(data, allow_nan=False)


def _signed(document):
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    signed = dict(document)
    signed["signature"] = {
        "algorithm": "ed25519",
        "public_key": base64.b64encode(raw).decode(),
        "value": base64.b64encode(key.sign(snap.signed_bytes(document))).decode(),
    }
    return signed, raw


def test_the_canonical_form_survives_a_round_trip_through_json_text():
    document = {
        "format": SNAPSHOT_FORMAT,
        "b": [0.1 + 0.2, 1e-300, -0.0, 12345678901234567890],
        "a": {"é": "ü", "z": None},
    }
    signed, raw = _signed(document)
    again = json.loads(json.dumps(signed, indent=3))
    assert snap.signed_bytes(again) == snap.signed_bytes(document)
    assert snap.check_signature(again, raw).ok
    with pytest.raises(ValueError):
        snap.canonical_json({"x": float("nan")})


def test_signature_checks_name_what_failed():
    signed, raw = _signed({"format": SNAPSHOT_FORMAT, "version": 1})
    assert snap.check_signature(signed).ok and "not who signed it" in snap.check_signature(signed).message
    assert snap.check_signature(signed, raw).key_id == snap.key_id(raw)
    changed = {**signed, "version": 2}
    assert not snap.check_signature(changed, raw).ok
    other, other_raw = _signed({"format": SNAPSHOT_FORMAT, "version": 1})
    assert not snap.check_signature(signed, other_raw).ok
    assert not snap.check_signature({"version": 1}).ok
    pem = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert len(snap.load_public_key(pem)) == 32 and snap.load_public_key(base64.b64encode(raw)) == raw
    with pytest.raises(ValueError):
        snap.load_public_key("bm90IGEga2V5")
