"""Battle-file readers: formats, the real LLMFAO votes, every error with file and line, round trips.

The reference for "what a record means" is `reference_encode` below: a plain loop written from the rules in
ranking/data.py's docstring, sharing no code with the reader. Files are written with the standard library
(json, csv), not with the orjson the reader uses.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import types
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ranking  # noqa: F401  (float64 JAX; imported first by convention)
import ranking.data as D
from ranking.data import (
    A_WINS,
    B_WINS,
    OUTCOME_LABELS,
    STYLE_FEATURES,
    TIE,
    TIE_BOTHBAD,
    BattleFileError,
    Battles,
    encode_battles,
    read_battles,
    write_battles_jsonl,
)

LLMFAO_CSV = Path(__file__).resolve().parents[2] / "data" / "llmfao" / "crowd-comparisons.csv"
LLMFAO_VOTES = 8931  # rows in the file, per data/llmfao/README.md
LLMFAO_MODELS = 59  # distinct models in the votes, per the same README

STYLE_KEYS = [
    ("sum_assistant_a_tokens", "sum_assistant_b_tokens"),
    ("header_count_a", "header_count_b"),
    ("list_count_a", "list_count_b"),
    ("bold_count_a", "bold_count_b"),
]


# ------------------------------------------------------------------------------------------- references


def reference_encode(records: list[dict]) -> dict:
    """Independent decoding of valid records, one at a time, straight from the documented rules."""
    models: list[str] = []
    categories: list[str] = []
    voters: list[str] = []

    def code(names: list[str], name: str) -> int:
        if name not in names:
            names.append(name)
        return names.index(name)

    out = {k: [] for k in ("model_a", "model_b", "outcome", "category", "voter", "tstamp", "anony", "style")}
    any_style = False
    for r in records:
        out["model_a"].append(code(models, r["model_a"]))
        out["model_b"].append(code(models, r["model_b"]))
        out["outcome"].append(OUTCOME_LABELS.index(r["winner"]))
        cat = r.get("category")
        if cat in (None, ""):
            tag = r.get("category_tag")
            cat = tag if isinstance(tag, str) and tag != "" else None
        out["category"].append(-1 if cat is None else code(categories, cat))
        v = r.get("voter")
        if v is None or v == "":
            v = r.get("judge")
        out["voter"].append(-1 if v is None or v == "" else code(voters, str(v)))
        ts = r.get("tstamp")
        out["tstamp"].append(math.nan if ts is None else float(ts))
        out["anony"].append(r.get("anony") is not False)
        md = r.get("conv_metadata")
        row = [[math.nan] * 4, [math.nan] * 4]
        if md is not None:
            any_style = True
            for f, keys in enumerate(STYLE_KEYS):
                for side in (0, 1):
                    x = md.get(keys[side])
                    if isinstance(x, dict):
                        row[side][f] = float(sum(x.values()))
                    elif x is not None:
                        row[side][f] = float(x)
        out["style"].append(row)
    return dict(
        model_a=np.array(out["model_a"], np.int32),
        model_b=np.array(out["model_b"], np.int32),
        outcome=np.array(out["outcome"], np.int8),
        models=tuple(models),
        category=np.array(out["category"], np.int32),
        categories=tuple(categories),
        voter=np.array(out["voter"], np.int32),
        voters=tuple(voters),
        tstamp=np.array(out["tstamp"], np.float64),
        anony=np.array(out["anony"], bool),
        style=np.array(out["style"], np.float64).reshape(len(records), 2, 4) if any_style else None,
    )


def assert_same(got: Battles, want: Battles | dict, *, sha: bool = False) -> None:
    """Field-by-field equality, dtypes included; NaN equals NaN (NaN means 'absent' here)."""
    want = want._asdict() if isinstance(want, Battles) else want
    for field in ("model_a", "model_b", "outcome", "category", "voter", "tstamp", "anony"):
        a, b = getattr(got, field), want[field]
        assert a.dtype == b.dtype, field
        np.testing.assert_array_equal(a, b, err_msg=field)
    for field in ("models", "categories", "voters"):
        assert getattr(got, field) == want[field], field
    assert (got.style is None) == (want["style"] is None)
    if got.style is not None:
        assert got.style.shape == (len(got.model_a), 2, len(STYLE_FEATURES))
        np.testing.assert_array_equal(got.style, want["style"])
    if sha:
        assert got.sha256 == want["sha256"]


def write_jsonl(path: Path, records: list, *, newline: str = "\n") -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + newline for r in records), encoding="utf-8")
    return path


def write_json(path: Path, records: list) -> Path:
    path.write_text(json.dumps(records, indent=1, ensure_ascii=False), encoding="utf-8")
    return path


CSV_FIELDS = ("model_a", "model_b", "winner", "tstamp", "category", "judge", "voter", "anony")


def write_csv(path: Path, records: list[dict]) -> Path:
    """FastChat CSV; empty cell = absent; bools as true/false; floats as repr (exact)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(CSV_FIELDS)
        for r in records:
            cells = []
            for k in CSV_FIELDS:
                v = r.get(k)
                cells.append(
                    ""
                    if v is None
                    else (
                        "true" if v is True else "false" if v is False else repr(v) if isinstance(v, float) else str(v)
                    )
                )
            w.writerow(cells)
    return path


# A small file with every field; the expected arrays are spelled out by hand.
SMALL = [
    {
        "model_a": "gpt",
        "model_b": "llama",
        "winner": "model_a",
        "tstamp": 1700000000.5,
        "category": "code",
        "judge": "u1",
        "anony": True,
    },
    {"model_a": "llama", "model_b": "claude", "winner": "model_b", "tstamp": 1700000001, "voter": "u2", "anony": False},
    {"model_a": "claude", "model_b": "gpt", "winner": "tie", "category": "math", "judge": "u1"},
    {"model_a": "gpt", "model_b": "claude", "winner": "tie (bothbad)", "category": "code"},
]
SMALL_EXPECTED = dict(
    model_a=np.array([0, 1, 2, 0], np.int32),
    model_b=np.array([1, 2, 0, 2], np.int32),
    outcome=np.array([A_WINS, B_WINS, TIE, TIE_BOTHBAD], np.int8),
    models=("gpt", "llama", "claude"),
    category=np.array([0, -1, 1, 0], np.int32),
    categories=("code", "math"),
    voter=np.array([0, 1, 0, -1], np.int32),
    voters=("u1", "u2"),
    tstamp=np.array([1700000000.5, 1700000001.0, np.nan, np.nan]),
    anony=np.array([True, False, True, True]),
    style=None,
)


# ---------------------------------------------------------------------------------------------- formats


@pytest.mark.parametrize("writer,suffix", [(write_jsonl, ".jsonl"), (write_json, ".json"), (write_csv, ".csv")])
def test_small_file_every_format(tmp_path, writer, suffix):
    path = writer(tmp_path / f"battles{suffix}", SMALL)
    got = read_battles(path)
    assert_same(got, SMALL_EXPECTED)
    assert got.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert_same(got, reference_encode(SMALL))


def test_encode_battles_matches_hand_expectation():
    got = encode_battles(SMALL)
    assert_same(got, SMALL_EXPECTED)
    assert got.sha256 == ""


def test_encode_battles_accepts_any_mapping_and_numpy_scalars():
    records = [
        types.MappingProxyType(
            {
                "model_a": np.str_("x"),
                "model_b": "y",
                "winner": "model_a",
                "tstamp": np.float32(2.5),
                "anony": np.bool_(False),
                "voter": np.int64(7),
            }
        ),
        {"model_a": "y", "model_b": "x", "winner": "tie", "tstamp": np.int64(3)},
    ]
    got = encode_battles(iter(records))
    assert got.models == ("x", "y") and all(type(m) is str for m in got.models)
    np.testing.assert_array_equal(got.tstamp, [2.5, 3.0])
    np.testing.assert_array_equal(got.anony, [False, True])
    assert got.voters == ("7",)


@pytest.mark.parametrize(
    "name,content,fmt",
    [
        ("a.json", "\n  " + json.dumps(SMALL), None),  # JSON array
        ("a.json", "".join(json.dumps(r) + "\n" for r in SMALL), None),  # .json holding JSON Lines
        ("a.ndjson", "".join(json.dumps(r) + "\n" for r in SMALL), None),
        ("a.jsonl", json.dumps(SMALL), None),  # .jsonl holding an array: content decides
        ("a", json.dumps(SMALL), None),  # no extension: '[' sniffed
        ("a.txt", "".join(json.dumps(r) + "\n" for r in SMALL), None),  # '{' sniffed
        ("a.log", "".join(json.dumps(r) + "\n" for r in SMALL), "jsonl"),
        ("a.data", "".join(json.dumps(r) + "\n" for r in SMALL), "NDJSON"),
    ],
)
def test_format_guess_and_override(tmp_path, name, content, fmt):
    path = tmp_path / name
    path.write_text(content)
    assert_same(read_battles(path, format=fmt), SMALL_EXPECTED)


def test_csv_sniffed_and_forced(tmp_path):
    src = write_csv(tmp_path / "a.csv", SMALL)
    for name, fmt in (("b", None), ("b.txt", "csv")):
        path = tmp_path / name
        path.write_bytes(src.read_bytes())
        assert_same(read_battles(path, format=fmt), SMALL_EXPECTED)


def test_unknown_format_argument_and_unguessable_file(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", SMALL)
    with pytest.raises(ValueError, match="unknown battle file format 'parquet'"):
        read_battles(path, format="parquet")
    odd = tmp_path / "battles.dat"
    odd.write_text("hello world\n")
    with pytest.raises(BattleFileError, match=r"battles\.dat: cannot tell the file format.*format="):
        read_battles(odd)


def test_bom_crlf_and_blank_lines(tmp_path):
    lines = [json.dumps(r) for r in SMALL]
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n\r\n".join(lines).encode() + b"\r\n\r\n  \r\n")
    got = read_battles(path)
    assert_same(got, SMALL_EXPECTED)
    assert got.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()  # of the bytes as stored, BOM included
    csv_path = write_csv(tmp_path / "a.csv", SMALL)
    text = csv_path.read_text()
    csv_path.write_bytes(b"\xef\xbb\xbf" + text.replace("\r\n", "\r\n\r\n").encode())
    assert_same(read_battles(csv_path), SMALL_EXPECTED)


def test_category_tag_rule():
    """`category` wins; else a string category_tag; FastChat's object/array tags are ignored."""
    base = {"model_a": "a", "model_b": "b", "winner": "tie"}
    records = [
        {**base, "category": "x", "category_tag": "ignored"},
        {**base, "category_tag": "y"},
        {**base, "category_tag": {"criteria_v0.1": {"specificity": True}, "math_v0.1": {"math": False}}},
        {**base, "category": "", "category_tag": "z"},
        {**base, "category_tag": ["p", "q"]},
        {**base, "category": None, "category_tag": None},
    ]
    got = encode_battles(records)
    assert got.categories == ("x", "y", "z")
    np.testing.assert_array_equal(got.category, [0, 1, -1, 2, -1, -1])


def test_voter_rule_and_integer_voters():
    base = {"model_a": "a", "model_b": "b", "winner": "tie"}
    records = [
        {**base, "voter": "v", "judge": "j"},
        {**base, "judge": "j"},
        {**base, "voter": "", "judge": "j2"},
        {**base, "voter": 58},
        {**base, "judge": "58"},
        {**base, "voter": 0},
        base,
    ]
    got = encode_battles(records)
    assert got.voters == ("v", "j", "j2", "58", "0")
    np.testing.assert_array_equal(got.voter, [0, 1, 2, 3, 3, 4, -1])


# ------------------------------------------------------------------------------------------------ style


def test_style_sums_fastchat_sub_counts(tmp_path):
    md1 = {
        "sum_assistant_a_tokens": 120,
        "sum_assistant_b_tokens": 340,
        "header_count_a": {"h1": 1, "h2": 2, "h3": 0, "h4": 0, "h5": 0, "h6": 0},
        "header_count_b": {"h1": 0, "h2": 0, "h3": 4, "h4": 0, "h5": 0, "h6": 1},
        "list_count_a": {"ordered": 3, "unordered": 5},
        "list_count_b": {"ordered": 0, "unordered": 0},
        "bold_count_a": {"**": 2, "__": 1},
        "bold_count_b": {"**": 0, "__": 0},
        "turns": 1,  # other conv_metadata keys are ignored
    }
    md3 = {"sum_assistant_a_tokens": 10, "sum_assistant_b_tokens": 20.5, "header_count_a": 3, "list_count_b": 7}
    base = {"model_a": "a", "model_b": "b", "winner": "model_a"}
    records = [{**base, "conv_metadata": md1}, base, {**base, "conv_metadata": md3}, {**base, "conv_metadata": None}]
    want = np.full((4, 2, 4), np.nan)
    want[0] = [[120, 3, 8, 3], [340, 5, 0, 0]]
    want[2] = [[10, 3, np.nan, np.nan], [20.5, np.nan, 7, np.nan]]
    for got in (
        encode_battles(records),
        read_battles(write_jsonl(tmp_path / "s.jsonl", records)),
        read_battles(write_json(tmp_path / "s.json", records)),
    ):
        np.testing.assert_array_equal(got.style, want)
        assert_same(got, reference_encode(records))


def test_style_is_none_without_metadata_and_nan_rows_across_chunks(monkeypatch):
    base = {"model_a": "a", "model_b": "b", "winner": "model_a"}
    assert encode_battles([base, base]).style is None
    monkeypatch.setattr(D, "_CHUNK", 2)  # metadata only in the second chunk
    got = encode_battles([base, base, {**base, "conv_metadata": {"sum_assistant_a_tokens": 5}}])
    assert got.style.shape == (3, 2, 4)
    assert np.isnan(got.style[:2]).all() and got.style[2, 0, 0] == 5 and np.isnan(got.style[2]).sum() == 7


# ----------------------------------------------------------------------------------------- real LLMFAO


def test_llmfao_crowd_csv_against_csv_module():
    with open(LLMFAO_CSV, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    got = read_battles(str(LLMFAO_CSV))
    assert len(rows) == LLMFAO_VOTES == len(got.model_a)
    seen = dict.fromkeys(name for r in rows for name in (r["left"], r["right"]))
    assert len(seen) == LLMFAO_MODELS == len(got.models)
    assert got.models == tuple(seen)  # first appearance, left before right
    models = np.array(got.models, dtype=object)
    assert list(models[got.model_a]) == [r["left"] for r in rows]
    assert list(models[got.model_b]) == [r["right"] for r in rows]
    codes = {"left": A_WINS, "right": B_WINS, "tie": TIE}
    np.testing.assert_array_equal(got.outcome, [codes[r["winner"]] for r in rows])
    voters = np.array(got.voters, dtype=object)
    assert list(voters[got.voter]) == [r["worker"] for r in rows]
    assert (got.category == -1).all() and got.categories == ()
    assert np.isnan(got.tstamp).all() and got.anony.all() and got.style is None
    assert got.sha256 == hashlib.sha256(LLMFAO_CSV.read_bytes()).hexdigest()


def test_llmfao_round_trips_through_jsonl(tmp_path):
    got = read_battles(LLMFAO_CSV)
    out = tmp_path / "llmfao.jsonl"
    write_battles_jsonl(got, out)
    assert_same(read_battles(out), got)


# ----------------------------------------------------------------------------------------------- errors

GOOD = '{"model_a": "a", "model_b": "b", "winner": "model_a"}'
ACCEPTED = "expected one of 'model_a', 'model_b', 'tie', 'tie (bothbad)'"

# (file name, content, line, message fragment)
ERROR_CASES = [
    (
        "label.jsonl",
        f'{GOOD}\n{GOOD}\n{{"model_a": "a", "model_b": "b", "winner": "draw"}}\n',
        3,
        f"unknown winner label 'draw'; {ACCEPTED}",
    ),
    ("label_num.jsonl", f'{GOOD}\n{{"model_a": "a", "model_b": "b", "winner": 1}}\n', 2, "unknown winner label 1"),
    ("label_case.jsonl", '{"model_a": "a", "model_b": "b", "winner": "Tie"}', 1, "unknown winner label 'Tie'"),
    ("missing.jsonl", f'{GOOD}\n{{"model_b": "b", "winner": "tie"}}\n', 2, "missing required field 'model_a'"),
    ("missing_w.jsonl", '{"model_a": "a", "model_b": "b"}\n', 1, "missing required field 'winner'"),
    ("self.jsonl", f'{GOOD}\n{{"model_a": "a", "model_b": "a", "winner": "tie"}}\n', 2, "self-battle"),
    (
        "empty_name.jsonl",
        '{"model_a": "a", "model_b": "", "winner": "tie"}\n',
        1,
        "empty model name in field 'model_b'",
    ),
    (
        "num_name.jsonl",
        f'{GOOD}\n\n{{"model_a": 7, "model_b": "b", "winner": "tie"}}\n',
        3,
        "field 'model_a' must be a string (a model name), got 7",
    ),
    (
        "null_name.jsonl",
        '{"model_a": "a", "model_b": null, "winner": "tie"}\n',
        1,
        "field 'model_b' must be a string (a model name), got null",
    ),
    ("list_name.jsonl", '{"model_a": ["a"], "model_b": "b", "winner": "tie"}\n', 1, "got an array"),
    (
        "tstamp.jsonl",
        '{"model_a": "a", "model_b": "b", "winner": "tie", "tstamp": "yesterday"}\n',
        1,
        "field 'tstamp' must be a number, got 'yesterday'",
    ),
    (
        "tstamp_bool.jsonl",
        '{"model_a": "a", "model_b": "b", "winner": "tie", "tstamp": true}\n',
        1,
        "field 'tstamp' must be a number, got true",
    ),
    (
        "anony.jsonl",
        '{"model_a": "a", "model_b": "b", "winner": "tie", "anony": "yes"}\n',
        1,
        "field 'anony' must be true or false, got 'yes'",
    ),
    (
        "category.jsonl",
        '{"model_a": "a", "model_b": "b", "winner": "tie", "category": 3}\n',
        1,
        "field 'category' must be a string, got 3",
    ),
    (
        "tag.jsonl",
        '{"model_a": "a", "model_b": "b", "winner": "tie", "category_tag": 3}\n',
        1,
        "field 'category_tag' must be a string or an object, got 3",
    ),
    (
        "voter.jsonl",
        '{"model_a": "a", "model_b": "b", "winner": "tie", "judge": false}\n',
        1,
        "field 'judge' must be a string, got false",
    ),
    (
        "meta.jsonl",
        '{"model_a": "a", "model_b": "b", "winner": "tie", "conv_metadata": 5}\n',
        1,
        "field 'conv_metadata' must be an object, got 5",
    ),
    (
        "meta_sub.jsonl",
        '{"model_a": "a", "model_b": "b", "winner": "tie", "conv_metadata": {"list_count_b": {"ordered": "2"}}}\n',
        1,
        "'list_count_b' sub-counts must be numbers, got '2'",
    ),
    ("not_object.jsonl", f'{GOOD}\n["a", "b", "model_a"]\n', 2, "expected a JSON object, got an array"),
    ("bad_json.jsonl", f'{GOOD}\n{GOOD}\n{{"model_a": "a", "model_b": "b", winner: "tie"}}\n', 3, "invalid JSON"),
    ("truncated.jsonl", f'{GOOD}\n{{"model_a": "a", "model_b": "b", "win', 2, "invalid JSON"),
    ("huge.jsonl", '{"model_a": "a", "model_b": "b", "winner": "tie", "tstamp": 1e999}', 1, "invalid JSON"),
    # An earlier bad record is reported before a later syntax error in the same chunk.
    (
        "order.jsonl",
        f'{GOOD}\n{{"model_a": "a", "model_b": "b", "winner": "x"}}\n{{oops\n',
        2,
        "unknown winner label 'x'",
    ),
    # JSON arrays: the line where the offending element starts, and its index.
    (
        "label.json",
        f'[\n  {GOOD},\n  {{\n    "model_a": "a",\n    "model_b": "b",\n    "winner": "a"\n  }}\n]',
        3,
        "element [1]: unknown winner label 'a'",
    ),
    (
        "strings.json",
        '[{"model_a": "a, [x]", "model_b": "{b}", "winner": "tie"},\n'
        '{"model_a": "\\"q\\"", "model_b": "b", "winner": "tie"}, \n\n 5]',
        4,
        "element [2]: expected a JSON object, got a number",
    ),
    ("first.json", '\n\n[{"model_a": "a", "model_b": "a", "winner": "tie"}]', 3, "element [0]: self-battle"),
    ("bad.json", '[\n  {"model_a": "a", "model_b": "b", "winner": "tie"},\n  {"model_a": "a",,}\n]', 3, "invalid JSON"),
    ("object.json", GOOD, None, None),  # read as JSON Lines by content: fine, no error (checked below)
    ("empty.json", "[]", None, "no battles"),
    ("empty.jsonl", "", None, "file is empty"),
    ("blank.jsonl", "\n\n  \n", None, "file is empty"),
    ("empty.csv", "model_a,model_b,winner\n", None, "no battles"),
    # CSV
    ("label.csv", "model_a,model_b,winner\na,b,tie\na,b,win\n", 3, f"unknown winner label 'win'; {ACCEPTED}"),
    ("label_empty.csv", "model_a,model_b,winner\na,b,\n", 2, "unknown winner label ''"),
    ("column.csv", "model_a,model_b,result\na,b,tie\n", 1, "missing required column 'winner'"),
    ("dup.csv", "model_a,model_b,winner,model_b\na,b,tie,c\n", 1, "duplicate column 'model_b'"),
    (
        "width.csv",
        'model_a,model_b,winner\na,"multi\nline",tie\n\nb,c,tie,extra\n',
        5,
        "expected 3 fields as in the header, got 4",
    ),
    ("self.csv", 'model_a,model_b,winner\n"x\ny",b,tie\nc,c,tie\n', 4, "self-battle: model_a and model_b"),
    ("late.csv", 'model_a,model_b,winner\na,b,tie\n"x\ny",b,tie\n\nc,d,tie\nc,c,tie\n', 7, "self-battle"),
    ("empty_name.csv", "model_a,model_b,winner\n,b,tie\n", 2, "empty model name in column 'model_a'"),
    (
        "tstamp.csv",
        "model_a,model_b,winner,tstamp\na,b,tie,1.5\na,b,tie,noon\n",
        3,
        "column 'tstamp' must be a number, got 'noon'",
    ),
    ("tstamp_inf.csv", "model_a,model_b,winner,tstamp\na,b,tie,inf\n", 2, "column 'tstamp' must be finite"),
    (
        "anony.csv",
        "model_a,model_b,winner,anony\na,b,tie,maybe\n",
        2,
        "column 'anony' must be true or false, got 'maybe'",
    ),
    ("quote.csv", 'model_a,model_b,winner\na,b,tie\n"a"x,b,tie\n', 3, "bad CSV"),
    ("utf8.csv", b"model_a,model_b,winner\na,b,tie\n\xff,b,tie\n", 3, "not valid UTF-8"),
    (
        "llmfao.csv",
        "id,model_x,model_y,worker,winner,left,right\n0,1,2,w,both,A,B\n",
        2,
        "unknown winner label 'both'; expected one of 'left', 'right', 'tie'",
    ),
    ("llmfao_self.csv", "worker,winner,left,right\nw,tie,A,A\n", 2, "self-battle: left and right are both 'A'"),
]


@pytest.mark.parametrize("name,content,line,fragment", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_error_names_file_and_line(tmp_path, name, content, line, fragment):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    if fragment is None:
        read_battles(path)
        return
    with pytest.raises(BattleFileError) as info:
        read_battles(path)
    err = info.value
    assert err.path == str(path) and err.line == line
    assert fragment in err.reason, err.reason
    where = f"{path}:{line}: " if line is not None else f"{path}: "
    assert str(err).startswith(where)


def test_json_object_with_explicit_json_format(tmp_path):
    path = tmp_path / "one.json"
    path.write_text(GOOD)
    with pytest.raises(BattleFileError, match=r"one\.json:1: expected a JSON array.*format='jsonl'"):
        read_battles(path, format="json")


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(BattleFileError, match=r"nope\.jsonl: file not found") as info:
        read_battles(tmp_path / "nope.jsonl")
    assert info.value.line is None
    with pytest.raises(BattleFileError, match="is a directory") as info:
        read_battles(tmp_path)
    assert info.value.line is None


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_permission_denied(tmp_path):
    path = write_jsonl(tmp_path / "locked.jsonl", SMALL)
    path.chmod(0)
    try:
        with pytest.raises(BattleFileError, match="permission denied"):
            read_battles(path)
    finally:
        path.chmod(0o600)


def test_encode_battles_errors_use_source_and_record_number():
    good = {"model_a": "a", "model_b": "b", "winner": "tie"}
    with pytest.raises(BattleFileError) as info:
        encode_battles([good, good, {**good, "winner": "tie (both bad)"}], source="api")
    assert info.value.path == "api" and info.value.line == 3 and "'tie (both bad)'" in str(info.value)
    with pytest.raises(BattleFileError, match=r"<records>:2: expected a mapping, got an array"):
        encode_battles([good, ["a", "b", "tie"]])
    with pytest.raises(BattleFileError, match=r"<records>:1: field 'tstamp' must be finite"):
        encode_battles([{**good, "tstamp": float("inf")}])
    with pytest.raises(BattleFileError, match="no battle records"):
        encode_battles([])


def test_nan_tstamp_in_memory_means_absent():
    got = encode_battles([{"model_a": "a", "model_b": "b", "winner": "tie", "tstamp": float("nan")}])
    assert np.isnan(got.tstamp).all()


@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_chunking_changes_nothing(tmp_path, monkeypatch, chunk):
    """Codes persist across chunks; an error in a late chunk still names its own line."""
    rng = np.random.default_rng(0)
    records = [
        {
            "model_a": f"m{a}",
            "model_b": f"m{(a + 1 + b) % 9}",
            "winner": OUTCOME_LABELS[o],
            "tstamp": float(i),
            "category": f"c{a % 3}",
        }
        for i, (a, b, o) in enumerate(zip(rng.integers(0, 9, 50), rng.integers(0, 8, 50), rng.integers(0, 4, 50)))
    ]
    monkeypatch.setattr(D, "_CHUNK", chunk)
    monkeypatch.setattr(D, "_JSONL_CHUNK_BYTES", chunk * 40)
    want = reference_encode(records)
    for writer, suffix in ((write_jsonl, ".jsonl"), (write_json, ".json"), (write_csv, ".csv")):
        assert_same(read_battles(writer(tmp_path / f"ok{suffix}", records)), want)
    bad = records[:41] + [{**records[41], "winner": "nobody"}] + records[42:]
    path = write_jsonl(tmp_path / "bad.jsonl", bad)
    with pytest.raises(BattleFileError, match=r"bad\.jsonl:42: unknown winner label 'nobody'"):
        read_battles(path)
    text = path.read_text().replace("\n", "\n\n")  # every record now on an odd line
    path.write_text(text)
    with pytest.raises(BattleFileError, match=r"bad\.jsonl:83: unknown winner label 'nobody'"):
        read_battles(path)
    path = write_csv(tmp_path / "bad.csv", bad)
    with pytest.raises(BattleFileError, match=r"bad\.csv:43: unknown winner label 'nobody'"):
        read_battles(path)
    path = write_json(tmp_path / "bad.json", bad)  # indent=1: each object spans 8 lines after the '['
    with pytest.raises(BattleFileError, match=r"bad\.json:\d+: element \[41\]") as info:
        read_battles(path)
    lines = path.read_text().splitlines()
    assert lines[info.value.line - 1].strip() == "{" and '"nobody"' in "".join(lines[info.value.line - 1 :][:8])


# ---------------------------------------------------------------------------------------------- round trip


def test_round_trip_every_field(tmp_path):
    records = [
        {
            **SMALL[0],
            "conv_metadata": {
                "sum_assistant_a_tokens": 12,
                "sum_assistant_b_tokens": 30,
                "header_count_a": {"h1": 1, "h2": 1},
                "bold_count_b": {"**": 2, "__": 0},
            },
        },
        *SMALL[1:],
        {
            "model_a": "ünïcode ✓",
            "model_b": 'quote " and \\ back',
            "winner": "model_b",
            "tstamp": 0.1,
            "conv_metadata": {"list_count_a": 2.5},
        },
    ]
    first = read_battles(write_jsonl(tmp_path / "in.jsonl", records))
    out = tmp_path / "out.jsonl"
    write_battles_jsonl(first, out)
    second = read_battles(out)
    assert_same(second, first)
    again = tmp_path / "again.jsonl"
    write_battles_jsonl(second, again)
    assert again.read_bytes() == out.read_bytes()  # canonical: writing is a fixed point
    line = json.loads(out.read_text().splitlines()[0])
    assert line["judge"] == "u1" and line["anony"] is True and line["conv_metadata"]["header_count_a"] == 2


# --------------------------------------------------------------------------------------------- properties

NAMES = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=8)
OPTIONAL_NAME = st.one_of(st.none(), st.just(""), NAMES)
NUMBER = st.one_of(st.integers(-(10**15), 10**15), st.floats(allow_nan=False, allow_infinity=False))
COUNT = st.integers(0, 10**6)
META = st.dictionaries(
    st.sampled_from([k for pair in STYLE_KEYS for k in pair]),
    st.one_of(COUNT, st.floats(0, 1e6), st.dictionaries(st.sampled_from(["h1", "h2", "**", "ordered"]), COUNT)),
)


@st.composite
def records_strategy(draw, *, csv_only: bool = False):
    pool = draw(st.lists(NAMES, min_size=2, max_size=6, unique=True))
    n = draw(st.integers(1, 25))
    out = []
    for _ in range(n):
        a, b = draw(st.lists(st.sampled_from(pool), min_size=2, max_size=2, unique=True))
        r = {"model_a": a, "model_b": b, "winner": draw(st.sampled_from(OUTCOME_LABELS))}
        if draw(st.booleans()):
            r["tstamp"] = draw(NUMBER)
        for key in ("category", "judge", "voter"):
            v = draw(OPTIONAL_NAME)
            if v is not None:
                r[key] = v
        if draw(st.booleans()):
            r["anony"] = draw(st.booleans())
        if not csv_only:
            if draw(st.booleans()):
                r["category_tag"] = draw(st.one_of(NAMES, st.just({"math_v0.1": {"math": True}})))
            if draw(st.booleans()):
                r["conv_metadata"] = draw(META)
            if draw(st.booleans()):
                r["voter"] = draw(st.integers(0, 10**6))
        out.append(r)
    return out


PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPERTY
@given(records=records_strategy())
def test_property_json_formats_read_back_what_was_written(tmp_path, records):
    want = reference_encode(records)
    assert_same(encode_battles(records), want)
    for writer, suffix in ((write_jsonl, ".jsonl"), (write_json, ".json")):
        got = read_battles(writer(tmp_path / f"p{suffix}", records))
        assert_same(got, want)
        out = tmp_path / f"rt{suffix}.jsonl"
        write_battles_jsonl(got, out)
        assert_same(read_battles(out), got)


@PROPERTY
@given(records=records_strategy(csv_only=True))
def test_property_csv_reads_back_what_was_written(tmp_path, records):
    got = read_battles(write_csv(tmp_path / "p.csv", records))
    assert_same(got, reference_encode(records))


@PROPERTY
@given(records=records_strategy())
def test_property_fast_and_slow_paths_agree(records):
    fast = encode_battles(records)
    with mock.patch.object(D._Encoder, "_fast", side_effect=D._Slow):
        slow = encode_battles(records)
    assert_same(fast, slow)


@PROPERTY
@given(records=records_strategy())
def test_property_fast_path_takes_every_valid_record(records):
    """Valid plain-Python records never fall back to the per-record path (the speed depends on it)."""
    with mock.patch.object(D._Encoder, "_slow", side_effect=AssertionError("slow path used")):
        encode_battles(records)


BAD_VALUES = {
    "model_a": st.sampled_from([None, "", 3, 2.5, True, ["x"], {"x": 1}]),
    "winner": st.sampled_from([None, "", "Tie", "model_c", "tie(bothbad)", 0, True, ["tie"]]),
    "tstamp": st.sampled_from(["1", True, [], {}, float("inf"), -float("inf"), 10**400]),
    "category": st.sampled_from([1, True, [], {}]),
    "category_tag": st.sampled_from([1, 2.5, False]),
    "judge": st.sampled_from([1.5, True, [], {}]),
    "anony": st.sampled_from([0, 1, "true", []]),
    "conv_metadata": st.sampled_from(
        [1, "x", [], {"header_count_a": "3"}, {"bold_count_b": {"**": None}}, {"list_count_a": float("inf")}]
    ),
}


@PROPERTY
@given(records=records_strategy(), data=st.data())
def test_property_bad_value_reported_at_its_record_by_both_paths(records, data):
    """Corrupt one record: both paths raise, at that record, with the same message; never a silent tie."""
    k = data.draw(st.integers(0, len(records) - 1))
    field = data.draw(st.sampled_from(sorted(BAD_VALUES)))
    bad = [dict(r) for r in records]
    bad[k][field] = data.draw(BAD_VALUES[field])
    if field == "model_a" and data.draw(st.booleans()):
        bad[k]["model_a"] = bad[k]["model_b"]  # self-battle
    errors = []
    for patch in (False, True):
        with mock.patch.object(D._Encoder, "_fast", side_effect=D._Slow) if patch else contextlib.nullcontext():
            with pytest.raises(BattleFileError) as info:
                encode_battles(bad)
        errors.append(info.value)
    assert errors[0].line == errors[1].line == k + 1
    assert str(errors[0]) == str(errors[1])


def _reference_line(battles: Battles, i: int) -> bytes:
    """The canonical line of battle i the plain way: one dict, one orjson.dumps (what the column writer must
    reproduce byte for byte)."""
    import orjson

    rec = {
        "model_a": battles.models[battles.model_a[i]],
        "model_b": battles.models[battles.model_b[i]],
        "winner": OUTCOME_LABELS[battles.outcome[i]],
    }
    if not math.isnan(battles.tstamp[i]):
        rec["tstamp"] = float(battles.tstamp[i])
    if battles.category[i] >= 0:
        rec["category"] = battles.categories[battles.category[i]]
    if battles.voter[i] >= 0:
        rec["judge"] = battles.voters[battles.voter[i]]
    rec["anony"] = bool(battles.anony[i])
    if battles.weight is not None and battles.weight[i] != 1.0:
        rec["weight"] = float(battles.weight[i])
    if battles.style is not None:
        md = {}
        for f, keys in enumerate(D._STYLE_KEYS):
            for side in (0, 1):
                v = float(battles.style[i, side, f])
                if math.isfinite(v):
                    md[keys[side]] = int(v) if v.is_integer() and abs(v) < 2**53 else v
        if md or (i == 0 and not np.isfinite(battles.style).any()):
            rec["conv_metadata"] = md
    return orjson.dumps(rec, option=orjson.OPT_APPEND_NEWLINE)


@pytest.mark.parametrize("with_style, with_weight", [(True, True), (True, False), (False, True), (False, False)])
def test_the_column_writer_writes_what_orjson_writes_row_by_row(tmp_path, with_style, with_weight):
    rng = np.random.default_rng(7)
    n = 3000
    names = ("plain", 'quote " and \\ backslash', "ünïcödé ✓ 🚀", "tab\tnew\nline", "\x01ctl", "</script>")
    style = None
    if with_style:
        style = rng.integers(0, 5000, (n, 2, len(STYLE_FEATURES))).astype(np.float64)
        style[rng.random(n) < 0.2] = np.nan  # rows without metadata
        partial = rng.random((n, 2, len(STYLE_FEATURES))) < 0.05
        style[partial] = np.nan  # a feature missing here and there
        fractional = rng.random(n) < 0.05
        style[fractional, 0, 0] += 0.5
        style[5, 1, 2] = 1e17  # whole but beyond 2**53: written as a float
    weight = None
    if with_weight:
        weight = np.where(rng.random(n) < 0.7, 1.0, rng.choice([0.5, 0.25, 1 / 3, 2.0], n))
    tstamp = rng.uniform(1.6e9, 1.8e9, n)
    tstamp[rng.random(n) < 0.1] = np.nan
    tstamp[:3] = [1.7e9, 1e16, 1e-7]  # whole, exponent and tiny floats, where float formats differ most
    battles = Battles(
        model_a=rng.integers(0, len(names), n).astype(np.int32),
        model_b=rng.integers(0, len(names), n).astype(np.int32),
        outcome=rng.integers(0, 4, n).astype(np.int8),
        models=names,
        category=rng.integers(-1, 3, n).astype(np.int32),
        categories=("coding", "ünï", 'x"y'),
        voter=rng.integers(-1, 40, n).astype(np.int32),
        voters=tuple(f"voter-{k}\u2028" for k in range(40)),
        tstamp=tstamp,
        anony=rng.random(n) < 0.5,
        style=style,
        sha256="",
        weight=weight,
    )
    expected = [_reference_line(battles, i) for i in range(n)]
    assert D.battles_jsonl_lines(battles) == expected
    out = tmp_path / "b.jsonl"
    write_battles_jsonl(battles, out)
    assert out.read_bytes() == b"".join(expected)


def test_a_style_array_without_any_value_still_writes_the_empty_metadata_once():
    n = 4
    battles = Battles(
        model_a=np.zeros(n, np.int32),
        model_b=np.ones(n, np.int32),
        outcome=np.zeros(n, np.int8),
        models=("x", "y"),
        category=np.full(n, -1, np.int32),
        categories=(),
        voter=np.full(n, -1, np.int32),
        voters=(),
        tstamp=np.full(n, np.nan),
        anony=np.ones(n, bool),
        style=np.full((n, 2, len(STYLE_FEATURES)), np.nan),
        sha256="",
    )
    lines = D.battles_jsonl_lines(battles)
    assert lines == [_reference_line(battles, i) for i in range(n)]
    assert lines[0].endswith(b',"conv_metadata":{}}\n') and b"conv_metadata" not in b"".join(lines[1:])
