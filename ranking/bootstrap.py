"""Uncertainty of Bradley-Terry ratings: bootstrap and sandwich intervals, and FastChat's rank upper bound.

The bootstrap resamples battles. Because the fit depends on the battles only through the counts of each
(pair, outcome) cell, resampling battles with replacement is the same, in distribution, as a multinomial draw
of the cell counts. We use the Poisson bootstrap: every cell count is redrawn independently as
Poisson(observed count). It is the standard large-sample approximation of the multinomial (the two differ only
in that the Poisson total is itself random, with relative spread 1/sqrt(n)), and it lets every cell be drawn
independently and in bulk; tests check that its intervals agree with a brute-force row bootstrap within
Monte-Carlo error.

How a replicate is made, all inside one compiled JAX function per chunk of replicates:
- Random numbers are counter-based: the uniform of cell c in replicate r comes from output r * 2^32 + c + 1
  of the SplitMix64 stream (Steele, Lea & Flood 2014) that the seed selects. A draw is a function of
  (seed, r, c) alone, so the samples are bit-identical for a seed whatever the batch size, the number of threads, or the
  order in which replicates run.
- Poisson draws are exact up to the resolution of the tables (probabilities to ~2^-39) and a truncated tail
  of mass < 1e-20, and branch-free: Walker's alias method over a table per distinct observed count (counts
  are whole numbers but for down-weighted battles, so few distinct means), one uniform and one table read
  per cell. Cells with a zero
  count stay zero and cost nothing.
- The drawn cells are laid out as a dense m×m matrix and the replicate is refitted by chord Newton steps,
  x <- x + P g_r(x), P the full-data inverse Hessian H0^-1 restricted to zero-sum strengths (see
  _preconditioner): a replicate is a small perturbation of the data, so this converges linearly and fast
  (7-9 steps to 1e-9 nats at 200-1000 models), and each step is one pass over the matrix. Half-win ties use
  sigmoid(t_i - t_j) = e_i / (e_i + e_j) (a division per entry instead of an exponential) with the battle
  counts in float32 (exact below 2^24); the first steps do the per-entry work in float32, the last ones in
  float64, and only a float64 step below `tol` ends a refit. P is applied in float32: it only preconditions
  the iteration, whose fixed point g_r = 0 is computed in float64. The rare replicate that does not
  converge that way is refitted by the damped Newton solver of bradley_terry.
- Chunks of replicates run on every CPU the process may use (THREADS), each replicate sequentially inside
  its chunk (lax.map), so a replicate's arithmetic never depends on its neighbours. Memory is O(m²) per
  thread plus the (R, m) samples, never O(battles).
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from scipy.sparse import coo_matrix
from scipy.stats import norm, poisson

from ranking import bradley_terry as bt
from ranking.stats import PairCounts

DEFAULT_REPLICATES = 1000
CHORD_MAX_ITER = 60
# Chord steps use the float32 gradient until a step is below COARSE_TOL (nats, ten times its ~1e-6
# accuracy) or COARSE_MAX_ITER steps are done, then float64 to the end; only a float64 step can end it.
COARSE_TOL = 1e-5
COARSE_MAX_ITER = 8
# Below this many models a refit costs microseconds either way, and compiling the float32 steps too would
# cost more than they save.
COARSE_MIN_MODELS = 100
# Worker threads for the replicates; None: every CPU this process may use. The samples do not depend on it.
THREADS: int | None = None


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

_MASK64 = (1 << 64) - 1
_GOLDEN_GAMMA = 0x9E3779B97F4A7C15  # SplitMix64's increment
_REPLICATE_STRIDE = 1 << 32  # stream positions per replicate: cells of one replicate never reach the next


def _mix64(z):
    """SplitMix64's output function (Stafford's variant 13) on uint64 arrays; wraps modulo 2^64."""
    z = (z ^ (z >> 30)) * jnp.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> 27)) * jnp.uint64(0x94D049BB133111EB)
    return z ^ (z >> 31)


def _seed_key(seed: int) -> int:
    """The stream of a seed: its SplitMix64 starting state, scrambled so that nearby seeds are far apart."""
    z = (int(seed) + _GOLDEN_GAMMA) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def alias_tables(pmfs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Walker alias tables of discrete distributions, concatenated: (threshold, alias), one entry per outcome.

    To draw from distribution g with W outcomes, take a uniform u, j = floor(u W) and f = u W - j: the draw
    is j when f < threshold[j], else alias[j] (indices local to g). Built without a sequential loop: the
    "small" outcomes (W p < 1) in order take their deficit from the "large" one whose cumulative excess
    covers the start of that deficit, and a large outcome whose excess runs out inside a small's deficit
    takes the overshoot from the next large one (this is Vose's sweep, found with cumulative sums and
    binary searches).
    """
    thresholds, aliases = [], []
    for pmf in pmfs:
        w = pmf.size
        q = pmf * w
        threshold, alias = np.ones(w), np.arange(w, dtype=np.float64)
        small, large = np.flatnonzero(q < 1), np.flatnonzero(q > 1)
        if small.size and large.size:
            deficit_end = np.cumsum(1 - q[small])
            deficit_start = deficit_end - (1 - q[small])
            excess_end = np.cumsum(q[large] - 1)
            threshold[small] = q[small]
            alias[small] = large[np.minimum(np.searchsorted(excess_end, deficit_start, side="right"), large.size - 1)]
            # the small deficit that each large excess ends inside, if it ends strictly inside one
            inside = np.minimum(np.searchsorted(deficit_end, excess_end, side="right"), small.size - 1)
            overshoot = (excess_end > deficit_start[inside]) & (excess_end < deficit_end[inside])
            overshoot[-1] = False  # the last large one has nothing after it: rounding only
            threshold[large[overshoot]] = 1 - (deficit_end[inside[overshoot]] - excess_end[overshoot])
            alias[large[overshoot]] = large[np.flatnonzero(overshoot) + 1]
        thresholds.append(np.clip(threshold, 0.0, 1.0))
        aliases.append(alias)
    return np.concatenate(thresholds), np.concatenate(aliases)


class _CellTables(NamedTuple):
    """What the compiled sampler needs to draw Poisson(count) for every cell with a non-zero count."""

    stream: jax.Array  # (Z,) uint64: the cell's stream offset, (c + 1) * gamma
    base: jax.Array  # (Z,) int32: first entry of the cell's alias table
    width: jax.Array  # (Z,) float64: outcomes in that table
    low: jax.Array  # (Z,) float64: the value of outcome 0
    table: jax.Array  # (T,) float64: alias + threshold / 2, both read with one gather (threshold to ~2^-39)


def _poisson_tables(cells: np.ndarray) -> _CellTables:
    """Alias tables of Poisson(count) for the non-zero cells, one table per distinct count.

    Each table covers count ± (10 sqrt(count) + 12): the mass outside is below 1e-20 and is left out.
    """
    present = np.flatnonzero(cells)
    values, group = np.unique(cells[present], return_inverse=True)
    spread = 10 * np.sqrt(values) + 12
    low = np.maximum(0, np.floor(values - spread)).astype(np.int64)
    size = np.ceil(values + spread + 12).astype(np.int64) - low + 1
    start = np.concatenate([[0], np.cumsum(size)[:-1]])
    outcomes = np.arange(size.sum()) - np.repeat(start - low, size)
    pmf = poisson.pmf(outcomes, np.repeat(values, size))
    threshold, alias = alias_tables([p / p.sum() for p in np.split(pmf, start[1:])])
    stream = (present.astype(np.uint64) + np.uint64(1)) * np.uint64(_GOLDEN_GAMMA)  # wraps modulo 2^64
    return jax.device_put(
        _CellTables(
            stream=stream,
            base=start[group].astype(np.int32),
            width=size[group].astype(np.float64),
            low=low[group].astype(np.float64),
            table=alias + threshold / 2,
        )
    )


def _draw(tables: _CellTables, key, replicate):
    """Poisson draws of every non-zero cell for one replicate, float64 (Z,), by the alias method."""
    state = key + replicate.astype(jnp.uint64) * jnp.uint64(_REPLICATE_STRIDE * _GOLDEN_GAMMA & _MASK64)
    bits = _mix64(state + tables.stream)
    # 52 random mantissa bits under the exponent of 1.0: a uniform in [1, 2), shifted to [0, 1).
    u = jax.lax.bitcast_convert_type((bits >> jnp.uint64(12)) | jnp.uint64(0x3FF0000000000000), jnp.float64) - 1
    scaled = u * tables.width
    j = jnp.floor(scaled)
    packed = tables.table[tables.base + j.astype(jnp.int32)]
    alias = jnp.floor(packed)
    return jnp.where(scaled - j < 2 * (packed - alias), j, alias) + tables.low


_draw_one = jax.jit(_draw)


class _Layout(NamedTuple):
    """Where each dense (i, j) entry finds its cell among the drawn ones (index Z: a cell that stays zero)."""

    wins: jax.Array  # (m, m) int32: the cell "i beat j"
    ties: jax.Array  # (m, m) int32, symmetric: the cell "i and j tied"


def _cells(counts: PairCounts) -> np.ndarray:
    return np.concatenate([counts.first_wins, counts.second_wins, counts.ties])


def _layout(counts: PairCounts, cells: np.ndarray) -> _Layout:
    m, k = counts.n_models, counts.first.size
    present = np.flatnonzero(cells)
    slot = np.full(cells.size, present.size, np.int32)  # zero cells read the trailing zero
    slot[present] = np.arange(present.size)
    first, second = counts.first, counts.second
    wins = np.full((m, m), present.size, np.int32)
    ties = np.full((m, m), present.size, np.int32)
    wins[first, second], wins[second, first] = slot[:k], slot[k : 2 * k]
    ties[first, second] = ties[second, first] = slot[2 * k :]
    return jax.device_put(_Layout(wins, ties))


def replicate_counts(counts: PairCounts, replicate: int, *, seed: int = 0) -> PairCounts:
    """The resampled counts of one bootstrap replicate, exactly as bootstrap_ratings draws them."""
    _check_seed(seed)
    cells = _whole_cells(counts)
    drawn = np.zeros(cells.size)
    if cells.any():
        drawn[np.flatnonzero(cells)] = np.asarray(
            _draw_one(_poisson_tables(cells), np.uint64(_seed_key(seed)), np.int64(replicate))
        )
    k = counts.first.size
    return counts._replace(first_wins=drawn[:k], second_wins=drawn[k : 2 * k], ties=drawn[2 * k :])


# ------------------------------------------------------------------------------------------------ refitting


def _replicate_cells(tables: _CellTables, layout: _Layout, key, replicate, dtype):
    """The replicate's drawn counts as dense (wins, ties) matrices, like bradley_terry.dense_counts."""
    cells = jnp.append(_draw(tables, key, replicate), 0.0).astype(dtype)
    return cells[layout.wins], cells[layout.ties]


def _half_gradient(theta, scores, battles, same_component, prior, *, coarse: bool = False):
    """Gradient of the penalised half-win log-likelihood from a replicate's score sums and battle matrix.

    scores: (m,) wins + half ties of each model; battles: (m, m) N[i, j]. The data term is
    scores_i - sum_j N_ij sigmoid(theta_i - theta_j), with sigmoid(theta_i - theta_j) = e_i / (e_i + e_j):
    one division per entry, where an exponential costs several times more. e is taken relative to the
    largest strength and floored (at e^-700, or e^-80 in float32), so it neither overflows nor vanishes.
    `coarse` does the per-entry work in float32 (about three times faster, and accurate to ~1e-6 relative:
    enough to approach the solution, not to finish).
    """
    if coarse:
        e = jnp.exp(jnp.maximum(theta - theta.max(), -80.0)).astype(jnp.float32)
        expected = e * jnp.sum(battles.astype(jnp.float32) / (e[:, None] + e[None, :]), axis=1)
        expected = expected.astype(jnp.float64)
    else:
        e = jnp.exp(jnp.maximum(theta - theta.max(), -700.0))
        expected = e * jnp.sum(battles / (e[:, None] + e[None, :]), axis=1, dtype=jnp.float64)
    g = scores - expected - prior * theta
    if same_component is not None:  # the gauge of prior == 0 (see bradley_terry._gauge_weight)
        g = g - same_component @ theta
    return g


@partial(jax.jit, static_argnames=("davidson", "gauge", "narrow", "coarse", "max_iter"))
def _refit_chunk(
    tables: _CellTables,
    layout: _Layout,
    component,
    key,
    replicates,
    x0,
    precondition,
    prior,
    tol,
    *,
    davidson: bool,
    gauge: bool,
    narrow: bool,
    coarse: bool,
    max_iter: int,
):
    """Draw and refit each replicate of a chunk; replicate -1 is padding. Returns (x, converged, iterations).

    Each replicate runs its own chord iteration x <- x + P g_r(x), P = H0^-1 (float32), until the largest
    float64 step is below tol; the chunk's replicates run one after the other (lax.map), so a replicate's
    arithmetic is the same whatever else is in the chunk. `narrow`: every count fits float32 exactly;
    `coarse`: start with float32 steps (half-win ties only).
    """
    m = x0.shape[0] - 1

    def refit(replicate):
        if davidson:
            wins, ties = _replicate_cells(tables, layout, key, replicate, jnp.float64)
            problem = bt._Problem(wins=wins, ties=ties, component=component)

            def gradient(x, coarse):
                return bt.gradient(x, problem, prior, True)
        else:
            wins, ties = _replicate_cells(tables, layout, key, replicate, jnp.float32 if narrow else jnp.float64)
            scored = wins + ties / 2
            scores = jnp.sum(scored, axis=1, dtype=jnp.float64)
            battles = scored + scored.T
            same_component = (component[:, None] == component[None, :]).astype(jnp.float64) if gauge else None

            def gradient(x, coarse):
                g = _half_gradient(x[:m], scores, battles, same_component, prior, coarse=coarse)
                return jnp.append(g, 0.0)

        def step(state):
            x, _, iterations, fine, _ = state
            if coarse:
                g = jax.lax.cond(fine, lambda x: gradient(x, False), lambda x: gradient(x, True), x)
            else:
                g = gradient(x, False)
            delta = jnp.sum(g.astype(jnp.float32)[:, None] * precondition, axis=0).astype(jnp.float64)
            size = jnp.max(jnp.abs(delta))
            switch = (size < COARSE_TOL) | (iterations + 1 >= COARSE_MAX_ITER)
            return x + delta, size, iterations + 1, fine | switch, fine

        def keep_going(state):
            _, size, iterations, _, was_fine = state
            return ~(was_fine & (size < tol)) & (iterations < max_iter)

        x, size, iterations, _, was_fine = jax.lax.while_loop(
            keep_going, step, (x0, jnp.inf, 0, jnp.bool_(not coarse), jnp.bool_(False))
        )
        return x, was_fine & (size < tol), iterations

    def skip(replicate):
        return x0, jnp.bool_(True), 0

    return jax.lax.map(lambda r: jax.lax.cond(r >= 0, refit, skip, r), replicates)


def _preconditioner(x0, counts: PairCounts, component, prior, davidson: bool) -> np.ndarray:
    """P = Pi H0^-1 Pi: the full-data inverse Hessian restricted to strengths that sum to zero in each piece.

    Every fit, full-data or replicate, has zero-sum strengths in each connected piece (the data term does not
    move a piece's sum, the prior or the gauge pins it to zero), so the iteration never needs that direction.
    Left in, it is H0's weakest one (curvature = the prior, 1e-3): rounding in a gradient, whose data part
    sums to zero only up to rounding, would come back from H0^-1 multiplied by 1/prior.
    """
    m = counts.n_models
    hessian = bt.negative_hessian(x0, bt.make_problem(counts, component), prior, davidson)
    with bt.one_blas_thread():
        inverse = scipy.linalg.cho_solve(scipy.linalg.cho_factor(hessian), np.eye(m + 1))
    sizes = np.bincount(component)
    members = coo_matrix((np.ones(m), (component, np.arange(m))), shape=(sizes.size, m + 1)).tocsr()

    def project_rows(a):  # Pi a: subtract each piece's mean row from its rows (phi's row stays)
        return a - members.T @ ((members @ a) / sizes[:, None])

    return project_rows(project_rows(inverse).T)


def _default_batch_size(m: int) -> int:
    # A chunk of replicates is one compiled call: about 2 million matrix entries per chunk keeps the call
    # overhead and the wait for the last chunk both small.
    return int(np.clip((1 << 21) // max(m * m, 1), 1, 64))


def _threads() -> int:
    if THREADS is not None:
        return max(1, int(THREADS))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _check_seed(seed) -> None:
    if isinstance(seed, bool) or not float(seed).is_integer() or not 0 <= seed < 2**63:
        raise ValueError("seed must be an integer in [0, 2^63)")


def _whole_cells(counts: PairCounts) -> np.ndarray:
    """The cells to resample. A cell of weighted battles (down-weighted repeats, weights <= 1) is redrawn as
    Poisson(its weighted count c): its variance c is at least the sum of squared weights that resampling the
    weighted battles one by one would give, so its intervals are if anything wider, never narrower. Whole
    counts are the plain Poisson bootstrap, unchanged."""
    return _cells(counts)


def bootstrap_ratings(
    counts: PairCounts,
    *,
    replicates: int = DEFAULT_REPLICATES,
    seed: int = 0,
    ties: str = "half",
    prior: float = bt.DEFAULT_PRIOR,
    confidence: float = 0.95,
    anchor: int | None = None,
    anchor_rating: float = 1000.0,
    scale: float = 400.0,
    base: float = 10.0,
    batch_size: int | None = None,
    fit: bt.BTFit | None = None,
    tol: float = 1e-9,
    names=None,
    progress: bool = False,
) -> BootstrapResult:
    """Percentile bootstrap intervals for Bradley-Terry ratings (Poisson bootstrap over the cells).

    `confidence` is the two-sided level: the interval runs between the (1-c)/2 and (1+c)/2 quantiles of the
    replicate ratings. `fit` may pass an existing full-data fit with the same options. `batch_size` is the
    number of replicates per compiled call (the results do not depend on it). `progress` shows a progress
    bar on stderr. The interval of a model the data leave unbounded (see BTFit) is infinite on that side:
    its replicates only echo the prior.
    """
    if replicates < 2:
        raise ValueError("a bootstrap needs at least 2 replicates")
    if not 0 < confidence < 1:
        raise ValueError("confidence must lie strictly between 0 and 1")
    bt.check_options(ties, prior, scale, base)
    _check_seed(seed)
    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    cells = _whole_cells(counts)
    davidson = ties == "davidson"
    m = counts.n_models
    chunk = int(batch_size or _default_batch_size(m))
    chunks = [np.arange(start, start + chunk) for start in range(0, replicates, chunk)]
    chunks[-1] = np.where(chunks[-1] < replicates, chunks[-1], -1)
    key = np.uint64(_seed_key(seed))
    static = dict(
        davidson=davidson,
        gauge=prior == 0,
        narrow=bool(counts.totals.max(initial=0) < 2**22),
        coarse=not davidson and m >= COARSE_MIN_MODELS,
        max_iter=CHORD_MAX_ITER,
    )

    with ThreadPoolExecutor(max_workers=min(_threads(), len(chunks))) as pool:

        def run(replicate_ids, x0, precondition):
            out = _refit_chunk(
                tables,
                layout,
                component,
                key,
                replicate_ids,
                x0,
                precondition,
                np.float64(prior),
                np.float64(tol),
                **static,
            )
            return [np.array(a) for a in out]

        # The tables, and the compilation of the refit, do not need the fit: on a cold start they run on a
        # worker thread while this one fits (XLA compiles without holding the GIL).
        def prepare():
            nonlocal tables, layout
            tables, layout = _poisson_tables(cells), _layout(counts, cells)
            return run(np.full(chunk, -1), np.zeros(m + 1), np.zeros((m + 1, m + 1), np.float32))

        tables = layout = None
        component = np.zeros(m, np.int32)
        prepared = pool.submit(prepare) if fit is None else None
        if fit is None:
            fit = bt.fit_bradley_terry(
                counts,
                ties=ties,
                prior=prior,
                anchor=anchor,
                anchor_rating=anchor_rating,
                scale=scale,
                base=base,
                names=names,
            )
        component = np.asarray(fit.component, np.int32)
        x0 = np.append(fit.strengths, np.log(fit.tie_strength) if davidson else 0.0)
        precondition = _preconditioner(x0, counts, fit.component, prior, davidson)
        x0, precondition = jax.device_put(x0), jax.device_put(precondition.astype(np.float32))
        if prepared is None:
            tables, layout = _poisson_tables(cells), _layout(counts, cells)
            run(np.full(chunk, -1), x0, precondition)  # compile once, before the threads all ask for it
        else:
            prepared.result()

        strengths = np.empty((replicates, m))
        refits = 0
        bar = _progress_bar(replicates, progress)
        for replicate_ids, (x, converged, _) in zip(chunks, pool.map(lambda ids: run(ids, x0, precondition), chunks)):
            valid = replicate_ids >= 0
            for row in np.flatnonzero(valid & ~converged):
                x[row] = _newton_refit(counts, fit, int(replicate_ids[row]), seed, prior, tol, davidson)
                refits += 1
            strengths[replicate_ids[valid]] = x[valid, :m]
            bar.update(int(valid.sum()))
        bar.close()

    samples = bt.to_elo(
        strengths, anchor=anchor, anchor_rating=anchor_rating, scale=scale, base=base, played=~np.isnan(fit.ratings)
    )
    tail = (1 - confidence) / 2
    low, high = np.quantile(samples, [tail, 1 - tail], axis=0)
    low = np.where(fit.unbounded_below, -np.inf, low)
    high = np.where(fit.unbounded_above, np.inf, high)
    return BootstrapResult(
        low=low, high=high, samples=samples, fit=fit, confidence=confidence, seed=int(seed), refits=refits
    )


def _newton_refit(counts: PairCounts, fit: bt.BTFit, replicate: int, seed: int, prior, tol, davidson):
    """Refit one replicate with the damped Newton solver (for the rare chord that does not converge)."""
    resampled = replicate_counts(counts, replicate, seed=seed)
    problem = bt.make_problem(resampled, fit.component, batch=True)
    x0 = np.append(fit.strengths, np.log(fit.tie_strength) if davidson else 0.0)[None]
    x, _, converged, _ = bt.newton(x0, problem, prior, tol, davidson=davidson, max_iter=bt.DEFAULT_MAX_ITER)
    if not (converged[0] and np.all(np.isfinite(x))):
        raise RuntimeError("a bootstrap replicate did not converge")
    return x[0]


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


def sandwich_intervals(
    counts: PairCounts,
    fit: bt.BTFit,
    *,
    ties: str = "half",
    prior: float = bt.DEFAULT_PRIOR,
    confidence: float = 0.95,
    scale: float = 400.0,
    base: float = 10.0,
    robust: bool = True,
) -> Intervals:
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
    x = np.append(fit.strengths, np.log(fit.tie_strength) if davidson else 0.0)
    h = bt.negative_hessian(x, problem, prior, davidson)
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
