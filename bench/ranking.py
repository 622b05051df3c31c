"""Benchmark of the ranking library against the Bradley-Terry tools people use today.

    .venv/bin/python bench/ranking.py                       # 50 x 100k, 200 x 1M, 1000 x 3M; 1000 replicates
    .venv/bin/python bench/ranking.py --sizes 50x100k,200x1M
    .venv/bin/python bench/ranking.py --quick               # small sizes, 100 replicates, about a minute
    .venv/bin/python bench/ranking.py --only-ours --sizes 200x1M

For each size it prints one table: the scipy reference fit, ours (from encoded arrays, cold and warm, and end to
end from the battle file), our online Elo, and the baselines measured in the same run, each with its point-fit
time, its fit + bootstrap time, peak memory, its largest difference from the scipy reference in Elo points and
its time relative to ours; then a summary that checks the project's performance targets. See bench/README.md
for what each row measures and why.

Every measurement runs in a fresh subprocess (bench/_child.py). A baseline that would exceed the time budget
(--budget, default 300 s) is timed on fewer replicates and scaled linearly; its row says so.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

_BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
# Run as a script, sys.path[0] is bench/: keep it (for _data), but this file must never be imported as the
# `ranking` package, which is why the measurements that import `ranking` run in bench/_child.py.
if _BENCH_DIR not in sys.path:
    sys.path.insert(0, _BENCH_DIR)

import _data  # noqa: E402

CHILD = Path(_BENCH_DIR) / "_child.py"
DEFAULT_SIZES = "50x100k,200x1M,1000x3M"
QUICK_SIZES = "100x50k"
BASELINES = ("fastchat", "sklearn", "arena_rank", "choix", "evalica")
PEER_PACKAGES = {
    "sklearn": "scikit-learn",
    "arena_rank": "arena-rank",
    "choix": "choix",
    "evalica": "evalica",
    "fastchat": "scipy",
}
PEER_IMPORTS = {
    "sklearn": "sklearn",
    "arena_rank": "arena_rank",
    "choix": "choix",
    "evalica": "evalica",
    "fastchat": "scipy",
}
LABELS = {
    "reference": "scipy reference: L-BFGS-B, gtol 1e-12 (fit only)",
    "ours_cold": "ours, from arrays, cold (incl. JIT compile)",
    "ours_warm": "ours, from arrays, warm (compiled)",
    "ours_cached": "ours, from arrays, cold + XLA cache on disk",
    "ours_e2e": "ours, end to end from the file (+imports)",
    "ours_e2e_cached": "ours, end to end + XLA cache on disk",
    "ours_elo": "ours, online Elo, cold / warm",
    "fastchat": "FastChat current: scipy L-BFGS-B, Pool(2)",
    "sklearn": "FastChat older: sklearn LogisticRegression",
    "arena_rank": "arena-rank BradleyTerry (LMArena)",
    "choix": "choix ilsr_pairwise_dense, looped",
    "evalica": "evalica bradley_terry + bootstrap",
}
# Opaque bootstraps (the peer runs all replicates in one call): a pilot run with this many replicates, then,
# if the full count would exceed the budget, a second run sized to --sample-seconds, extrapolated linearly.
PILOT_REPLICATES = {"arena_rank": 4, "evalica": 2}
PROBE_MAX_MODELS = 300
TARGETS = {
    "boot_arrays_s": 2.0,
    "e2e_s": 10.0,
    "fastchat_x_200x1M": 20.0,
    "fastchat_x_1000x3M": 10.0,
    "elo_1M_s": 0.5,
    "memory_slack": 1.25,
    "memory_slack_mib": 16.0,
}


# ----------------------------------------------------------------------------------------------- running


class Runner:
    def __init__(self, args, log_dir: Path):
        self.args = args
        self.log_dir = log_dir

    def child(
        self,
        method: str,
        paths: _data.Dataset,
        *,
        replicates: int = 0,
        python: str | None = None,
        tag: str = "",
        **extra,
    ) -> dict:
        spec = {
            "method": method,
            "arrays": str(paths.arrays),
            "jsonl": str(paths.jsonl),
            "reference": str(paths.reference),
            "replicates": replicates,
            "budget": self.args.budget,
            "sample_seconds": self.args.sample_seconds,
            "seed": self.args.seed,
            "workers": self.args.workers,
            **extra,
        }
        log = self.log_dir / f"{paths.arrays.parent.name}-{method}{tag}-{replicates}.log"
        timeout = max(900.0, 3 * self.args.budget)
        started = time.perf_counter()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # Own process group, so that a measurement that hangs is killed together with its pool workers.
        proc = subprocess.Popen(
            [python or sys.executable, str(CHILD), json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            log.write_text(stdout + "\n--- stderr ---\n" + stderr)
            return {"method": method, "error": f"timed out after {timeout:.0f} s", "log": str(log)}
        log.write_text(stdout + "\n--- stderr ---\n" + stderr)
        for line in reversed(stdout.splitlines()):
            if line.startswith("BENCH-RESULT "):
                out = json.loads(line[len("BENCH-RESULT ") :])
                out["wall_s"] = time.perf_counter() - started
                return out
        last = [ln for ln in stderr.strip().splitlines() if ln.strip()][-1:] or [f"exit {proc.returncode}"]
        return {"method": method, "error": last[0][:160], "log": str(log)}


def scale_loop(res: dict, replicates: int) -> dict:
    """Loop-type baselines stop early past the budget: scale the loop time linearly to all replicates."""
    if "error" in res:
        return res
    k = res.get("replicates_run") or 0
    if res.get("boot_s") is not None and 0 < k < replicates:
        for key in ("boot_s", "boot_cpu_s"):
            if res.get(key) is None:
                continue
            fixed = res.get(key.replace("boot_", "boot_fixed_")) or 0.0  # done once for all replicates
            res[key.replace("_s", "_measured_s")] = res[key]
            res[key] = fixed + (res[key] - fixed) * replicates / k
        res["scaled_from"] = k
    return res


def run_opaque(runner: Runner, method: str, paths, replicates: int, python=None) -> dict:
    """Peers whose bootstrap is one call: pilot, then full run or a sized run extrapolated through the pilot."""
    k1 = min(PILOT_REPLICATES[method], replicates)
    pilot = runner.child(method, paths, replicates=k1, python=python, tag="-pilot")
    if "error" in pilot or k1 == replicates:
        return pilot
    per = pilot["boot_s"] / k1
    if pilot["fit_s"] + per * replicates <= runner.args.budget:
        return runner.child(method, paths, replicates=replicates, python=python)
    if pilot["boot_s"] >= runner.args.sample_seconds:
        # The pilot alone used the sampling time: scale it proportionally (its pool start-up is then counted
        # R/k1 times, which overstates the peer's time; the note says so).
        for key in ("boot_s", "boot_cpu_s"):
            pilot[key.replace("_s", "_measured_s")] = pilot[key]
            pilot[key] = pilot[key] * replicates / k1
        pilot["scaled_from"] = k1
        pilot["notes"] = pilot.get("notes", []) + [
            "scaled proportionally from the pilot alone (start-up counted each time: an overestimate)"
        ]
        return pilot
    k2 = int(min(replicates - 1, max(2 * k1, runner.args.sample_seconds / per)))
    second = runner.child(method, paths, replicates=k2, python=python)
    if "error" in second:
        return second
    for key in ("boot_s", "boot_cpu_s"):
        slope = (second[key] - pilot[key]) / (k2 - k1)
        if slope <= 0:  # timing noise at tiny counts: fall back to the proportional estimate
            slope = second[key] / k2
        second[key.replace("_s", "_measured_s")] = second[key]
        second[key] = second[key] + slope * (replicates - k2)
    second["scaled_from"] = k2
    second["pilot"] = {"replicates": k1, "boot_s": pilot["boot_s"], "boot_cpu_s": pilot["boot_cpu_s"]}
    return second


def measure_size(runner: Runner, size: _data.Size, args) -> dict:
    paths = _data.ensure_dataset(size, args.seed, Path(args.data_dir), log=print)
    R = args.replicates
    rows: dict[str, dict] = {}
    step = lambda name: print(f"  measuring {name} ...", flush=True)  # noqa: E731
    step("scipy reference")
    rows["reference"] = runner.child("reference", paths)
    if "error" in rows["reference"]:
        raise SystemExit(f"the scipy reference failed at {size.label}: {rows['reference']['error']}")
    step("ours")
    rows["ours_fit"] = runner.child("ours_fit", paths)
    rows["ours_bootstrap"] = runner.child("ours_bootstrap", paths, replicates=R)
    rows["ours_e2e"] = runner.child("ours_e2e", paths, replicates=R)
    # Fresh processes again, with compiled code kept on disk as `python -m ranking` keeps it: a first run
    # fills the folder (not timed), then the measured runs load instead of compiling.
    cache = str(runner.log_dir / f"xla-cache-{size.key}")
    primed = runner.child("ours_bootstrap", paths, replicates=2, xla_cache=cache, tag="-prime")
    if "error" in primed:
        rows["ours_cached"] = rows["ours_e2e_cached"] = primed
    else:
        rows["ours_cached"] = runner.child("ours_bootstrap", paths, replicates=R, xla_cache=cache, tag="-cached")
        rows["ours_e2e_cached"] = runner.child("ours_e2e", paths, replicates=R, xla_cache=cache, tag="-cached")
    rows["ours_elo"] = runner.child("ours_elo", paths)
    # The memory probe (same models, a tenth of the battles) is cheap only while models are few: with 1000
    # models a tenth of 3M battles leaves pairs with under one battle each, where replicates converge slowly.
    if size.battles >= 200_000 and size.models <= PROBE_MAX_MODELS and not args.no_memory_probe:
        sub = size.battles // 10
        rows["ours_probe"] = runner.child("ours_bootstrap", paths, replicates=R, subsample=sub, tag="-probe")
        rows["ours_probe"]["battles"] = sub
    for method in args.baselines:
        step(method)
        if method in PILOT_REPLICATES:
            python = args.arena_rank_python if method == "arena_rank" else None
            rows[method] = run_opaque(runner, method, paths, R, python=python)
        else:
            rows[method] = scale_loop(runner.child(method, paths, replicates=R), R)
    return {"size": list(size), "label": size.label, "replicates": R, "rows": rows}


# ---------------------------------------------------------------------------------------------- printing


def _t(x, approx=False) -> str:
    if x is None:
        return "-"
    s = f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 1000 else f"{x:.0f}"
    return ("~" + s) if approx else s


def _mib(res) -> str:
    if res.get("peak_mib") is None:
        return "-"
    out = f"{res['peak_mib']:.0f}"
    if res.get("workers_peak_mib"):
        out += f" +{res.get('workers', 2)}x{res['workers_peak_mib']:.0f}"
    return out


def _diff(x) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    return f"{x:.2e}" if x < 0.01 else f"{x:.3f}" if x < 10 else f"{x:.1f}"


def _ratio(x, ours) -> str:
    if x is None or not ours:
        return "-"
    r = x / ours
    return f"{r:.2f}x" if r < 0.1 else f"{r:.1f}x" if r < 100 else f"{r:.0f}x"


def table_rows(result: dict) -> list[list[str]]:
    rows = result["rows"]
    R = result["replicates"]
    ours_fit = rows["ours_fit"].get("fit_s")
    ours_total = rows["ours_bootstrap"].get("boot_s")
    ours_cpu = rows["ours_bootstrap"].get("boot_cpu_s")
    out = []

    def add(key, label, res, *, reps, fit, total, cpu=None, approx=False, peak=None, ratios=True):
        if "error" in res:
            out.append([label, "failed", "", "", "", "", "", "", "", res["error"]])
            return
        out.append(
            [
                label,
                reps,
                _t(fit),
                _t(total, approx),
                _t(cpu, approx),
                peak if peak is not None else _mib(res),
                _diff(res.get("max_diff")),
                _ratio(fit, ours_fit) if ratios else "-",
                _ratio(total, ours_total) if ratios else "-",
                _ratio(cpu, ours_cpu) if ratios else "-",
            ]
        )

    ref = rows["reference"]
    add("reference", LABELS["reference"], ref, reps="-", fit=ref.get("fit_s"), total=None)
    fit, boot = rows["ours_fit"], rows["ours_bootstrap"]
    if "error" in fit or "error" in boot:
        add("ours", LABELS["ours_cold"], fit if "error" in fit else boot, reps=R, fit=None, total=None)
    else:
        add(
            "ours",
            LABELS["ours_cold"],
            boot,
            reps=str(R),
            fit=fit["fit_s"],
            total=boot["boot_s"],
            cpu=boot.get("boot_cpu_s"),
        )
        add(
            "ours",
            LABELS["ours_warm"],
            boot,
            reps=str(R),
            fit=fit["fit_warm_s"],
            total=boot["boot_warm_s"],
            cpu=boot.get("boot_warm_cpu_s"),
            peak=f"+{boot['growth_mib']:.0f} after enc." if boot.get("growth_mib") is not None else "-",
            ratios=False,
        )
    cached = rows.get("ours_cached")
    if cached is not None:
        add(
            "ours_cached",
            LABELS["ours_cached"],
            cached,
            reps=str(R),
            fit=None,
            total=cached.get("boot_s"),
            cpu=cached.get("boot_cpu_s"),
            ratios=False,
        )
    for key in ("ours_e2e", "ours_e2e_cached"):
        if key in rows:
            e2e = rows[key]
            add(key, LABELS[key], e2e, reps=str(R), fit=None, total=e2e.get("boot_s"), cpu=e2e.get("boot_cpu_s"))
    elo = rows["ours_elo"]
    if "error" in elo:
        add("ours_elo", LABELS["ours_elo"], elo, reps="-", fit=None, total=None)
    else:
        out.append(
            [
                LABELS["ours_elo"],
                "-",
                f"{_t(elo['fit_s'])} / {_t(elo['fit_warm_s'])}",
                "-",
                "-",
                _mib(elo),
                "n/a",
                _ratio(elo["fit_s"], ours_fit),
                "-",
                "-",
            ]
        )
    for method in BASELINES:
        if method not in rows:
            continue
        res = rows[method]
        total = None if res.get("boot_s") is None else (res.get("fit_s") or 0) + res["boot_s"]
        cpu = None if res.get("boot_cpu_s") is None else (res.get("fit_cpu_s") or 0) + res["boot_cpu_s"]
        reps = str(R) if not res.get("scaled_from") else f"{R} (scaled from {res['scaled_from']})"
        add(
            method,
            LABELS[method],
            res,
            reps=reps,
            fit=res.get("fit_s"),
            total=total,
            cpu=cpu,
            approx=bool(res.get("scaled_from")),
        )
    return out


HEADERS = [
    "method",
    "replicates",
    "fit (s)",
    "fit+boot (s)",
    "CPU (s)",
    "peak RSS (MiB)",
    "max|d| Elo",
    "fit x ours",
    "boot x ours",
    "CPU x ours",
]


def format_table(result: dict) -> str:
    body = table_rows(result)
    widths = [max(len(HEADERS[i]), *(len(r[i]) for r in body)) for i in range(len(HEADERS))]
    align = ["<", "<"] + [">"] * (len(HEADERS) - 2)

    def line(cells):
        return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths)).rstrip()

    ref = result["rows"]["reference"].get("info", {})
    title = (
        f"{result['label']} battles ({result['size'][0]} models x {result['size'][1]:,} battles), "
        f"{result['replicates']} bootstrap replicates"
    )
    if result.get("load_before") is not None:
        title += (
            f"; load average {result['load_before']:.1f} before, {result['load_after']:.1f} after "
            f"(the machine has {os.cpu_count()} CPUs)"
        )
    rule = "-" * len(line(HEADERS))
    lines = [title, rule, line(HEADERS), rule, *(line(r) for r in body), rule]
    notes = []
    if ref:
        notes.append(
            f"reference: {ref.get('iterations')} L-BFGS-B iterations, max|grad| {ref.get('grad_max'):.1e}, "
            f"one more Newton step would move it {ref.get('newton_step_elo'):.1e} Elo"
        )
    for method in ("fastchat", "sklearn", "arena_rank", "choix", "evalica"):
        res = result["rows"].get(method, {})
        for note in res.get("notes", []):
            notes.append(f"{method}: {note}")
        if res.get("scaled_from"):
            pilot = res.get("pilot")
            how = (
                f"extrapolated through runs of {pilot['replicates']} and {res['scaled_from']} replicates"
                if pilot
                else f"timed on {res['scaled_from']} replicates ({_t(res['boot_measured_s'])} s) and scaled linearly"
            )
            notes.append(f"{method}: bootstrap would exceed the {result['budget']:.0f} s budget: {how}")
    boot = result["rows"]["ours_bootstrap"]
    if "error" not in boot:
        notes.append(
            f"ours: JAX import {boot.get('import_s', 0):.2f} s (not in the 'from arrays' rows); "
            f"'after enc.' = memory the fit + bootstrap add once the pair counts exist"
        )
    lines += [f"  {n}" for n in notes]
    return "\n".join(lines)


FOOTER = """\
fit (s): point fit on all battles from encoded arrays (incl. the method's own preparation); fit+boot (s): that
plus the bootstrap replicates (for ours, bootstrap_ratings includes its fit). Imports are not timed except in
the end-to-end row; JIT compilation is timed in the cold rows (ours, arena-rank). ~ marks a time scaled from
fewer replicates. peak RSS: the measuring process's VmHWM; "+2xN": its 2 pool workers peaked at N MiB each.
CPU (s): user + system CPU of fit+boot, pool workers included: less sensitive than wall time to other work on
the machine. max|d| Elo: largest |rating - scipy reference| after centring both on mean 1000 (Elo scale,
400/ln 10 per nat). x ours: time (or CPU) / ours cold from arrays (fit, or fit+boot)."""


# ----------------------------------------------------------------------------------------------- summary


def _get(results, key, row, field):
    for res in results:
        if res["size"] and tuple(res["size"]) == key and row in res["rows"] and "error" not in res["rows"][row]:
            return res["rows"][row].get(field)
    return None


def _cpu_ratio(results, key, method) -> str:
    """Peer's fit+boot CPU time / ours cold, as text."""
    fit, boot = _get(results, key, method, "fit_cpu_s"), _get(results, key, method, "boot_cpu_s")
    ours = _get(results, key, "ours_bootstrap", "boot_cpu_s")
    if boot is None or not ours:
        return "n/a"
    return _ratio((fit or 0) + boot, ours)


def summary(results: list[dict], replicates: int) -> list[str]:
    lines = []
    mid, big = (200, 1_000_000), (1000, 3_000_000)
    note = "" if replicates == 1000 else f" [measured at {replicates} replicates; the target is for 1000]"

    def check(name, value, ok, detail):
        if value is None:
            lines.append(f"  [ -- ] {name}: not measured in this run")
        else:
            lines.append(f"  [{'PASS' if ok else 'MISS'}] {name}: {detail}")

    cold = _get(results, mid, "ours_bootstrap", "boot_s")
    cold_cpu = _get(results, mid, "ours_bootstrap", "boot_cpu_s")
    warm = _get(results, mid, "ours_bootstrap", "boot_warm_s")
    cached = _get(results, mid, "ours_cached", "boot_s")
    check(
        "1000 replicates, 200 x 1M, from encoded arrays < 2 s (fresh process, compiling)",
        cold,
        cold is not None and cold < TARGETS["boot_arrays_s"],
        f"{_t(cold)} s cold incl. JIT compile, CPU {_t(cold_cpu)} s ({_t(warm)} s warm){note}",
    )
    check(
        "same, fresh process with the XLA cache on disk (as `python -m ranking` runs)",
        cached,
        cached is not None and cached < TARGETS["boot_arrays_s"],
        f"{_t(cached)} s{note}",
    )
    for row, how in (("ours_e2e", "compiling"), ("ours_e2e_cached", "XLA cache on disk")):
        e2e = _get(results, mid, row, "boot_s")
        check(
            f"same, end to end from the file < 10 s ({how})",
            e2e,
            e2e is not None and e2e < TARGETS["e2e_s"],
            f"{_t(e2e)} s (imports + read + encode + fit + bootstrap){note}",
        )
    for key, target, label in (
        (mid, TARGETS["fastchat_x_200x1M"], "200 x 1M"),
        (big, TARGETS["fastchat_x_1000x3M"], "1000 x 3M"),
    ):
        ours = _get(results, key, "ours_bootstrap", "boot_s")
        fc_fit, fc_boot = _get(results, key, "fastchat", "fit_s"), _get(results, key, "fastchat", "boot_s")
        fc = None if fc_boot is None or ours is None else fc_fit + fc_boot
        cpu_x = _cpu_ratio(results, key, "fastchat")
        check(
            f">= {target:.0f}x faster than FastChat's current method at {label}",
            fc,
            fc is not None and fc / ours >= target,
            f"{fc / ours:.1f}x ({_t(fc)} s vs {_t(ours)} s; CPU time {cpu_x}){note}" if fc else "",
        )
    for method, name in (("arena_rank", "arena-rank"), ("choix", "choix's dense ILSR loop")):
        parts, ok, any_ = [], True, False
        for res in results:
            peer = res["rows"].get(method)
            ours = res["rows"]["ours_bootstrap"].get("boot_s")
            if not peer or "error" in peer or peer.get("boot_s") is None or ours is None:
                continue
            any_ = True
            total = (peer.get("fit_s") or 0) + peer["boot_s"]
            ok &= total > ours
            warm = res["rows"]["ours_bootstrap"].get("boot_warm_s")
            parts.append(
                f"{res['label']}: {_ratio(total, ours)} ("
                + (f"{_ratio(total, warm)} warm, " if warm else "")
                + f"CPU {_cpu_ratio(results, tuple(res['size']), method)})"
            )
        check(f"faster than {name} at every size", any_ or None, ok, ", ".join(parts) + note)
    elo_key = next((tuple(r["size"]) for r in results if r["size"][1] == 1_000_000), None)
    elo_cold = _get(results, elo_key, "ours_elo", "fit_s") if elo_key else None
    elo_warm = _get(results, elo_key, "ours_elo", "fit_warm_s") if elo_key else None
    check(
        f"online Elo over 1M battles well under a second (< {TARGETS['elo_1M_s']} s, cold)",
        elo_cold,
        elo_cold is not None and elo_cold < TARGETS["elo_1M_s"],
        f"{_t(elo_cold)} s cold incl. compile, {_t(elo_warm)} s warm",
    )
    growth = [
        (r["label"], r["rows"]["ours_bootstrap"].get("growth_mib"), r["rows"].get("ours_probe", {}))
        for r in results
        if "error" not in r["rows"]["ours_bootstrap"]
    ]
    parts, ok, any_ = [], True, False
    for label, full, probe in growth:
        if full is None:
            continue
        text = f"{label}: +{full:.0f} MiB"
        if probe and "error" not in probe and probe.get("growth_mib") is not None:
            any_ = True
            limit = TARGETS["memory_slack"] * probe["growth_mib"] + TARGETS["memory_slack_mib"]
            ok &= full <= limit
            text += f" (first {probe['battles']:,} battles: +{probe['growth_mib']:.0f} MiB)"
        parts.append(text)
    check(
        "memory after encoding grows with models^2, not battles",
        any_ or None,
        ok,
        "; ".join(parts) + " [PASS when 10x the battles adds at most 25% + 16 MiB]",
    )
    return lines


# ---------------------------------------------------------------------------------------------------- CLI


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", default=None, help=f"comma-separated MODELSxBATTLES (default {DEFAULT_SIZES})")
    p.add_argument("--replicates", type=int, default=None, help="bootstrap replicates (default 1000)")
    p.add_argument(
        "--quick", action="store_true", help=f"size {QUICK_SIZES}, 100 replicates, 10 s budget: about a minute"
    )
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds a baseline may take at one size before it is timed on fewer replicates and scaled (default 300)",
    )
    p.add_argument(
        "--sample-seconds", type=float, default=None, help="how long a scaled baseline is sampled (default budget / 5)"
    )
    p.add_argument("--only-ours", action="store_true", help="skip every baseline")
    p.add_argument("--skip", default="", help=f"comma-separated baselines to skip: {', '.join(BASELINES)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="pool size of FastChat's method and arena-rank")
    p.add_argument("--data-dir", default=str(_data.RESULTS_DIR / "data"), help="cache of generated battles")
    p.add_argument(
        "--arena-rank-python",
        default=None,
        help="interpreter for arena-rank (it pins jax==0.8.1, numpy==2.3.3); default: "
        "bench/results/venv-arena-rank/bin/python if it exists, else this one",
    )
    p.add_argument("--no-memory-probe", action="store_true", help="skip the 10x-fewer-battles memory run")
    p.add_argument("--json", default=None, help="where to save the raw results (default bench/results/)")
    p.add_argument(
        "--from-json", default=None, metavar="PATH", help="measure nothing: print the tables and summary of a saved run"
    )
    args = p.parse_args(argv)
    args.sizes = args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)
    args.replicates = args.replicates or (100 if args.quick else 1000)
    args.budget = args.budget or (10.0 if args.quick else 300.0)
    args.sample_seconds = args.sample_seconds or args.budget / 5
    if args.replicates < 2:
        p.error("--replicates must be at least 2")
    try:
        args.size_list = [_data.parse_size(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError as e:
        p.error(str(e))
    skip = {s.strip().replace("-", "_") for s in args.skip.split(",") if s.strip()}
    unknown = skip - set(BASELINES)
    if unknown:
        p.error(f"unknown baselines in --skip: {', '.join(sorted(unknown))}")
    args.baselines = [] if args.only_ours else [b for b in BASELINES if b not in skip]
    if args.arena_rank_python is None:
        pinned = _data.RESULTS_DIR / "venv-arena-rank" / "bin" / "python"
        args.arena_rank_python = str(pinned) if pinned.exists() else sys.executable
    return args


def _load() -> float | None:
    """1-minute load average: other work on the machine inflates every time in the table."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _peer_available(method: str, python: str) -> bool:
    """Is the peer importable by the interpreter that will run it (without importing it here)?"""
    proc = subprocess.run(
        [python, "-c", f"import importlib.util as u, sys; sys.exit(u.find_spec('{PEER_IMPORTS[method]}') is None)"],
        capture_output=True,
    )
    return proc.returncode == 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        print(f"saved run {args.from_json}\n  {saved.get('versions', '')}")
        for result in saved["results"]:
            print()
            print(format_table(result))
        print()
        print(FOOTER)
        print("\nTargets (2-core machine, no GPU):")
        print("\n".join(summary(saved["results"], saved["results"][0]["replicates"] if saved["results"] else 0)))
        return 0
    missing = [
        m
        for m in args.baselines
        if not _peer_available(m, args.arena_rank_python if m == "arena_rank" else sys.executable)
    ]
    for m in missing:
        print(
            f"note: {PEER_PACKAGES[m]} is not installed: skipping {m} "
            f"(pip install choix evalica arena-rank scikit-learn pandas)"
        )
    args.baselines = [m for m in args.baselines if m not in missing]
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    log_dir = _data.RESULTS_DIR / "logs" / stamp
    log_dir.mkdir(parents=True, exist_ok=True)
    runner = Runner(args, log_dir)

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    versions = ", ".join(
        f"{d} {_version(d)}" for d in ("numpy", "scipy", "jax", "choix", "evalica", "arena-rank", "scikit-learn")
    )
    print(f"arena ranking benchmark: {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}")
    print(f"  {versions}")
    print(f"  arena-rank runs under {args.arena_rank_python}")
    print(
        f"  replicates {args.replicates}, baseline budget {args.budget:.0f} s (sampled for "
        f"{args.sample_seconds:.0f} s when over), logs in {log_dir}"
    )

    results = []
    for size in args.size_list:
        print(f"\n== {size.label}", flush=True)
        started = time.perf_counter()
        load_before = _load()
        result = measure_size(runner, size, args)
        result["budget"] = args.budget
        result["load_before"] = load_before
        result["load_after"] = _load()
        result["wall_s"] = time.perf_counter() - started
        results.append(result)
        print()
        print(format_table(result), flush=True)
    print()
    print(FOOTER)
    print("\nTargets (2-core machine, no GPU):")
    for line in summary(results, args.replicates):
        print(line)
    out = Path(args.json) if args.json else _data.RESULTS_DIR / f"ranking-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "args": {k: v for k, v in vars(args).items() if k != "size_list"},
                "versions": versions,
                "results": results,
            },
            indent=1,
            default=str,
        )
    )
    print(f"\nraw results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
