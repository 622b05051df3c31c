"""Every setting is read and checked once, at start (arena.settings): a bad value stops the process before it
serves, with the variable's name and what it allows, in one line; nothing else reads the environment."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from arena.settings import Settings, SettingsError, load

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "variable, value, allowed",
    [
        ("ARENA_SNAPSHOT_REPLICATES", "1.5", "valid integer"),  # silently 1 before: now refused
        ("ARENA_SNAPSHOT_REPLICATES", "1", "0 (sandwich intervals) or at least 2"),
        ("ARENA_SNAPSHOT_TIES", "sometimes", "'half' or 'davidson'"),
        ("ARENA_VOTE_CHALLENGE_BITS", "40", "less than or equal to 32"),
        ("ARENA_RATE_LIMITS", "maybe", "valid boolean"),
        ("ARENA_RATE_LIMIT_VOTES_PER_VOTER", "lots", '"N/unit"'),
        ("ARENA_INTEGRITY_ALPHA", "2", "less than 1"),
        ("ARENA_PROVIDER_TOTAL_TIMEOUT", "nan", "finite number"),
        ("ARENA_PORT", "0", "greater than or equal to 1"),
    ],
)
def test_a_bad_value_is_refused_in_one_line_naming_the_variable(monkeypatch, variable, value, allowed):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as refused:
        load()
    line = str(refused.value)
    assert "\n" not in line and line.startswith("bad setting: ") and variable in line and allowed in line, line
    assert f"(got {value!r})" in line


def test_the_defaults_validate_and_overrides_are_checked_like_the_environment(tmp_path):
    defaults = Settings()
    assert (defaults.snapshot_replicates, defaults.sampling_policy, defaults.vote_challenge) == (1000, "weighted", True)
    assert load({"SNAPSHOT_REPLICATES": 20, "instance_path": tmp_path}).snapshot_replicates == 20
    with pytest.raises(SettingsError, match="ARENA_SNAPSHOT_REPLICATES"):
        load({"SNAPSHOT_REPLICATES": "1.5", "INSTANCE_PATH": tmp_path})
    with pytest.raises(SettingsError, match="ARENA_NO_SUCH_SETTING: Extra inputs are not permitted"):
        load({"NO_SUCH_SETTING": 1})


@pytest.mark.parametrize("argv", [["-m", "arena.cli", "db", "upgrade"], ["-c", "import wsgi"]])
def test_make_run_stops_before_serving_with_one_line(tmp_path, argv):
    """`make run` runs `arena db upgrade` first, then gunicorn on wsgi:app: both stop at the bad value with one
    line (gunicorn's worker with its boot-error status, 3, so gunicorn gives up instead of respawning it)."""
    env = {
        **os.environ,
        "ARENA_SNAPSHOT_REPLICATES": "1.5",
        "ARENA_INSTANCE_PATH": str(tmp_path),
        "ARENA_DATABASE_URL": f"sqlite:///{tmp_path / 'arena.db'}",
    }
    done = subprocess.run([sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == (2 if "arena.cli" in argv else 3), done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: bad setting: ARENA_SNAPSHOT_REPLICATES: Input should be a valid integer, unable to parse string as "
        "an integer (got '1.5')"
    ]
    assert not (tmp_path / "arena.db").exists()  # stopped before touching the database


def test_gunicorn_reads_its_settings_from_the_same_object(tmp_path):
    env = {**os.environ, "ARENA_WORKERS": "two", "ARENA_INSTANCE_PATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", "import runpy; runpy.run_path('gunicorn.conf.py')"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "ARENA_WORKERS: Input should be a valid integer" in done.stderr


def test_nothing_outside_the_settings_module_reads_the_environment_or_app_config_for_a_setting():
    """os.environ / os.getenv only in arena/settings.py (gunicorn.conf.py sets the pool's default for its
    workers); app.config only for Flask's own keys, written by arena.settings.install."""
    offenders = []
    for path in sorted((REPO / "arena").rglob("*.py")):
        if path.name == "settings.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("environ", "getenv")
                and isinstance(node.value, ast.Name)
                and node.value.id == "os"
            ):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} os.{node.attr}")
            if (
                isinstance(node, ast.Subscript)
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "config"
            ):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} .config[...]")
    assert offenders == []
