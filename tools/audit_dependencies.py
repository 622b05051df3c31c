"""Audit the installed environment with pip-audit; run by `make test` before the suite.

    .venv/bin/python tools/audit_dependencies.py

Exit status 1 when pip-audit reports a known vulnerability in an installed package (each one is printed with the
versions that fix it). When the advisory service cannot be asked (no network, or a registry mirror that does not
serve PyPI's per-version JSON that pip-audit reads), it prints a WARNING saying the audit was not done and exits
0: a network outage must not fail every test run, and the warning stays in the log for whoever reads it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

TIMEOUT_S = 600


def verdict(report: dict | None, returncode: int, stderr: str) -> tuple[int, list[str]]:
    """(exit status, lines to print) for a pip-audit JSON report (None: it wrote none) and its exit status."""
    if report is None:
        last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "no output")
        return 0, [f"WARNING: dependency audit NOT DONE: pip-audit failed (exit {returncode}): {last.strip()[:300]}"]
    dependencies = report.get("dependencies", [])
    vulnerable = [d for d in dependencies if d.get("vulns")]
    if vulnerable:
        lines = ["dependency audit FAILED: known vulnerabilities in installed packages:"]
        for dep in vulnerable:
            for vuln in dep["vulns"]:
                fixes = ", ".join(vuln.get("fix_versions") or []) or "no fixed version yet"
                aliases = ", ".join(vuln.get("aliases") or [])
                lines.append(
                    f"  {dep['name']} {dep.get('version', '?')}: {vuln['id']}"
                    f"{f' ({aliases})' if aliases else ''}; fixed in: {fixes}"
                )
        return 1, lines
    considered = [d for d in dependencies if "editable" not in d.get("skip_reason", "")]
    unaudited = [d["name"] for d in considered if "skip_reason" in d]
    if considered and len(unaudited) == len(considered):
        return 0, [
            f"WARNING: dependency audit NOT DONE: the advisory service answered for none of the "
            f"{len(considered)} installed packages (offline, or a registry mirror without PyPI's JSON API)"
        ]
    lines = [f"dependency audit: {len(considered) - len(unaudited)} packages audited, no known vulnerability"]
    if unaudited:
        lines.append(f"  not audited (unknown to the advisory service): {', '.join(sorted(unaudited))}")
    return 0, lines


def main() -> int:
    pip_audit = Path(sys.executable).with_name("pip-audit")
    command = [
        str(pip_audit) if pip_audit.exists() else "pip-audit",
        "--local",
        "--skip-editable",
        "--progress-spinner",
        "off",
        "--format",
        "json",
        "--desc",
        "off",
    ]
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "report.json"
        try:
            done = subprocess.run([*command, "--output", str(out)], capture_output=True, text=True, timeout=TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as error:
            status, lines = verdict(None, -1, str(error))
        else:
            try:
                report = json.loads(out.read_text())
            except (OSError, ValueError):
                report = None
            status, lines = verdict(report, done.returncode, done.stderr)
    print("\n".join(lines), file=sys.stderr if status else sys.stdout, flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
