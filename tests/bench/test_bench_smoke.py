"""Smoke test of bench/ranking.py: a tiny run prints its table, and each method's ratings agree with scipy.

The benchmark's own numbers are not checked here (they depend on the machine); what is checked is that the
harness runs end to end and that every method's ratings, after its conversion to the common Elo scale, agree
with the independent scipy reference fit, which is what the table's accuracy column relies on.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench" / "ranking.py"
CHILD = REPO / "bench" / "_child.py"

# Largest |rating - scipy reference| accepted, Elo points. Ours uses a weak prior (precision 1e-3 per nat²)
# that moves ratings by ~1e-3 Elo at these sizes, choix/evalica/FastChat stop at their own tolerances
# (<= 1e-2 Elo here); a wrong scale (e.g. natural log vs Elo, 173.7x) or centring misses by far more.
ATOL_ELO = 0.05
TINY = "12x3k"


def _data_module():
    spec = importlib.util.spec_from_file_location("bench_data", REPO / "bench" / "_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_only_ours_prints_a_table(tmp_path):
    pytest.importorskip("jax")
    out_json = tmp_path / "out.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--only-ours",
            "--sizes",
            TINY,
            "--replicates",
            "20",
            "--no-memory-probe",
            "--data-dir",
            str(tmp_path / "data"),
            "--json",
            str(out_json),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout
    for needle in (
        "method",
        "max|d| Elo",
        "scipy reference",
        "ours, from arrays, cold",
        "ours, from arrays, cold + XLA cache on disk",
        "ours, end to end from the file",
        "ours, end to end + XLA cache on disk",
        "ours, online Elo",
        "Targets",
    ):
        assert needle in text, f"{needle!r} missing from:\n{text}"
    assert "failed" not in text, text
    rows = json.loads(out_json.read_text())["results"][0]["rows"]
    for name in ("ours_fit", "ours_bootstrap", "ours_cached", "ours_e2e", "ours_e2e_cached"):
        assert rows[name]["max_diff"] < ATOL_ELO, (name, rows[name])
    assert rows["ours_bootstrap"]["replicates_run"] == 20


@pytest.mark.parametrize(
    "method, module", [("fastchat", "scipy"), ("choix", "choix"), ("evalica", "evalica"), ("sklearn", "sklearn")]
)
def test_peer_ratings_agree_with_reference(tmp_path, method, module):
    pytest.importorskip(module)
    data = _data_module()
    paths = data.ensure_dataset(data.parse_size(TINY), 0, tmp_path, log=lambda *a: None)

    def child(name, replicates=0):
        spec = {
            "method": name,
            "arrays": str(paths.arrays),
            "jsonl": str(paths.jsonl),
            "reference": str(paths.reference),
            "replicates": replicates,
            "budget": 30,
            "sample_seconds": 5,
        }
        proc = subprocess.run(
            [sys.executable, str(CHILD), json.dumps(spec)], capture_output=True, text=True, timeout=60, cwd=REPO
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH-RESULT ")][-1]
        return json.loads(line.split(" ", 1)[1])

    reference = child("reference")
    assert reference["info"]["newton_step_elo"] < 1e-4
    result = child(method, replicates=3)
    assert result["replicates_run"] == 3
    assert result["max_diff"] < ATOL_ELO, result
