"""`python -m ranking` end to end, on the real LLMFAO votes and on broken files."""

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ranking import bootstrap as bs
from ranking.bradley_terry import DEFAULT_PRIOR
from ranking.cli import main
from ranking.stats import PairCounts
from tests.ranking.test_bradley_terry import ELO_ATOL, scipy_half_fit

ROOT = Path(__file__).resolve().parents[2]
CROWD = ROOT / "data" / "llmfao" / "crowd-comparisons.csv"


@pytest.fixture(autouse=True)
def no_disk_cache(monkeypatch):
    monkeypatch.setenv("ARENA_RANKING_CACHE", "off")


def run_cli(*args, cache=None):
    env = {**os.environ, "ARENA_RANKING_CACHE": str(cache) if cache else "off"}
    return subprocess.run(
        [sys.executable, "-m", "ranking", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )


def crowd_rows():
    with open(CROWD, newline="") as f:
        return list(csv.DictReader(f))


def test_llmfao_end_to_end_matches_an_independent_fit(tmp_path):
    result = run_cli("fit", CROWD, "--format", "json", "--bootstrap", "300", "--seed", "7", cache=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["input"]["sha256"] == hashlib.sha256(CROWD.read_bytes()).hexdigest()
    assert document["input"]["battles_used"] == 8931
    models = document["models"]

    rows = crowd_rows()
    names = sorted({r["left"] for r in rows} | {r["right"] for r in rows})
    assert sorted(m["model"] for m in models) == names and len(names) == 59
    # Independent reference: counts built with a dict loop from the csv module, fitted with scipy.
    code = {name: i for i, name in enumerate(names)}
    cells = {}
    for r in rows:
        i, j = code[r["left"]], code[r["right"]]
        key = (min(i, j), max(i, j))
        cell = cells.setdefault(key, [0.0, 0.0, 0.0])
        if r["winner"] == "tie":
            cell[2] += 1
        else:
            winner = i if r["winner"] == "left" else j
            cell[0 if winner == key[0] else 1] += 1
    keys = sorted(cells)
    counts = PairCounts(
        np.array([k[0] for k in keys]),
        np.array([k[1] for k in keys]),
        np.array([cells[k][0] for k in keys]),
        np.array([cells[k][1] for k in keys]),
        np.array([cells[k][2] for k in keys]),
        len(names),
    )
    theta = scipy_half_fit(counts, DEFAULT_PRIOR)
    reference = 1000 + 400 / np.log(10) * (theta - theta.mean())
    ours = {m["model"]: m for m in models}
    for name in names:
        assert ours[name]["rating"] == pytest.approx(reference[code[name]], abs=ELO_ATOL)
        assert ours[name]["ci_low"] < ours[name]["rating"] < ours[name]["ci_high"]
    low = np.array([m["ci_low"] for m in models])
    high = np.array([m["ci_high"] for m in models])
    assert [m["rank_ub"] for m in models] == bs.rank_upper_bound(low, high).tolist()
    assert [m["rating"] for m in models] == sorted((m["rating"] for m in models), reverse=True)
    assert sum(m["battles"] for m in models) == 2 * 8931

    again = run_cli("fit", CROWD, "--format", "json", "--bootstrap", "300", "--seed", "7", cache=tmp_path)
    assert again.stdout == result.stdout  # same seed, same file: the same document, bit for bit
    assert "python -m ranking fit crowd-comparisons.csv --bootstrap 300 --seed 7" in document["reproduce"]


def test_llmfao_online_elo_matches_a_plain_loop(capsys):
    assert main(["elo", str(CROWD), "--format", "json", "--k", "8"]) == 0
    document = json.loads(capsys.readouterr().out)
    ratings = {}
    for r in crowd_rows():
        ra, rb = ratings.get(r["left"], 1000.0), ratings.get(r["right"], 1000.0)
        expected = 1 / (1 + 10 ** ((rb - ra) / 400))
        score = {"left": 1.0, "right": 0.0, "tie": 0.5}[r["winner"]]
        ratings[r["left"]] = ra + 8 * (score - expected)
        ratings[r["right"]] = rb - 8 * (score - expected)
    assert len(document["models"]) == len(ratings)
    for row in document["models"]:
        assert row["rating"] == pytest.approx(ratings[row["model"]], abs=1e-9)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def small_file(tmp_path):
    lines = []
    rng = np.random.default_rng(0)
    labels = ["model_a", "model_b", "tie", "tie (bothbad)"]
    for _ in range(400):
        a, b = rng.choice(["alpha", "beta", "gamma", "delta"], 2, replace=False)
        lines.append(
            json.dumps(
                {
                    "model_a": a,
                    "model_b": b,
                    "winner": labels[rng.integers(0, 4)],
                    "category": ["code", "chat"][rng.integers(0, 2)],
                }
            )
        )
    return write(tmp_path, "battles.jsonl", "\n".join(lines) + "\n")


def test_output_formats_and_out_file(tmp_path, capsys):
    path = small_file(tmp_path)
    assert main(["fit", str(path), "--bootstrap", "50", "--format", "csv"]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert {r["model"] for r in rows} == {"alpha", "beta", "gamma", "delta"}
    assert main(["fit", str(path), "--bootstrap", "50"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:4] == ["rank", "tier", "model", "rating"] and "95% interval" in table
    out = tmp_path / "result.json"
    assert main(["fit", str(path), "--bootstrap", "0", "--format", "json", "--out", str(out)]) == 0
    assert capsys.readouterr().out == ""
    document = json.loads(out.read_text())
    assert document["interval_method"].startswith("sandwich")


def test_options_reach_the_fit(tmp_path, capsys):
    path = small_file(tmp_path)
    assert main(["fit", str(path), "--bootstrap", "20", "--format", "json", "--ties", "davidson"]) == 0
    assert json.loads(capsys.readouterr().out)["tie_strength"] > 0
    assert (
        main(["fit", str(path), "--bootstrap", "20", "--format", "json", "--anchor", "beta", "--anchor-rating", "1500"])
        == 0
    )
    rows = {m["model"]: m for m in json.loads(capsys.readouterr().out)["models"]}
    assert rows["beta"]["rating"] == pytest.approx(1500)
    assert main(["fit", str(path), "--bootstrap", "20", "--format", "json", "--category", "code"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert 0 < document["input"]["battles_used"] < 400
    assert document["input"]["excluded"]["other_category"] == 400 - document["input"]["battles_used"]


def test_undefeated_model_has_an_open_interval_in_json(tmp_path, capsys):
    lines = [json.dumps({"model_a": "a", "model_b": "b", "winner": w}) for w in ["model_a", "model_b"] * 20]
    lines += [json.dumps({"model_a": "champion", "model_b": "a", "winner": "model_a"})] * 5
    path = write(tmp_path, "b.jsonl", "\n".join(lines))
    assert main(["fit", str(path), "--bootstrap", "20", "--format", "json"]) == 0
    captured = capsys.readouterr()
    champion = json.loads(captured.out)["models"][0]
    assert champion["model"] == "champion" and champion["ci_high"] is None and champion["rank_ub"] == 1
    assert "warning: 1 model(s) never lost or never won" in captured.err


@pytest.mark.parametrize(
    "content, args, message",
    [
        (None, [], "file not found"),
        (
            '{"model_a": "x", "model_b": "y", "winner": "model_a"}\n'
            '{"model_a": "x", "model_b": "y", "winner": "left"}\n',
            [],
            "b.jsonl:2",
        ),
        ('{"model_a": "x", "model_b": "x", "winner": "model_a"}\n', [], "b.jsonl:1"),
        ("", [], "b.jsonl"),
        ('{"model_a": "x", "model_b": "y", "winner": "model_a"}\n', ["--category", "code"], "no battle has category"),
        ('{"model_a": "x", "model_b": "y", "winner": "model_a"}\n', ["--bootstrap", "1"], "at least 2"),
        ('{"model_a": "x", "model_b": "y", "winner": "model_a"}\n', ["--anchor", "z"], "anchor model"),
        ('{"model_a": "x", "model_b": "y", "winner": "model_a"}\n', ["--style"], "conv_metadata"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(tmp_path, content, args, message):
    path = tmp_path / "b.jsonl"
    if content is not None:
        path.write_text(content)
    result = run_cli("fit", path, *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and result.stdout == ""


def test_bad_arguments_exit_2():
    result = run_cli("fit", CROWD, "--ties", "thirds")
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_win_rates_observed_and_predicted(tmp_path, capsys):
    path = small_file(tmp_path)
    assert main(["winrates", str(path), "--format", "json"]) == 0
    pairs = json.loads(capsys.readouterr().out)["pairs"]
    assert len(pairs) == 12  # 4 models, every ordered pair compared
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for pair in pairs:
        score = battles = 0
        for r in records:
            if {r["model_a"], r["model_b"]} == {pair["model"], pair["opponent"]}:
                battles += 1
                if r["winner"].startswith("tie"):
                    score += 0.5
                elif r[r["winner"]] == pair["model"]:
                    score += 1
        assert pair["battles"] == battles and pair["observed"] == pytest.approx(score / battles)
        reverse = next(p for p in pairs if (p["model"], p["opponent"]) == (pair["opponent"], pair["model"]))
        assert pair["predicted"] + reverse["predicted"] == pytest.approx(1.0)


def test_style_control_reports_a_length_effect(tmp_path, capsys):
    rng = np.random.default_rng(3)
    strength = {"a": 0.0, "b": 0.6, "c": -0.4}
    lines = []
    for _ in range(1500):
        x, y = rng.choice(list(strength), 2, replace=False)
        la, lb = rng.integers(50, 800, 2)
        p = 1 / (1 + np.exp(-(strength[x] - strength[y] + 1.5 * (la - lb) / (la + lb))))
        meta = {"sum_assistant_a_tokens": int(la), "sum_assistant_b_tokens": int(lb)}
        lines.append(
            json.dumps(
                {
                    "model_a": x,
                    "model_b": y,
                    "winner": "model_a" if rng.random() < p else "model_b",
                    "conv_metadata": meta,
                }
            )
        )
    path = write(tmp_path, "styled.jsonl", "\n".join(lines))
    assert main(["fit", str(path), "--style", "--bootstrap", "30", "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    length = document["style_coefficients"]["sum_assistant_tokens"]
    assert length["ci_low"] > 0 and length["ci_low"] <= length["value"] <= length["ci_high"]
    assert [m["model"] for m in document["models"]] == ["b", "a", "c"]
    # --bootstrap 0: sandwich intervals on the same fit, close to the bootstrap's (30 replicates: loosely)
    assert main(["fit", str(path), "--style", "--bootstrap", "0", "--format", "json"]) == 0
    sandwich = json.loads(capsys.readouterr().out)
    assert sandwich["interval_method"].startswith("sandwich")
    for boot_row, sandwich_row in zip(document["models"], sandwich["models"]):
        assert sandwich_row["rating"] == boot_row["rating"]
        width = sandwich_row["ci_high"] - sandwich_row["ci_low"]
        assert 0.6 < width / (boot_row["ci_high"] - boot_row["ci_low"]) < 1.6
