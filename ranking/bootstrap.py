"""Uncertainty of Bradley-Terry ratings: bootstrap and sandwich intervals, and FastChat's rank upper bound.

The bootstrap resamples battles. Because the fit depends on the battles only through the counts of each
(pair, outcome) cell, resampling battles with replacement is the same, in distribution, as a multinomial draw
of the cell counts. We use the Poisson bootstrap: every cell count is redrawn independently as
Poisson(observed count). It is the standard large-sample approximation of the multinomial (the two differ only
in that the Poisson total is itself random, with relative spread 1/sqrt(n)), and it lets every cell be drawn
independently and in bulk; tests check that its intervals agree with a brute-force row bootstrap within
Monte-Carlo error.

Speed: drawing the counts is the bottleneck (numpy's Poisson costs ~60 ns a draw here, JAX's several times
more), so draws are made by exact inversion of the Poisson CDF with a guide table (see PoissonSampler), in
numpy, on a worker thread that prepares the next batch while JAX refits the current one. Each replicate is
refitted by a chord Newton iteration that reuses the Cholesky factor of the full-data Hessian (a replicate is a
small perturbation of the data, so this converges linearly and fast), vmapped over a batch; the rare replicate
that does not converge that way is refitted with the full damped Newton solver. Memory is bounded by the
batch: O(batch × pairs), never O(battles).

Determinism: replicate r draws from its own generator, SFC64(SeedSequence(seed, spawn_key=(r,))), so the
same seed gives the same samples bit for bit, whatever the batch size or thread timing.
"""
from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import norm, poisson

from ranking import bradley_terry as bt
from ranking.stats import PairCounts

DEFAULT_REPLICATES = 1000
CHORD_MAX_ITER = 60
NEWTON_MAX_ITER = 20
# Up to this many models a replicate is refitted by full Newton steps (a batched m³ Cholesky each, cheap
# here, 3-4 steps from the warm start); above it by chord steps that reuse one factorization, which need more
# steps when models have few battles but cost only O(m²) each.
NEWTON_MAX_MODELS = 128


class BootstrapResult(NamedTuple):
    """Percentile bootstrap intervals of Elo-scale ratings.

    low/high: (m,) interval ends (±inf on a side the data leave unbounded, see BTFit); samples: (R, m) ratings
    of every replicate, centred like the fit; fit: the full-data fit the replicates started from;
    refits: replicates that needed the full Newton solver.
    """

    low: np.ndarray
    high: np.ndarray
    samples: np.ndarray
    fit: bt.BTFit
    confidence: float
    seed: int
    refits: int


class Intervals(NamedTuple):
    """Normal-approximation intervals of Elo-scale ratings: rating ± z·stderr."""

    low: np.ndarray
    high: np.ndarray
    stderr: np.ndarray  # Elo points


# ------------------------------------------------------------------------------------------------ sampling

class PoissonSampler:
    """Exact Poisson(lam_k) draws for a fixed vector of means, by inversion of the CDF with a guide table.

    For each distinct mean we tabulate the CDF F over a window that holds all but ~1e-20 of the mass, and a
    guide table Q[r] = min{x : F(x) >= r/R}. A uniform u in [r/R, (r+1)/R) has its inverse F^-1(u) between
    Q[r] and Q[r+1]; these are equal for most u, so a draw costs one uniform and one table read, and the few
    remaining draws finish with a short search of the CDF. This is inversion sampling, exact up to the
    resolution of double-precision uniforms, about 8x faster than numpy's Poisson here.
    """

    RESOLUTION = 2048

    def __init__(self, means: np.ndarray):
        means = np.asarray(means, np.float64)
        if np.any(~np.isfinite(means)) or np.any(means < 0):
            raise ValueError("Poisson means must be finite and non-negative")
        values, self.group = np.unique(means, return_inverse=True)
        spread = 10 * np.sqrt(values) + 12
        self.window_low = np.maximum(0, np.floor(values - spread)).astype(np.int64)
        window_high = np.ceil(values + spread + 12).astype(np.int64)
        sizes = window_high - self.window_low + 1
        self.cdf_offset = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        support = np.concatenate([np.arange(lo, hi + 1) for lo, hi in zip(self.window_low, window_high)])
        group_of_entry = np.repeat(np.arange(values.size), sizes)
        self.cdf = poisson.cdf(support, values[group_of_entry])
        self.cdf[np.concatenate([self.cdf_offset[1:] - 1, [self.cdf.size - 1]])] = 1.0  # close each window
        levels = np.arange(self.RESOLUTION + 1) / self.RESOLUTION
        self.guide = np.empty((values.size, self.RESOLUTION + 1), np.int64)
        for g in range(values.size):
            window = self.cdf[self.cdf_offset[g]:self.cdf_offset[g] + sizes[g]]
            self.guide[g] = np.minimum(np.searchsorted(window, levels, side="left"), sizes[g] - 1)
        self.guide_flat = self.guide.ravel()
        self.guide_row = self.group * (self.RESOLUTION + 1)

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """One vector of draws, int64, in the order of the means given to the constructor."""
        u = rng.random(self.group.size)
        row = self.guide_row + (u * self.RESOLUTION).astype(np.int64)
        index = self.guide_flat[row]  # position of the draw inside its group's window
        unsettled = np.flatnonzero(self.guide_flat[row + 1] != index)
        if unsettled.size:
            base = self.cdf_offset[self.group[unsettled]]
            pos = index[unsettled]
            target = u[unsettled]
            while True:
                below = self.cdf[base + pos] < target
                if not below.any():
                    break
                pos = pos + below
            index[unsettled] = pos
        return index + self.window_low[self.group]


def replicate_generator(seed: int, replicate: int) -> np.random.Generator:
    """The generator of one bootstrap replicate: independent of batch size and thread timing."""
    return np.random.Generator(np.random.SFC64(np.random.SeedSequence(seed, spawn_key=(replicate,))))


class _BatchDrawer:
    """Resampled counts of a batch of replicates as the dense (batch, m, m) pair that _dense_gradient takes.

    The buffers are allocated once: only the compared pairs' entries change between replicates, the rest
    stays zero (fresh zeroed buffers per batch cost more in page faults than the draws themselves). Rows past
    the batch's replicates stay zero, so every batch has one shape and reuses one compiled refit.
    """

    def __init__(self, counts: PairCounts, seed: int, batch: int, davidson: bool):
        m = counts.n_models
        self.k, self.seed, self.davidson = counts.first.shape[0], seed, davidson
        self.sampler = PoissonSampler(np.concatenate([counts.first_wins, counts.second_wins, counts.ties]))
        self.forward = counts.first.astype(np.int64) * m + counts.second
        self.backward = counts.second.astype(np.int64) * m + counts.first
        self.first = np.zeros((batch, m * m))
        self.second = np.zeros((batch, m * m))
        self.shape = (batch, m, m)

    def draw(self, replicates: range):
        k = self.k
        self.first[len(replicates):] = 0
        self.second[len(replicates):] = 0
        for row, r in enumerate(replicates):
            drawn = self.sampler.draw(replicate_generator(self.seed, r))
            first_wins, second_wins, ties = drawn[:k], drawn[k:2 * k], drawn[2 * k:]
            first, second = self.first[row], self.second[row]
            if self.davidson:  # wins and ties
                first[self.forward], first[self.backward] = first_wins, second_wins
                second[self.forward] = second[self.backward] = ties
            else:  # S = wins + half the ties, N = battles
                first[self.forward], first[self.backward] = first_wins + ties / 2, second_wins + ties / 2
                second[self.forward] = second[self.backward] = first_wins + second_wins + ties
        return self.first.reshape(self.shape).copy(), self.second.reshape(self.shape).copy()


# ------------------------------------------------------------------------------------------------ refitting

def _dense_gradient(x, first, second, component, prior, davidson: bool):
    """Gradient of the penalised log-likelihood from dense (m, m) statistics of one replicate.

    Half-win ties: first = S (S[i, j] = wins of i over j + half their ties), second = N (battles of i and j);
    the gradient of theta_i is sum_j S_ij - N_ij sigmoid(theta_i - theta_j), written out because it is the
    bootstrap's inner loop. Davidson: first = wins, second = ties, and autodiff of the pair term, whose
    gradient of theta_i is the row sum of the per-entry derivatives (each unordered pair appears as (i, j)
    and (j, i), and the term is symmetric under swapping sides, so phi's derivative counts each pair twice).
    Dense arrays cost O(m²) like the pair list but need no gather or scatter.
    """
    theta, phi = x[:-1], x[-1]
    m = theta.shape[0]
    d = theta[:, None] - theta[None, :]
    if davidson:
        g_d, g_phi = jax.grad(lambda d, phi: jnp.sum(bt._pair_loglik(d, phi, first, first.T, second, True)),
                              argnums=(0, 1))(d, phi)
        g_last = g_phi / 2 - prior * phi
    else:
        g_d = first - second * jax.nn.sigmoid(d)
        g_last = jnp.zeros(())
    component_sums = jax.ops.segment_sum(theta, component, num_segments=m)
    g_theta = g_d.sum(axis=1) - prior * theta - bt._gauge_weight(prior) * component_sums[component]
    return jnp.concatenate([g_theta, g_last[None]])


@partial(jax.jit, static_argnames=("davidson", "max_iter"))
def _chord_refit(x0, cholesky_lower, component, first, second, prior, tol, *, davidson: bool, max_iter: int):
    """Refit a batch of replicates by x <- x + H0^-1 g_b(x), H0 the full-data Hessian (its Cholesky factor).

    first, second: (batch, m, m) replicate statistics as _dense_gradient takes them. Returns
    (x (batch, m+1), converged (batch,)).
    """
    gradients = jax.vmap(lambda x, a, b: _dense_gradient(x, a, b, component, prior, davidson))

    def step(state):
        x, _, it = state
        g = gradients(x, first, second)
        delta = jax.scipy.linalg.cho_solve((cholesky_lower, True), g.T).T
        return x + delta, jnp.max(jnp.abs(delta), axis=1), it + 1

    def keep_going(state):
        _, size, it = state
        return (it < max_iter) & jnp.any(size >= tol)

    batch = first.shape[0]
    x, size, _ = jax.lax.while_loop(keep_going, step,
                                    (jnp.broadcast_to(x0, (batch, x0.shape[0])), jnp.full(batch, jnp.inf), 0))
    return x, size < tol


@partial(jax.jit, static_argnames=("max_iter",))
def _newton_refit_batch(x0, component, scores, battles, prior, tol, *, max_iter: int):
    """Refit a batch of half-win replicates by undamped Newton steps from the full-data fit.

    scores, battles: (batch, m, m) S and N as _dense_gradient takes them. The warm start sits well inside
    the region where Newton converges quadratically; a replicate that does not converge is reported and
    refitted with the damped solver. Returns (x (batch, m+1), converged (batch,)).
    """
    m = x0.shape[0] - 1
    same_component = (component[:, None] == component[None, :]).astype(jnp.float64)
    regulariser = prior * jnp.eye(m) + bt._gauge_weight(prior) * same_component

    def solve_one(x, s, n):
        g = _dense_gradient(x, s, n, component, prior, False)
        p = jax.nn.sigmoid(x[:-1, None] - x[None, :-1])
        w = n * p * (1 - p)
        h = jnp.diag(w.sum(axis=1)) - w + regulariser
        delta = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(h), g[:-1])
        return x.at[:-1].add(delta), jnp.max(jnp.abs(delta))

    step_all = jax.vmap(solve_one)

    def step(state):
        x, _, it = state
        x, size = step_all(x, scores, battles)
        return x, size, it + 1

    def keep_going(state):
        _, size, it = state
        return (it < max_iter) & jnp.any(~(size < tol))

    batch = scores.shape[0]
    x, size, _ = jax.lax.while_loop(keep_going, step,
                                    (jnp.broadcast_to(x0, (batch, x0.shape[0])), jnp.full(batch, jnp.inf), 0))
    return x, size < tol


def _default_batch_size(m: int) -> int:
    # Each of a batch's dense batch × m × m float64 arrays stays near 4 MiB, so the handful that one
    # iteration touches fits the last-level cache (measured: larger batches were slower at 200 models); at
    # least 2 replicates, so the triangular solves run as matrix products.
    return int(np.clip((1 << 19) // (m * m), 2, 64))


def bootstrap_ratings(counts: PairCounts, *, replicates: int = DEFAULT_REPLICATES, seed: int = 0,
                      ties: str = "half", prior: float = bt.DEFAULT_PRIOR, confidence: float = 0.95,
                      anchor: int | None = None, anchor_rating: float = 1000.0, scale: float = 400.0,
                      base: float = 10.0, batch_size: int | None = None, fit: bt.BTFit | None = None,
                      tol: float = 1e-9, names=None, progress: bool = False) -> BootstrapResult:
    """Percentile bootstrap intervals for Bradley-Terry ratings (Poisson bootstrap over the cells).

    `confidence` is the two-sided level: the interval runs between the (1-c)/2 and (1+c)/2 quantiles of the
    replicate ratings. `fit` may pass an existing full-data fit with the same options. `progress` shows a
    progress bar on stderr. The interval of a model the data leave unbounded (see BTFit) is infinite on that
    side: its replicates only echo the prior.
    """
    if replicates < 2:
        raise ValueError("a bootstrap needs at least 2 replicates")
    if not 0 < confidence < 1:
        raise ValueError("confidence must lie strictly between 0 and 1")
    if not float(seed).is_integer() or seed < 0:
        raise ValueError("seed must be a non-negative integer")
    cell_counts = np.concatenate([counts.first_wins, counts.second_wins, counts.ties])
    if np.any(cell_counts != np.round(cell_counts)):
        raise ValueError("the bootstrap resamples battles: counts must be whole numbers (no weights)")
    if fit is None:
        fit = bt.fit_bradley_terry(counts, ties=ties, prior=prior, anchor=anchor, anchor_rating=anchor_rating,
                                   scale=scale, base=base, names=names)
    davidson = ties == "davidson"
    m = counts.n_models
    problem = bt.make_problem(counts, fit.component)
    x0 = jnp.asarray(np.append(fit.strengths, np.log(fit.tie_strength) if davidson else 0.0))
    prior_ = jnp.float64(prior)
    cho = jnp.linalg.cholesky(bt.negative_hessian(x0, problem, prior_, davidson))  # lower factor
    batch = batch_size or _default_batch_size(m)
    component = jnp.asarray(fit.component, dtype=jnp.int32)

    strengths = np.empty((replicates, m))
    refits = 0
    batches = [range(start, min(start + batch, replicates)) for start in range(0, replicates, batch)]
    bar = _progress_bar(replicates, progress)
    drawer = _BatchDrawer(counts, seed, batch, davidson)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(drawer.draw, batches[0])
        for i, rows in enumerate(batches):
            first, second = pending.result()
            if i + 1 < len(batches):
                pending = pool.submit(drawer.draw, batches[i + 1])
            if davidson or m > NEWTON_MAX_MODELS:
                x, converged = _chord_refit(x0, cho, component, jnp.asarray(first), jnp.asarray(second),
                                            prior_, jnp.float64(tol), davidson=davidson, max_iter=CHORD_MAX_ITER)
            else:
                x, converged = _newton_refit_batch(x0, component, jnp.asarray(first), jnp.asarray(second),
                                                   prior_, jnp.float64(tol), max_iter=NEWTON_MAX_ITER)
            x, converged = np.array(x[:len(rows)]), np.asarray(converged[:len(rows)])
            for row in np.flatnonzero(~converged):
                x[row] = _newton_refit(x0, problem, first[row], second[row], counts, prior_, tol, davidson)
                refits += 1
            strengths[rows.start:rows.stop] = x[:, :m]
            bar.update(len(rows))
    bar.close()

    samples = bt.to_elo(strengths, anchor=anchor, anchor_rating=anchor_rating, scale=scale, base=base,
                        played=~np.isnan(fit.ratings))
    tail = (1 - confidence) / 2
    low, high = np.quantile(samples, [tail, 1 - tail], axis=0)
    low = np.where(fit.unbounded_below, -np.inf, low)
    high = np.where(fit.unbounded_above, np.inf, high)
    return BootstrapResult(low=low, high=high, samples=samples, fit=fit, confidence=confidence, seed=int(seed),
                           refits=refits)


def _newton_refit(x0, problem, first, second, counts: PairCounts, prior, tol, davidson):
    """Refit one replicate with the full damped Newton solver (for the rare chord that does not converge)."""
    k, padded = counts.first.shape[0], problem.first.shape[0]
    i, j = counts.first, counts.second
    if davidson:
        cells = (first[i, j], first[j, i], second[i, j])
    else:  # back from (S, N): ties are not separable from wins in S, but the half-win likelihood only
        cells = (first[i, j], first[j, i], np.zeros(k))  # needs S and N, which these cells reproduce

    def pad(values):
        out = np.zeros(padded)
        out[:k] = values
        return jnp.asarray(out)

    replicate = problem._replace(first_wins=pad(cells[0]), second_wins=pad(cells[1]), ties=pad(cells[2]))
    x, _, converged = bt._newton(x0, replicate, prior, jnp.float64(tol), davidson=davidson,
                                 max_iter=bt.DEFAULT_MAX_ITER)
    if not bool(converged):
        raise RuntimeError("a bootstrap replicate did not converge")
    return np.asarray(x)


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc="bootstrap", unit="replicate", file=sys.stderr, leave=False)


# ----------------------------------------------------------------------------------- asymptotic intervals

def sandwich_intervals(counts: PairCounts, fit: bt.BTFit, *, ties: str = "half",
                       prior: float = bt.DEFAULT_PRIOR, confidence: float = 0.95, scale: float = 400.0,
                       base: float = 10.0, robust: bool = True) -> Intervals:
    """Normal-approximation intervals from the Fisher information, or the sandwich (robust) estimator.

    The parameters are identified only up to the centring, so the covariance is taken of the centred
    strengths: V = C H^-1 [B] H^-1 C with C = I - 11^T/m, H the penalised information and, for the sandwich,
    B = sum over pairs of the outer products of per-cell score contributions (the empirical variance of the
    score). The sandwich stays honest when the model's variance is wrong, for example under half-win ties,
    where the Fisher intervals come out too wide. Intervals are centred like a mean-1000 fit; with an anchor,
    use the bootstrap.
    """
    if not 0 < confidence < 1:
        raise ValueError("confidence must lie strictly between 0 and 1")
    davidson = ties == "davidson"
    m = counts.n_models
    problem = bt.make_problem(counts, fit.component)
    x = jnp.asarray(np.append(fit.strengths, np.log(fit.tie_strength) if davidson else 0.0))
    h = np.asarray(bt.negative_hessian(x, problem, jnp.float64(prior), davidson))
    h_inv = np.linalg.inv(h)
    if robust:
        meat = _score_outer_products(x, counts, davidson)
        cov = h_inv @ meat @ h_inv
    else:
        cov = h_inv
    played = ~np.isnan(fit.ratings)
    centre = np.eye(m) - played[None, :] / played.sum()  # theta_i minus the mean over models with battles
    cov_theta = centre @ cov[:m, :m] @ centre
    stderr = scale / np.log(base) * np.sqrt(np.clip(np.diag(cov_theta), 0, None))
    z = norm.ppf((1 + confidence) / 2)
    low = np.where(fit.unbounded_below, -np.inf, fit.ratings - z * stderr)
    high = np.where(fit.unbounded_above, np.inf, fit.ratings + z * stderr)
    return Intervals(low=low, high=high, stderr=stderr)


def _score_outer_products(x, counts: PairCounts, davidson: bool) -> np.ndarray:
    """B = sum over battles of s s^T, s the score of one battle; battles in one cell share their score."""
    m = counts.n_models
    theta, phi = np.asarray(x[:-1]), float(x[-1])
    d = jnp.asarray(theta[counts.first] - theta[counts.second])
    size = m + 1
    meat = np.zeros((size, size))
    for outcome in range(3):
        unit = [np.zeros(d.shape[0]) for _ in range(3)]
        unit[outcome] = np.ones(d.shape[0])
        g_d, g_phi = bt.pair_gradient(d, jnp.float64(phi), *map(jnp.asarray, unit), davidson)
        g_d, g_phi = np.asarray(g_d), np.asarray(g_phi) if davidson else np.zeros(d.shape[0])
        n = (counts.first_wins, counts.second_wins, counts.ties)[outcome]
        # the score of one battle touches first (+g_d), second (-g_d) and phi (g_phi)
        rows = [(counts.first, g_d), (counts.second, -g_d), (np.full(d.shape[0], m), g_phi)]
        for idx_a, val_a in rows:
            for idx_b, val_b in rows:
                np.add.at(meat, (idx_a, idx_b), n * val_a * val_b)
    if not davidson:
        meat[m, m] = 1.0
    return meat


def rank_upper_bound(low, high) -> np.ndarray:
    """FastChat's rank: 1 + the number of models whose lower bound exceeds this model's upper bound.

    It is the best rank a model can claim given the intervals; ties in rank are expected.
    """
    low = np.asarray(low, np.float64)
    high = np.asarray(high, np.float64)
    return 1 + (low[None, :] > high[:, None]).sum(axis=1)
