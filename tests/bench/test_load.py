"""bench/load.py judges the issue's targets from bench/service.py's numbers: PASS only for 300 votes/s done with
p99 < 100 ms and no error, and 200 streams held together that all ended ready. (The harness itself is run by
tests/bench/test_service_smoke.py.)"""

import importlib.util
import sys
from pathlib import Path

import pytest

LOAD = Path(__file__).resolve().parents[2] / "bench" / "load.py"
TARGETS = (300.0, 100.0, 200)


def _load():
    spec = importlib.util.spec_from_file_location("bench_load", LOAD)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_load", module)
    spec.loader.exec_module(module)
    return module


def _run(*, done=300.0, p99=80.0, vote_failures=0, peak=200, ready=200):
    return {
        "phases": {
            "streams": {
                "requested": 200,
                "peak": peak,
                "ready": ready,
                "ttfd_p50_ms": 600.0,
                "ttfd_p99_ms": 900.0,
                "failures": 0,
            },
            "battles_recorded": {
                "concurrency": 32,
                "elapsed": 10.0,
                "per_s": 30.0,
                "battles": 300,
                "p50_ms": 900.0,
                "p99_ms": 2000.0,
                "failures": 2,
            },
            "votes_closed": {
                "concurrency": 32,
                "per_s": 350.0,
                "votes": 2000,
                "p50_ms": 60.0,
                "p99_ms": 150.0,
                "failures": 0,
                "prepare_failures": 0,
            },
            "votes_open": {
                "offered_per_s": 300.0,
                "elapsed": 10.0,
                "per_s": done,
                "votes": 3000,
                "p50_ms": 20.0,
                "p99_ms": p99,
                "failures": vote_failures,
                "prepare_failures": 0,
            },
        }
    }


def test_the_targets_pass_only_when_every_condition_holds():
    summary = _load().summary
    lines, met = summary(_run(), quick=False, targets=TARGETS)
    assert met and sum(line.lstrip().startswith("PASS") for line in lines) == 2, lines
    assert any("2 / 302 (0.66 %)" in line for line in lines)  # the battles' error rate, out of attempts
    for bad in (dict(p99=100.0), dict(done=280.0), dict(vote_failures=1), dict(peak=199), dict(ready=198)):
        lines, met = summary(_run(**bad), quick=False, targets=TARGETS)
        assert not met and any(line.lstrip().startswith("MISS") for line in lines), (bad, lines)


def test_a_quick_run_is_not_judged():
    lines, met = _load().summary(_run(p99=5000.0), quick=True, targets=TARGETS)
    assert met and not any(line.lstrip().startswith(("PASS", "MISS")) for line in lines)
    assert "not judged" in lines[-1]


@pytest.mark.parametrize("args", [["--minutes", "11"], ["--minutes", "0"], ["--databases", "sqlite"]])
def test_it_runs_on_postgresql_for_at_most_ten_minutes(args, capsys):
    with pytest.raises(SystemExit) as stopped:
        _load().main(args)
    assert stopped.value.code == 2
