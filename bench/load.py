"""The service's load test as issue #7 states it: on loopback, against a `make run`-style gunicorn on PostgreSQL,
sustained battles and votes per second, p50 / p99, error rate, and 200 open streams, in at most 10 minutes.

    .venv/bin/python bench/load.py                        # PostgreSQL at $ARENA_BENCH_POSTGRES_URL (~4 min)
    .venv/bin/python bench/load.py --postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/arena_bench
    .venv/bin/python bench/load.py --quick                # small sizes, ~30 s: the harness works, no verdict
    .venv/bin/python bench/load.py --vote-seconds 30      # any other bench/service.py option passes through

The harness is bench/service.py (its docstring and bench/README.md say how each phase is made); this file only
runs it on PostgreSQL with the issue's sizes, stops it after --minutes (10), and sums up: one row per phase
(operations per second, p50, p99, errors out of attempts; the open-loop votes twice, quiet and while the builder
process builds snapshots back to back beside the server) and the issue's targets as PASS / MISS lines:
300 votes/s offered, answered with p99 < 100 ms and no error; 200 streams open at once, all ending ready.
The schema public of the PostgreSQL database is dropped and recreated: give it a database of its own.
Exit status: 0 when the run completed (1 with --strict when a target is missed), else bench/service.py's.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _service():
    spec = importlib.util.spec_from_file_location("bench_service", HERE / "service.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_service", module)  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


class OutOfTime(KeyboardInterrupt):
    """Raised by the alarm at --minutes: bench/service.py stops its servers as for Ctrl-C."""


def summary(run: dict, *, quick: bool, targets) -> tuple[list[str], bool]:
    """The per-phase rows and the target lines of one PostgreSQL run (bench/service.py's JSON), and whether
    every target was met."""
    phases = run.get("phases", {})
    rows = [("phase", "per second", "p50 ms", "p99 ms", "errors")]

    def errors(phase: dict, done: int) -> str:
        failed = phase.get("failures", 0) + phase.get("prepare_failures", 0)
        return f"{failed} / {done + failed}" + (f" ({100 * failed / (done + failed):.2f} %)" if failed else "")

    if "streams" in phases:
        st = phases["streams"]
        rows.append(
            (
                f"streams open at once ({st['requested']} requested; p50/p99: first delta)",
                f"{st['peak']} held",
                _n(st.get("ttfd_p50_ms")),
                _n(st.get("ttfd_p99_ms")),
                errors(st, st["ready"]),
            )
        )
    for name, label in (("battles_recorded", "battles, recorded answers"), ("battles_echo", "battles, endpoints")):
        if name in phases:
            b = phases[name]
            rows.append(
                (
                    f"{label} (C={b['concurrency']}, {b['elapsed']:.0f} s)",
                    f"{b['per_s']:.1f}",
                    _n(b["p50_ms"]),
                    _n(b["p99_ms"]),
                    errors(b, b["battles"]),
                )
            )
    if "votes_closed" in phases:
        v = phases["votes_closed"]
        rows.append(
            (
                f"votes, closed loop (C={v['concurrency']})",
                f"{v['per_s']:.0f}",
                _n(v["p50_ms"]),
                _n(v["p99_ms"]),
                errors(v, v["votes"]),
            )
        )
    if "votes_open" in phases:
        v = phases["votes_open"]
        rows.append(
            (
                f"votes at {v['offered_per_s']:g}/s offered ({v['elapsed']:.0f} s)",
                f"{v['per_s']:.0f}",
                _n(v["p50_ms"]),
                _n(v["p99_ms"]),
                errors(v, v["votes"]),
            )
        )
    if "per_s" in phases.get("votes_open_build", {}):
        v = phases["votes_open_build"]
        running = f"{v['builds_finished']} builds done" + (", one running" if v["building_at_end"] else "")
        rows.append(
            (
                f"votes at {v['offered_per_s']:g}/s offered, while snapshot builds run ({running})",
                f"{v['per_s']:.0f}",
                _n(v["p50_ms"]),
                _n(v["p99_ms"]),
                errors(v, v["votes"]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]

    rate, p99_limit, streams = targets
    met = True
    if quick:
        lines.append("issue #7 targets: not judged in --quick mode (too few streams and votes)")
        return lines, met
    lines.append(f"issue #7 targets (loopback, PostgreSQL, {os.cpu_count()} cores shared with whatever else runs):")
    v = phases.get("votes_open")
    if v is not None:
        failed = v.get("failures", 0) + v.get("prepare_failures", 0)
        ok = (
            v["offered_per_s"] >= rate
            and v["per_s"] >= 0.97 * rate
            and v["p99_ms"] is not None
            and v["p99_ms"] < p99_limit
            and failed == 0
        )
        met &= ok
        lines.append(
            f"  {'PASS' if ok else 'MISS'}  {rate:g} votes/s with p99 < {p99_limit:g} ms and no error: "
            f"{v['per_s']:.0f}/s done at {v['offered_per_s']:g}/s offered, p99 {_n(v['p99_ms'])} ms, "
            f"{failed} errors"
        )
    st = phases.get("streams")
    if st is not None:
        ok = st["peak"] >= streams and st["ready"] >= streams and st.get("failures", 0) == 0
        met &= ok
        lines.append(
            f"  {'PASS' if ok else 'MISS'}  {streams} open streams at once: {st['peak']} held together, "
            f"{st['ready']} ended ready, {st.get('failures', 0)} errors"
        )
    return lines, met


def _n(value) -> str:
    return "-" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/load.py",
        description=__doc__.split("\n\n")[0],
        epilog="Other options go to bench/service.py (see its --help).",
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="stop the run after this long (default 10)")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when a target is missed")
    ours, passed = parser.parse_known_args(argv)
    if not 0 < ours.minutes <= 10:
        parser.error("--minutes must be more than 0 and at most 10")
    service = _service()
    if "--databases" in passed or any(arg.startswith("--databases=") for arg in passed):
        parser.error("bench/load.py runs on PostgreSQL only; bench/service.py --databases ... for others")
    quick = "--quick" in passed
    with tempfile.TemporaryDirectory(prefix="arena-bench-load-") as tmp:
        raw = Path(tmp) / "service.json"
        keep = None
        if "--json" in passed:  # the caller wants the raw numbers too: write them where asked, read them there
            keep = Path(passed[passed.index("--json") + 1])
        else:
            passed += ["--json", str(raw)]

        def out_of_time(_signum, _frame):
            raise OutOfTime

        previous = signal.signal(signal.SIGALRM, out_of_time)
        signal.setitimer(signal.ITIMER_REAL, ours.minutes * 60)
        started = time.monotonic()
        try:
            status = service.main(["--databases", "postgresql", *passed])
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        if status == 130 and time.monotonic() - started >= ours.minutes * 60 - 1:
            print(f"bench/load.py: stopped after {ours.minutes:g} minutes", file=sys.stderr)
            return status
        if status != 0:
            return status
        results = json.loads((keep or raw).read_text())
    run = results["runs"][0]
    if run.get("skipped"):
        print(f"bench/load.py: {run['skipped']}", file=sys.stderr)
        return 1
    lines, met = summary(
        run, quick=quick, targets=(service.TARGET_VOTES_PER_S, service.TARGET_VOTE_P99_MS, service.TARGET_STREAMS)
    )
    print("\n== bench/load.py: the issue's numbers (PostgreSQL)")
    print("\n".join(lines))
    return 1 if ours.strict and not met else 0


if __name__ == "__main__":
    raise SystemExit(main())
