"""One measurement of bench/ranking.py, run in a fresh process: `python bench/_child.py '<json spec>'`.

A fresh process per measurement makes the peak RSS that process's own (VmHWM), and counts imports and
compilation honestly. The last stdout line is `BENCH-RESULT <json>`; the parent reads nothing else.

Timing conventions (the table's footnotes repeat them):
- Every method starts from the encoded arrays (model_a, model_b, outcome int codes) already in memory, and its
  time includes whatever the method itself does with them (unique rows, count matrices, design matrices, its
  own data classes). Pure format adaptation into the peer's input type (a pandas DataFrame of names for
  arena-rank, lists for evalica) is done before the clock starts. Imports are not timed; JIT compilation is
  (ours "cold", arena-rank).
- "ours: end to end from the file" is timed from the top of this script, before `import numpy`: imports
  (JAX), reading and encoding the JSON Lines file, counting, fitting and the bootstrap.
- spec "xla_cache" (a folder): ours keeps XLA's compiled code on disk there, as `python -m ranking` does
  (ranking.cli); the parent primes the folder with a run of its own first, so the measured run is a fresh
  process that loads compiled code instead of compiling it.
- fit_s: the method's point fit on all battles, with its preparation; boot_s: the bootstrap replicates after
  it (pool start-up included). When a loop-type baseline would exceed its time budget it stops after
  `sample_seconds` and reports how many replicates it ran; the parent scales linearly.
"""

import time

_T_START = time.perf_counter()

import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from collections import deque  # noqa: E402

_BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(_BENCH_DIR)
# Run as a script, sys.path[0] is bench/, where bench/ranking.py would shadow the `ranking` package.
if sys.path and os.path.abspath(sys.path[0] or ".") == _BENCH_DIR:
    sys.path[0] = _REPO
    sys.path.insert(1, _BENCH_DIR)

import _data  # noqa: E402
import numpy as np  # noqa: E402

# ------------------------------------------------------------------------------------------------- memory


def _status_kib(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def rss_mib() -> float:
    kib = _status_kib("VmRSS")
    return kib / 1024 if kib is not None else peak_mib()


def peak_mib() -> float:
    """Peak resident set of this process (VmHWM; ru_maxrss where /proc is missing), MiB."""
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux clear_refs '5'); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def cpu_s() -> float:
    """CPU seconds (user + system) of this process and its finished children (pool workers) so far.

    Less sensitive than wall time to other work on a shared machine; on 2 cores, wall >= CPU / 2.
    """
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def workers_peak_mib() -> float:
    """Largest peak RSS among this process's finished children (pool workers), MiB."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------------ helpers


class Spec:
    def __init__(self, raw: dict):
        self.raw = raw
        self.method = raw["method"]
        self.arrays = raw["arrays"]
        self.jsonl = raw.get("jsonl")
        self.reference = raw.get("reference")
        self.replicates = int(raw.get("replicates", 1000))
        self.budget = float(raw.get("budget", 300.0))
        self.sample_seconds = float(raw.get("sample_seconds", 60.0))
        self.seed = int(raw.get("seed", 0))
        self.workers = int(raw.get("workers", 2))
        self.subsample = raw.get("subsample")


def load(spec: Spec):
    a, b, o, _theta, names = _data.load_arrays(spec.arrays)
    if spec.subsample:
        a, b, o = a[: spec.subsample], b[: spec.subsample], o[: spec.subsample]
    return a, b, o, names


def diff_to_reference(spec: Spec, ratings) -> float | None:
    if not spec.reference or not os.path.exists(spec.reference):
        return None
    with np.load(spec.reference) as ref:
        return _data.max_abs_diff(ratings, ref["ratings"])


def loop_replicates(spec: Spec, run_one, fit_s: float, *, in_flight=None, pool=None):
    """Run replicates 0..R-1 with `run_one(r)` (or, with a pool, `pool.apply_async(*run_one(r))`).

    Stops early when the projected total (fit_s + loop time scaled to R) exceeds the budget and at least
    sample_seconds of loop time and 2 replicates are in. Returns (results, loop seconds, replicates run).
    """
    R = spec.replicates
    results = []
    start = time.perf_counter()

    def should_stop(done):
        elapsed = time.perf_counter() - start
        projected = fit_s + elapsed * R / done
        return done < R and projected > spec.budget and elapsed >= spec.sample_seconds and done >= 2

    if pool is None:
        for r in range(R):
            results.append(run_one(r))
            if should_stop(r + 1):
                break
    else:
        pending = deque()
        submitted = 0
        while len(results) < R:
            while len(pending) < (in_flight or 2 * spec.workers) and submitted < R:
                fn, args = run_one(submitted)
                pending.append(pool.apply_async(fn, args))
                submitted += 1
            results.append(pending.popleft().get())
            if should_stop(len(results)):
                break
    return results, time.perf_counter() - start, len(results)


def result(spec: Spec, **fields) -> dict:
    out = {
        "method": spec.method,
        "replicates": spec.replicates,
        "peak_mib": peak_mib(),
        "workers_peak_mib": workers_peak_mib() or None,
        "notes": [],
    }
    out.update(fields)
    return out


# ------------------------------------------------------------------------------------------- the methods


def m_reference(spec: Spec) -> dict:
    """scipy L-BFGS-B on the pair count matrix: the accuracy reference (plain MLE, half-win ties)."""
    a, b, o, names = load(spec)
    m = len(names)
    start, cpu0 = time.perf_counter(), cpu_s()
    wins = _data.half_win_matrix(a, b, o, m)
    theta, info = _data.reference_fit(wins)
    fit_s, fit_cpu = time.perf_counter() - start, cpu_s() - cpu0
    ratings = _data.to_elo(theta)
    np.savez(spec.reference, ratings=ratings, **{k: v for k, v in info.items() if k != "message"})
    return result(
        spec, fit_s=fit_s, fit_cpu_s=fit_cpu, boot_s=None, replicates=0, replicates_run=0, max_diff=0.0, info=info
    )


def _use_xla_cache(spec: Spec) -> None:
    """Keep compiled code on disk exactly as `python -m ranking` does (ranking.cli), in the bench's folder."""
    if spec.raw.get("xla_cache"):
        os.environ["ARENA_RANKING_CACHE"] = spec.raw["xla_cache"]
        from ranking.compilation import enable_compilation_cache

        enable_compilation_cache()


def _ours_import():
    start = time.perf_counter()
    import ranking  # noqa: F401
    from ranking.bootstrap import bootstrap_ratings
    from ranking.bradley_terry import fit_bradley_terry
    from ranking.stats import pair_counts

    return pair_counts, fit_bradley_terry, bootstrap_ratings, time.perf_counter() - start


def m_ours_fit(spec: Spec) -> dict:
    """Ours, point fit only: pair_counts + fit_bradley_terry (default prior), cold then warm."""
    a, b, o, names = load(spec)
    m = len(names)
    pair_counts, fit_bradley_terry, _, import_s = _ours_import()
    times, cpus = [], []
    for _ in range(2):
        start, cpu0 = time.perf_counter(), cpu_s()
        fit = fit_bradley_terry(pair_counts(a, b, o, m))
        times.append(time.perf_counter() - start)
        cpus.append(cpu_s() - cpu0)
    return result(
        spec,
        fit_s=times[0],
        fit_warm_s=times[1],
        fit_cpu_s=cpus[0],
        boot_s=None,
        replicates=0,
        replicates_run=0,
        max_diff=diff_to_reference(spec, fit.ratings),
        import_s=import_s,
    )


def m_ours_bootstrap(spec: Spec) -> dict:
    """Ours from arrays: pair_counts + bootstrap_ratings (which fits first), cold (JIT compile) then warm.

    The warm run also measures the memory the fit and bootstrap add after encoding: VmHWM is reset once the
    pair counts exist, so the growth excludes reading the battles and counting them.
    """
    a, b, o, names = load(spec)
    m = len(names)
    R = spec.replicates
    pair_counts, _, bootstrap_ratings, import_s = _ours_import()
    _use_xla_cache(spec)
    runs, cpus = [], []
    for warm in (False, True):
        start, cpu0 = time.perf_counter(), cpu_s()
        counts = pair_counts(a, b, o, m)
        counted = time.perf_counter()
        if warm:
            exact = reset_peak()
            base = rss_mib()
            counted = time.perf_counter()
        boot = bootstrap_ratings(counts, replicates=R, seed=spec.seed)
        done = time.perf_counter()
        runs.append((counted - start, done - counted, boot))
        cpus.append(cpu_s() - cpu0)
    growth = peak_mib() - base if exact else None
    boot = runs[1][2]
    if boot.samples.shape != (R, m) or not np.all(np.isfinite(boot.samples)):
        raise RuntimeError(f"bootstrap samples have shape {boot.samples.shape} or non-finite values")
    # Time of the fit inside bootstrap_ratings is not separable; fit_s reports the counting step.
    return result(
        spec,
        fit_s=None,
        count_s=runs[0][0],
        boot_s=runs[0][0] + runs[0][1],
        boot_cpu_s=cpus[0],
        boot_warm_cpu_s=cpus[1],
        boot_warm_s=runs[1][0] + runs[1][1],
        replicates_run=R,
        import_s=import_s,
        growth_mib=growth,
        max_diff=diff_to_reference(spec, boot.fit.ratings),
        refits=int(getattr(boot, "refits", 0)),
    )


def m_ours_e2e(spec: Spec) -> dict:
    """Ours end to end from the JSON Lines file, timed from the top of this script (imports included)."""
    from ranking.bootstrap import bootstrap_ratings
    from ranking.data import read_battles
    from ranking.stats import pair_counts

    _use_xla_cache(spec)
    imported = time.perf_counter()
    battles = read_battles(spec.jsonl)
    read = time.perf_counter()
    counts = pair_counts(battles.model_a, battles.model_b, battles.outcome, len(battles.models))
    boot = bootstrap_ratings(counts, replicates=spec.replicates, seed=spec.seed)
    done = time.perf_counter()
    # Codes follow first appearance in the file; put the ratings back in the generator's order by name.
    _, _, _, names = load(spec)
    position = {name: i for i, name in enumerate(names)}
    ratings = np.full(len(names), np.nan)
    ratings[[position[name] for name in battles.models]] = boot.fit.ratings
    return result(
        spec,
        fit_s=None,
        boot_s=done - _T_START,
        boot_cpu_s=cpu_s(),
        replicates_run=spec.replicates,
        import_s=imported - _T_START,
        read_s=read - imported,
        rank_s=done - read,
        max_diff=diff_to_reference(spec, ratings),
    )


def m_ours_elo(spec: Spec) -> dict:
    """Ours: online Elo (K=4) over the size's battles in order, cold (compile) then warm."""
    a, b, o, names = load(spec)
    import ranking  # noqa: F401
    from ranking.elo import online_elo

    times, cpus = [], []
    for _ in range(2):
        start, cpu0 = time.perf_counter(), cpu_s()
        elo = online_elo(a, b, o, len(names), k=4.0)
        ratings = np.asarray(getattr(elo, "ratings", elo))
        times.append(time.perf_counter() - start)
        cpus.append(cpu_s() - cpu0)
    if not np.all(np.isfinite(ratings)):
        raise RuntimeError("online Elo returned non-finite ratings")
    return result(
        spec,
        fit_s=times[0],
        fit_warm_s=times[1],
        fit_cpu_s=cpus[0],
        boot_s=None,
        replicates=0,
        replicates_run=0,
        max_diff=None,
        battles=int(a.size),
    )


# ---- FastChat's current method (our own implementation from its description, not FastChat's code).
# Unique (model_a, model_b, outcome) rows with their counts as weights; the weighted BT loss with half-win
# ties (outcome 1 / 0.5 / 0) minimised by scipy's L-BFGS-B with its analytic gradient, in FastChat's units
# (logit = ln(10) * (r_a - r_b), so Elo = 1000 + 400 r) and its options (gtol 1e-6, maxiter 100); the point
# fit weights rows by their counts, the replicates by multinomial(n, counts/n) / n, all R drawn up front as
# FastChat does, each replicate refitted in a multiprocessing Pool(2) (fork, Linux's default).
# One difference, in FastChat's favour: the gradient is summed per model with np.bincount, not np.add.at.

_FC = {}
_FC_ALPHA = float(np.log(10.0))
_FC_UPFRONT_LIMIT = 4 << 30  # bytes: above this, replicate weights are drawn one at a time (noted)


def _fc_loss_and_grad(r, a, b, y, w):
    from scipy.special import expit, log_expit

    d = _FC_ALPHA * (r[a] - r[b])
    loss = -np.sum(w * (y * log_expit(d) + (1 - y) * log_expit(-d)))
    g = _FC_ALPHA * w * (expit(d) - y)  # d loss / d r_a for each row
    grad = np.bincount(a, weights=g, minlength=r.size) - np.bincount(b, weights=g, minlength=r.size)
    return loss, grad


def _fc_fit(weights):
    from scipy.optimize import minimize

    res = minimize(
        _fc_loss_and_grad,
        np.zeros(_FC["m"]),
        args=(_FC["a"], _FC["b"], _FC["y"], weights),
        jac=True,
        method="L-BFGS-B",
        options={"gtol": 1e-6, "maxiter": 100},
    )
    return res.x


def _fc_fit_row(row):
    return _fc_fit(_FC["boot_weights"][row])


def m_fastchat(spec: Spec) -> dict:
    import multiprocessing as mp

    a, b, o, names = load(spec)
    m, n = len(names), a.size
    R = spec.replicates
    start, cpu0 = time.perf_counter(), cpu_s()
    y_code = np.select([o == _data.A_WINS, o == _data.B_WINS], [2, 0], 1)  # a won 2, tie 1, b won 0
    key = (a.astype(np.int64) * m + b) * 3 + y_code
    rows, counts = np.unique(key, return_counts=True)
    _FC.update(a=(rows // 3) // m, b=(rows // 3) % m, y=(rows % 3) / 2.0, m=m)
    counts = counts.astype(np.float64)
    r = _fc_fit(counts)
    fit_s, cpu1 = time.perf_counter() - start, cpu_s()

    notes = ["gradient by np.bincount (FastChat: np.add.at)"]
    start = time.perf_counter()
    rng = np.random.default_rng(spec.seed)
    upfront = R * rows.size * 16 <= _FC_UPFRONT_LIMIT
    if upfront:  # as FastChat: every replicate's weights at once (int64 counts, then float64 / n)
        _FC["boot_weights"] = rng.multinomial(n, counts / n, size=R).astype(np.float64) / n
        task = lambda i: (_fc_fit_row, (i,))  # noqa: E731  (workers inherit the weights by fork)
    else:
        notes.append(
            f"replicate weights drawn one at a time ({R} x {rows.size} up front would need "
            f"{R * rows.size * 16 / 2**30:.0f} GiB)"
        )
        task = lambda i: (_fc_fit, (rng.multinomial(n, counts / n).astype(np.float64) / n,))  # noqa: E731
    draw_s, cpu2 = time.perf_counter() - start, cpu_s()
    ctx = mp.get_context("fork")
    with ctx.Pool(spec.workers) as pool:
        results, loop_s, k = loop_replicates(spec, task, fit_s + draw_s, pool=pool)
        pool.terminate()
        pool.join()
    samples = 1000 + 400 * np.array(results)
    assert samples.shape == (k, m)
    return result(
        spec,
        fit_s=fit_s,
        boot_s=draw_s + loop_s,
        boot_fixed_s=draw_s,
        fit_cpu_s=cpu1 - cpu0,
        boot_cpu_s=cpu_s() - cpu1,
        boot_fixed_cpu_s=cpu2 - cpu1,
        replicates_run=k,
        unique_rows=int(rows.size),
        max_diff=diff_to_reference(spec, 1000 + 400 * r),
        workers_peak_mib=workers_peak_mib(),
        notes=notes,
    )


# ---- The older scikit-learn method: logistic regression on the raw rows. Each battle becomes a row
# x = e_a - e_b (sparse), y = 1 if model_a won; every row is duplicated and a tie counts as an a-win in one
# copy and a b-win in the other (FastChat's old notebook), so the log-likelihood is twice the half-win one and
# the MLE is the same. fit_intercept=False, C=1e6 (penalty 5e-7 * |theta|^2 against ~10^5-10^6 rows: nil).


def _sk_design(a, b, o, m):
    from scipy.sparse import csr_matrix

    n = a.size
    rows = np.repeat(np.arange(2 * n), 2)
    cols = np.empty(4 * n, np.int64)
    cols[0::2] = np.concatenate([a, a])
    cols[1::2] = np.concatenate([b, b])
    vals = np.tile([1.0, -1.0], 2 * n)
    x = csr_matrix((vals, (rows, cols)), shape=(2 * n, m))
    tie = (o == _data.TIE) | (o == _data.TIE_BOTHBAD)
    y = np.concatenate([(o == _data.A_WINS) | tie, o == _data.A_WINS]).astype(np.int64)
    return x, y


def _sk_fit(a, b, o, m):
    from sklearn.linear_model import LogisticRegression

    x, y = _sk_design(a, b, o, m)
    lr = LogisticRegression(fit_intercept=False, C=1e6, tol=1e-6, max_iter=1000)
    lr.fit(x, y)
    return lr.coef_[0]


def m_sklearn(spec: Spec) -> dict:
    a, b, o, names = load(spec)
    m, n = len(names), a.size
    import sklearn  # noqa: F401  (not timed)

    start, cpu0 = time.perf_counter(), cpu_s()
    theta = _sk_fit(a, b, o, m)
    fit_s, cpu1 = time.perf_counter() - start, cpu_s()
    rng = np.random.default_rng(spec.seed)

    def one(r):
        idx = rng.integers(0, n, n)  # resample battles with replacement, refit on the raw rows
        return _sk_fit(a[idx], b[idx], o[idx], m)

    results, boot_s, k = loop_replicates(spec, one, fit_s)
    return result(
        spec,
        fit_s=fit_s,
        boot_s=boot_s,
        fit_cpu_s=cpu1 - cpu0,
        boot_cpu_s=cpu_s() - cpu1,
        replicates_run=k,
        max_diff=diff_to_reference(spec, _data.to_elo(theta)),
        notes=["sparse CSR design (FastChat's notebook used a dense one)"],
    )


# ---- choix: ilsr_pairwise_dense on the half-win matrix; bootstrap = the same Poisson resampling of the
# (pair, outcome) cells as ours (numpy's Poisson), each replicate's dense matrix refitted by ILSR.
# choix returns natural-log strengths centred on 0.


def _cells(a, b, o, m):
    """(first, second, first_wins, second_wins, ties) over compared unordered pairs, by bincount."""
    lo, hi = np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64)
    key = lo * m + hi
    a_first = a == lo
    first_won = np.where(a_first, o == _data.A_WINS, o == _data.B_WINS)
    second_won = np.where(a_first, o == _data.B_WINS, o == _data.A_WINS)
    tie = (o == _data.TIE) | (o == _data.TIE_BOTHBAD)
    present = np.flatnonzero(np.bincount(key, minlength=m * m))
    cnt = [np.bincount(key, weights=v, minlength=m * m)[present] for v in (first_won, second_won, tie)]
    return present // m, present % m, cnt[0], cnt[1], cnt[2]


def m_choix(spec: Spec) -> dict:
    import choix

    a, b, o, names = load(spec)
    m = len(names)
    start, cpu0 = time.perf_counter(), cpu_s()
    first, second, fw, sw, tw = _cells(a, b, o, m)
    k_pairs = first.size

    def matrix(fw, sw, tw):
        w = np.zeros((m, m))
        w[first, second] = fw + tw / 2
        w[second, first] = sw + tw / 2
        return w

    theta = choix.ilsr_pairwise_dense(matrix(fw, sw, tw))
    fit_s, fit_cpu = time.perf_counter() - start, cpu_s() - cpu0
    means = np.concatenate([fw, sw, tw])

    def one(r):
        drawn = np.random.default_rng([spec.seed, r]).poisson(means).astype(np.float64)
        return choix.ilsr_pairwise_dense(matrix(drawn[:k_pairs], drawn[k_pairs : 2 * k_pairs], drawn[2 * k_pairs :]))

    cpu1 = cpu_s()
    results, boot_s, k = loop_replicates(spec, one, fit_s)
    return result(
        spec,
        fit_s=fit_s,
        boot_s=boot_s,
        fit_cpu_s=fit_cpu,
        boot_cpu_s=cpu_s() - cpu1,
        replicates_run=k,
        max_diff=diff_to_reference(spec, _data.to_elo(theta)),
    )


# ---- evalica: bradley_terry (its Rust solver, default tolerance 1e-6 and limit 100) and its bootstrap
# (scipy.stats.bootstrap over the raw rows; "percentile": its default BCa needs a jackknife of n refits).
# Scores are pi = exp(theta) normalised by their geometric mean, so theta = log(score).


def _evalica_inputs(a, b, o):
    import evalica

    code = {
        _data.A_WINS: evalica.Winner.X,
        _data.B_WINS: evalica.Winner.Y,
        _data.TIE: evalica.Winner.Draw,
        _data.TIE_BOTHBAD: evalica.Winner.Draw,
    }
    winners = [code[v] for v in o.tolist()]
    return a.tolist(), b.tolist(), winners


def m_evalica(spec: Spec) -> dict:
    import evalica
    import pandas as pd

    a, b, o, names = load(spec)
    m = len(names)
    xs, ys, winners = _evalica_inputs(a, b, o)
    index = pd.Index(range(m))
    start, cpu0 = time.perf_counter(), cpu_s()
    fit = evalica.bradley_terry(xs, ys, winners, index=index)
    fit_s, fit_cpu = time.perf_counter() - start, cpu_s() - cpu0
    theta = np.log(fit.scores.reindex(index).to_numpy(np.float64))
    boot_s = boot_cpu = None
    if spec.replicates:
        start, cpu0 = time.perf_counter(), cpu_s()
        boot = evalica.bootstrap(
            evalica.bradley_terry,
            xs,
            ys,
            winners,
            index=index,
            n_resamples=spec.replicates,
            bootstrap_method="percentile",
            random_state=spec.seed,
        )
        boot_s, boot_cpu = time.perf_counter() - start, cpu_s() - cpu0
        assert boot.distribution.shape == (spec.replicates, m)
    return result(
        spec,
        fit_s=fit_s,
        boot_s=boot_s,
        fit_cpu_s=fit_cpu,
        boot_cpu_s=boot_cpu,
        replicates_run=spec.replicates,
        max_diff=diff_to_reference(spec, _data.to_elo(theta)),
        iterations=int(fit.iterations),
        solver=fit.solver,
        version=evalica.__version__,
        notes=[f"solver {fit.solver}, tolerance 1e-6, limit 100 (defaults): {fit.iterations} iterations"],
    )


# ---- arena-rank (LMArena): PairDataset.from_pandas + BradleyTerry (optax L-BFGS in JAX) and its
# compute_ratings_and_cis(ci_method="bootstrap"): multinomial counts over the unique rows, one refit per
# replicate in a multiprocessing Pool. Its loss uses outcome 1 / 0 / 0.5 (ties half a win: the same
# likelihood as the reference); ratings come back as 1000 + 400/ln(10) * theta, the same Elo scale, and we
# re-centre them on mean 1000. Its Pool must use "spawn": with the default "fork" the workers deadlock on
# JAX's threads (JAX warns that fork is incompatible with it), so the benchmark sets the start method.


def m_arena_rank(spec: Spec) -> dict:
    import multiprocessing as mp

    mp.set_start_method("spawn", force=True)
    import jax
    import pandas as pd
    from arena_rank.models.bradley_terry import BradleyTerry
    from arena_rank.utils.data_utils import PairDataset

    a, b, o, names = load(spec)
    name_arr = np.array(names, dtype=object)
    df = pd.DataFrame(
        {"model_a": name_arr[a], "model_b": name_arr[b], "winner": np.array(_data.OUTCOME_LABELS, dtype=object)[o]}
    )
    df.loc[df.winner == "tie (bothbad)", "winner"] = "both_bad"  # arena-rank's name for it (also 0.5)
    start, cpu0 = time.perf_counter(), cpu_s()
    dataset = PairDataset.from_pandas(df)
    model = BradleyTerry(n_competitors=len(dataset.competitors))
    model.fit(dataset)
    fit_ratings = np.asarray(model.params["ratings"]) * model.alpha + model.init_rating
    fit_s, fit_cpu = time.perf_counter() - start, cpu_s() - cpu0
    boot_s = boot_cpu = None
    if spec.replicates:
        start, cpu0 = time.perf_counter(), cpu_s()
        out = model.compute_ratings_and_cis(
            dataset, ci_method="bootstrap", num_bootstrap=spec.replicates, n_jobs=spec.workers, seed=spec.seed
        )
        np.asarray(out["rating_lower"])
        boot_s, boot_cpu = time.perf_counter() - start, cpu_s() - cpu0
    position = {name: i for i, name in enumerate(names)}
    ratings = np.full(len(names), np.nan)
    ratings[[position[c] for c in dataset.competitors]] = fit_ratings
    return result(
        spec,
        fit_s=fit_s,
        boot_s=boot_s,
        fit_cpu_s=fit_cpu,
        boot_cpu_s=boot_cpu,
        replicates_run=spec.replicates,
        max_diff=diff_to_reference(spec, ratings),
        jax_version=jax.__version__,
        notes=[f"jax {jax.__version__}; Pool start method 'spawn' (fork deadlocks under JAX)"],
    )


METHODS = {
    "reference": m_reference,
    "ours_fit": m_ours_fit,
    "ours_bootstrap": m_ours_bootstrap,
    "ours_e2e": m_ours_e2e,
    "ours_elo": m_ours_elo,
    "fastchat": m_fastchat,
    "sklearn": m_sklearn,
    "choix": m_choix,
    "evalica": m_evalica,
    "arena_rank": m_arena_rank,
}


def main() -> None:
    spec = Spec(json.loads(sys.argv[1]))
    out = METHODS[spec.method](spec)
    out["python"] = sys.executable
    print("BENCH-RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
