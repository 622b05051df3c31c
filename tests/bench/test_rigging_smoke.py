"""Smoke test of bench/rigging.py: a small run prints its table through the snapshot builder's own rules."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_rigging_prints_a_row_per_attack():
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "rigging.py"),
            "--models",
            "8",
            "--honest",
            "6000",
            "--rigged",
            "300",
            "--replicates",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert any(line.startswith("honest votes only") for line in lines)
    for attack in (
        "target_only, 10 identities",
        "omnipresent, 10 identities",
        "identity_seeking",
        "one identity, one day",
        "target_only, 100 identities",
    ):
        assert any(line.startswith(attack) for line in lines), proc.stdout
