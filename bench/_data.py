"""Synthetic battle logs for bench/ranking.py, the scipy reference fit, and the Elo-scale conversions.

Everything here is numpy/scipy only, so that the parent process of the benchmark stays light (it never imports
JAX, pandas or a peer library) and so that every peer's child process can use it, whatever its environment.

The battles: m models with natural-log strengths theta ~ N(0, 1), n battles between uniformly random ordered
pairs of distinct models, outcomes drawn from Davidson's tie model (Davidson 1970)

    P(a wins) = e^{d/2} / D,  P(b wins) = e^{-d/2} / D,  P(tie) = nu / D,  D = e^{d/2} + e^{-d/2} + nu,

with d = theta_a - theta_b and nu = TIE_NU, which gives about 15% ties; a fifth of the ties are "tie
(bothbad)". The battles are seeded, written once per size to bench/results/data/ as FastChat-style JSON Lines
(for the end-to-end measurement) and as an .npz of the encoded arrays (so that the other measurements start
from arrays without re-parsing the file).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"  # git-ignored

# Outcome codes, as in ranking.data (repeated here so that peers' environments need not import `ranking`).
A_WINS, B_WINS, TIE, TIE_BOTHBAD = 0, 1, 2, 3
OUTCOME_LABELS = ("model_a", "model_b", "tie", "tie (bothbad)")

# Elo scale of the whole benchmark: rating = CENTRE + SCALE / ln(BASE) * (theta - mean theta).
SCALE, BASE, CENTRE = 400.0, 10.0, 1000.0
ELO_PER_NAT = SCALE / np.log(BASE)  # 173.7 Elo points per nat of strength

TIE_NU = 0.45  # Davidson tie strength of the generator: ~15% ties at theta sd 1
BOTHBAD_SHARE = 0.2
GENERATOR_VERSION = 1  # bump when the generator changes, so cached files are rebuilt


class Size(NamedTuple):
    models: int
    battles: int

    @property
    def label(self) -> str:
        return f"{self.models} x {_short(self.battles)}"

    @property
    def key(self) -> str:
        return f"{self.models}x{self.battles}"


def _short(n: int) -> str:
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


def parse_size(text: str) -> Size:
    """'200x1M' -> Size(200, 1_000_000); accepts k/M suffixes and plain integers."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*", text)
    if not match:
        raise ValueError(f"cannot read size {text!r}: expected MODELSxBATTLES such as 200x1M or 50x100k")
    models = int(match.group(1))
    factor = {"": 1, "k": 1_000, "m": 1_000_000}[match.group(3).lower()]
    battles = int(round(float(match.group(2)) * factor))
    if models < 2 or battles < 1:
        raise ValueError(f"size {text!r}: need at least 2 models and 1 battle")
    return Size(models, battles)


def model_names(m: int) -> list[str]:
    width = max(4, len(str(m - 1)))
    return [f"model-{i:0{width}d}" for i in range(m)]


def generate(size: Size, seed: int):
    """(model_a int32, model_b int32, outcome int8, theta float64) of a seeded synthetic log."""
    m, n = size
    rng = np.random.default_rng([seed, m, n])
    theta = rng.normal(0.0, 1.0, m)
    model_a = rng.integers(0, m, n)
    model_b = (model_a + rng.integers(1, m, n)) % m  # uniform over the other m - 1 models
    d = theta[model_a] - theta[model_b]
    e_a, e_b = np.exp(d / 2), np.exp(-d / 2)
    norm = e_a + e_b + TIE_NU
    u = rng.random(n) * norm
    outcome = np.where(u < e_a, A_WINS, np.where(u < e_a + TIE_NU, TIE, B_WINS)).astype(np.int8)
    bothbad = (outcome == TIE) & (rng.random(n) < BOTHBAD_SHARE)
    outcome[bothbad] = TIE_BOTHBAD
    return model_a.astype(np.int32), model_b.astype(np.int32), outcome, theta


class Dataset(NamedTuple):
    jsonl: Path  # FastChat-style battle file
    arrays: Path  # .npz: model_a, model_b, outcome, theta, names
    reference: Path  # .npz written by the scipy reference measurement


def dataset_paths(size: Size, seed: int, root: Path = RESULTS_DIR / "data") -> Dataset:
    folder = root / f"v{GENERATOR_VERSION}-{size.key}-seed{seed}"
    return Dataset(folder / "battles.jsonl", folder / "arrays.npz", folder / "reference.npz")


def ensure_dataset(size: Size, seed: int, root: Path = RESULTS_DIR / "data", log=print) -> Dataset:
    """Generate the size's battles once (cached); returns the paths."""
    paths = dataset_paths(size, seed, root)
    if paths.jsonl.exists() and paths.arrays.exists():
        return paths
    paths.jsonl.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model_a, model_b, outcome, theta = generate(size, seed)
    names = model_names(size.models)
    write_jsonl(paths.jsonl, model_a, model_b, outcome, names)
    tmp = paths.arrays.with_suffix(".tmp.npz")
    np.savez(tmp, model_a=model_a, model_b=model_b, outcome=outcome, theta=theta, names=np.array(names))
    os.replace(tmp, paths.arrays)
    log(
        f"  generated {size.label} battles ({paths.jsonl.stat().st_size / 2**20:.0f} MiB JSON Lines, "
        f"{np.isin(outcome, (TIE, TIE_BOTHBAD)).mean():.1%} ties) in {time.perf_counter() - start:.1f} s"
    )
    return paths


def write_jsonl(path: Path, model_a, model_b, outcome, names, chunk: int = 200_000) -> None:
    """FastChat's battle fields (model_a, model_b, winner, tstamp, anony), one JSON object a line."""
    quoted = [f'"{name}"' for name in names]
    winners = [f'"{label}"' for label in OUTCOME_LABELS]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        for start in range(0, len(model_a), chunk):
            stop = min(start + chunk, len(model_a))
            a = model_a[start:stop].tolist()
            b = model_b[start:stop].tolist()
            o = outcome[start:stop].tolist()
            out.write(
                "".join(
                    f'{{"model_a":{quoted[i]},"model_b":{quoted[j]},"winner":{winners[k]},'
                    f'"tstamp":{1.7e9 + start + r:.1f},"anony":true}}\n'
                    for r, (i, j, k) in enumerate(zip(a, b, o))
                )
            )
    os.replace(tmp, path)


def load_arrays(path: Path):
    with np.load(path) as data:
        return (data["model_a"], data["model_b"], data["outcome"], data["theta"], tuple(str(s) for s in data["names"]))


# ----------------------------------------------------------------------------------------------- ratings


def to_elo(theta) -> np.ndarray:
    """Natural-log strengths -> Elo scale with mean CENTRE (the benchmark's common scale and centring)."""
    theta = np.asarray(theta, np.float64)
    return CENTRE + ELO_PER_NAT * (theta - theta.mean(axis=-1, keepdims=True))


def recentre(ratings) -> np.ndarray:
    """Elo-scale ratings with another centring (anchor, offset) -> mean CENTRE."""
    ratings = np.asarray(ratings, np.float64)
    return ratings - ratings.mean(axis=-1, keepdims=True) + CENTRE


def max_abs_diff(ratings, reference) -> float:
    """Largest |difference| in Elo points after both are centred on mean CENTRE."""
    return float(np.max(np.abs(recentre(ratings) - recentre(reference))))


def half_win_matrix(model_a, model_b, outcome, m: int) -> np.ndarray:
    """W[i, j] = wins of i over j + half their ties (both tie kinds), by bincount: independent of `ranking`."""
    a = model_a.astype(np.int64)
    b = model_b.astype(np.int64)
    tied = (outcome == TIE) | (outcome == TIE_BOTHBAD)
    w = np.bincount(a * m + b, weights=(outcome == A_WINS) + 0.5 * tied, minlength=m * m) + np.bincount(
        b * m + a, weights=(outcome == B_WINS) + 0.5 * tied, minlength=m * m
    )
    return w.reshape(m, m)


def reference_fit(wins: np.ndarray):
    """Plain Bradley-Terry MLE with half-win ties, by scipy's L-BFGS-B on the pair count matrix.

    Minimises the mean negative log-likelihood f(theta) = -(1/N) sum_ij W_ij log sigmoid(theta_i - theta_j)
    with its analytic gradient g_i = -(1/N) sum_j (W_ij - N_ij sigmoid(theta_i - theta_j)), N = W + W^T,
    to gtol 1e-12. The likelihood is flat along theta + c; L-BFGS-B's iterates stay on the starting
    hyperplane (the gradient sums to zero), and we centre afterwards anyway.
    Returns (theta centred (m,), info dict with iterations, the final gradient's max |g| and the size of one
    Newton step from the solution in Elo points: an estimate of the reference's own error).
    """
    from scipy.optimize import minimize
    from scipy.special import expit, log_expit

    m = wins.shape[0]
    games = wins + wins.T
    total = games.sum() / 2

    def objective(theta):
        d = theta[:, None] - theta[None, :]
        value = -np.sum(wins * log_expit(d)) / total
        grad = -(wins.sum(axis=1) - np.sum(games * expit(d), axis=1)) / total
        return value, grad

    result = minimize(
        objective,
        np.zeros(m),
        jac=True,
        method="L-BFGS-B",
        options={"gtol": 1e-12, "ftol": 0.0, "maxiter": 20_000, "maxcor": 30},
    )
    theta = result.x - result.x.mean()
    # One Newton step (pseudo-inverse: the Hessian is singular along the all-ones direction) estimates how far
    # the solution is from the exact optimum.
    p = expit(theta[:, None] - theta[None, :])
    h = games * p * (1 - p)
    hessian = np.diag(h.sum(axis=1)) - h
    _, grad = objective(theta)
    step = np.linalg.lstsq(hessian / total, -grad, rcond=None)[0]
    info = {
        "iterations": int(result.nit),
        "grad_max": float(np.max(np.abs(grad))),
        "newton_step_elo": float(ELO_PER_NAT * np.max(np.abs(step - step.mean()))),
        "message": str(result.message),
    }
    return theta, info
