"""Battle files and records -> integer arrays, encoded once; everything downstream works on the arrays.

Readers accept the FastChat/LMArena battle format (JSON array, JSON Lines or CSV) and the LLMFAO crowd CSV.
A battle names two models and the outcome from model_a's point of view; names become int32 codes in order of
first appearance (row by row, model_a before model_b), so the same file always gives the same codes.

Why the reader is built the way it is: ranking a million battles is budgeted at a few seconds end to end, and
a plain per-record Python loop spends about as long validating and encoding as orjson spends parsing. So each
chunk of records goes through a *fast path* that works a column at a time with C-level helpers
(`map(dict.get, ...)`, `dict.fromkeys` for first-appearance codes, `np.fromiter`). The fast path only decides
"all good" or "something is off"; when something is off, the chunk is re-read record by record by the
*slow path*, which is the reference implementation: it applies every rule in a fixed order and raises a
`BattleFileError` naming the file, the 1-based line and the problem. Both paths give identical arrays for
valid input (tested); the record-by-record cost is paid only by a chunk that has a problem.

Rules for the optional fields (same for every format):
- ``tstamp``: a finite number (seconds since the epoch in FastChat); absent, null or NaN -> NaN.
- category: ``category`` (string) if present and non-empty; otherwise ``category_tag`` when that is a
  string. FastChat's ``category_tag`` is usually an object of tag -> bool/object (multi-label); an object or
  array there is ignored, because one battle has one category here. Empty string -> no category (-1).
- voter: ``voter`` if present and non-empty, otherwise ``judge`` (FastChat's name for the voter); a string
  or an integer (written in decimal). Empty string -> no voter (-1).
- ``anony``: true/false; absent or null -> True.
- ``conv_metadata``: an object; see `STYLE_FEATURES`. Absent or null -> a NaN style row.
Null counts as absent for every optional field. Unknown fields are ignored. CSV files carry the scalar
fields only (model_a, model_b, winner, tstamp, category, voter/judge, anony); other columns are ignored.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import numbers
import os
import re
from collections.abc import Callable, Iterable, Mapping
from itertools import islice, repeat
from typing import Any, NamedTuple

import numpy as np
import orjson

# Outcome codes, from the point of view of model_a.
A_WINS, B_WINS, TIE, TIE_BOTHBAD = 0, 1, 2, 3
OUTCOME_LABELS = ("model_a", "model_b", "tie", "tie (bothbad)")

# Per-side style counts read from FastChat's conv_metadata, in this order (see Battles.style).
STYLE_FEATURES = ("sum_assistant_tokens", "header_count", "list_count", "bold_count")


class BattleFileError(ValueError):
    """A battle file that cannot be read; the message names the file and, where known, the line."""

    def __init__(self, path: str, line: int | None, message: str):
        self.path, self.line, self.reason = str(path), line, message
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")


class Battles(NamedTuple):
    """Encoded battles, one row per battle, in file order; codes index the name tuples."""

    model_a: np.ndarray  # int32 (n,)
    model_b: np.ndarray  # int32 (n,)
    outcome: np.ndarray  # int8 (n,): A_WINS, B_WINS, TIE or TIE_BOTHBAD
    models: tuple[str, ...]
    category: np.ndarray  # int32 (n,), -1 where the row has none
    categories: tuple[str, ...]
    voter: np.ndarray  # int32 (n,), -1 where the row has none
    voters: tuple[str, ...]
    tstamp: np.ndarray  # float64 (n,), NaN where the row has none
    anony: np.ndarray  # bool (n,), True where the row has no `anony` field
    style: np.ndarray | None  # float64 (n, 2, len(STYLE_FEATURES)): [side a, side b]; NaN rows lack metadata
    sha256: str  # of the file's bytes; "" for battles built from records in memory
    # float64 (n,) per-battle weights (the `weight` field, 1 where a row has none), or None when no row has one.
    # The arena down-weights battles on heavily repeated prompts; the fits count a battle `weight` times.
    weight: np.ndarray | None = None


FORMATS = ("json", "jsonl", "csv")

# Winner label -> outcome code. FastChat labels for JSON and FastChat CSV; LLMFAO names the side instead
# (its `left` column plays model_a).
_FASTCHAT_LABELS = dict(zip(OUTCOME_LABELS, (A_WINS, B_WINS, TIE, TIE_BOTHBAD)))
_LLMFAO_LABELS = {"left": A_WINS, "right": B_WINS, "tie": TIE}

# conv_metadata keys per STYLE_FEATURES entry, (side a, side b). In FastChat the three *_count fields are
# objects of sub-counts ({"h1": .., "h2": ..}, {"ordered": .., "unordered": ..}, {"**": .., "__": ..}); the
# feature is their sum. Plain numbers are accepted too.
_STYLE_KEYS = (
    ("sum_assistant_a_tokens", "sum_assistant_b_tokens"),
    ("header_count_a", "header_count_b"),
    ("list_count_a", "list_count_b"),
    ("bold_count_a", "bold_count_b"),
)

_REQUIRED = ("model_a", "model_b", "winner")
_OPTIONAL = ("tstamp", "category", "category_tag", "voter", "judge", "anony", "conv_metadata", "weight")
_CSV_OPTIONAL = ("tstamp", "category", "voter", "judge", "anony", "weight")

# Records per chunk: big enough that per-chunk overhead vanishes, small enough that a chunk's parsed
# objects are freed early (a million parsed dicts at once cost ~0.5 GB) and that a bad record is found by
# re-reading at most one chunk record by record.
_CHUNK = 1 << 16
_JSONL_CHUNK_BYTES = 1 << 22

_MISSING = object()
_NoneType = type(None)
_BOM = b"\xef\xbb\xbf"
_WS = re.compile(rb"[ \t\r\n]*")
# Top-level JSON structure for locating array elements: strings are skipped whole (unrolled-loop pattern).
_JSON_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]', re.DOTALL)

_Locate = Callable[[int], "tuple[int | None, str]"]


class _Reject(Exception):
    """A record that breaks a rule; the argument is the message for the user."""


class _Slow(Exception):
    """The fast path found something it does not handle; re-read the chunk record by record."""


# --------------------------------------------------------------------------------------------- public API


def read_battles(path: str | os.PathLike, *, format: str | None = None) -> Battles:
    """Read and encode a battle file.

    The format is `format` when given ("json": one JSON array of objects, "jsonl"/"ndjson": JSON Lines,
    "csv"); otherwise it is guessed from the extension (.json, .jsonl/.ndjson, .csv) and, for JSON, from
    the first non-blank byte (``[``: a JSON array, ``{``: JSON Lines), so a .json file holding JSON Lines
    still reads. Without a telling extension the first byte decides, and a first line with commas and a
    ``winner`` column means CSV. Blank lines are skipped; a UTF-8 byte-order mark is ignored.

    A CSV file whose header has ``left``, ``right`` and ``winner`` but no ``model_a`` is read as the LLMFAO
    crowd format: ``left`` plays model_a, winner is left/right/tie, ``worker`` is the voter.

    Any problem with the file raises `BattleFileError` with the 1-based line as an editor shows it (for a
    JSON array, the line where the offending element starts, plus its 0-based index in the message).
    """
    name = os.fspath(path)
    if format is not None:
        format = format.lower()
        if format == "ndjson":
            format = "jsonl"
        if format not in FORMATS:
            raise ValueError(f"unknown battle file format {format!r}; expected one of 'json', 'jsonl', 'csv'")
    try:
        with open(name, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise BattleFileError(name, None, "file not found") from None
    except IsADirectoryError:
        raise BattleFileError(name, None, "is a directory, not a battle file") from None
    except PermissionError:
        raise BattleFileError(name, None, "cannot read the file: permission denied") from None
    except OSError as e:
        raise BattleFileError(name, None, f"cannot read the file: {e.strerror or e}") from None
    sha256 = hashlib.sha256(data).hexdigest()
    body = data[3:] if data.startswith(_BOM) else data
    first = _WS.match(body).end()
    if first == len(body):
        raise BattleFileError(name, None, "file is empty")
    fmt = format or _guess_format(name, body, first)
    if fmt == "json":
        battles = _read_json(name, body)
    elif fmt == "jsonl":
        battles = _read_jsonl(name, body)
    else:
        battles = _read_csv(name, body)
    return battles._replace(sha256=sha256)


def encode_battles(records: Iterable[Mapping[str, Any]], *, source: str = "<records>") -> Battles:
    """Encode in-memory battle records (same fields and rules as `read_battles`'s JSON formats).

    Errors name `source` and line = record index + 1. Numpy scalars are accepted where Python numbers are.
    `sha256` is "" since there are no file bytes.
    """
    enc = _Encoder(source, noun="field", thing="mapping")
    it = iter(records)
    start = 0
    while True:
        chunk = list(islice(it, _CHUNK))
        if not chunk:
            break
        chunk = [r if type(r) is dict or not isinstance(r, Mapping) else dict(r) for r in chunk]
        enc.add_records(chunk, lambda j, s=start: (s + j + 1, ""))
        start += len(chunk)
    return enc.finish("no battle records")


def write_battles_jsonl(battles: Battles, path: str | os.PathLike) -> None:
    """Write battles as canonical FastChat JSON Lines, one object per battle (see `battles_jsonl_lines`)."""
    with open(os.fspath(path), "wb") as f:
        f.write(b"".join(battles_jsonl_lines(battles)))


def battles_jsonl_lines(battles: Battles) -> list[bytes]:
    """The canonical FastChat JSON Lines of `battles`, one line (ending in a newline) per battle.

    Fields: model_a, model_b, winner; tstamp and category where present; ``judge`` (FastChat's name for the
    voter) where present; anony always (the arrays cannot tell a default True from a written one); ``weight``
    where a battle's weight is not 1; conv_metadata where the style row has any finite value, with each feature
    written as one number (the sum of FastChat's sub-counts) and NaN features left out (and ``{}`` on the first
    row when the style array exists but holds no finite value, so it reads back as an array). `read_battles`
    gives back identical arrays for battles whose name tuples are in first-appearance order (as `read_battles`
    and `encode_battles` make them).

    Each line is exactly what orjson writes for that object (compact, keys in the order above), but built a
    column at a time: every name is escaped once, the floats of a column are formatted by one orjson call, and
    a row is one bytes %-format. Snapshots write a million of these twice (battle file and vote file), where
    one dict and one dumps per row took ~14 s.
    """
    n = len(battles.model_a)
    if n == 0:
        return []

    def quoted(names) -> list[bytes]:
        return [orjson.dumps(name) for name in names]

    def number_column(values: np.ndarray, present: np.ndarray, key: bytes) -> list[bytes]:
        """`,"key":value` where present (orjson's float text, from one call over the column), else b""."""
        texts = orjson.dumps(np.where(present, values, 0.0).tolist())[1:-1].split(b",")
        return [b"," + key + b":" + t if p else b"" for t, p in zip(texts, present.tolist())]

    def coded_column(codes: np.ndarray, names: tuple[str, ...], key: bytes) -> list[bytes]:
        pieces = [b"," + key + b":" + q for q in quoted(names)]
        return [pieces[c] if c >= 0 else b"" for c in codes.tolist()]

    models = quoted(battles.models)
    winners = [orjson.dumps(label) for label in OUTCOME_LABELS]
    a = [models[i] for i in battles.model_a.tolist()]
    b = [models[i] for i in battles.model_b.tolist()]
    winner = [winners[o] for o in battles.outcome.tolist()]
    tstamp = number_column(battles.tstamp, ~np.isnan(battles.tstamp), b'"tstamp"')
    category = coded_column(battles.category, battles.categories, b'"category"')
    judge = coded_column(battles.voter, battles.voters, b'"judge"')
    anony = [b"true" if x else b"false" for x in battles.anony.tolist()]
    if battles.weight is None:
        weight = repeat(b"", n)
    else:
        weight = number_column(battles.weight, battles.weight != 1.0, b'"weight"')
    meta = repeat(b"", n) if battles.style is None else _conv_metadata_column(battles.style)
    return [
        b'{"model_a":%b,"model_b":%b,"winner":%b%b%b%b,"anony":%b%b%b}\n' % row
        for row in zip(a, b, winner, tstamp, category, judge, anony, weight, meta)
    ]


def _conv_metadata_column(style: np.ndarray) -> list[bytes]:
    """`,"conv_metadata":{...}` per row, or b"" for a row with no finite value (see battles_jsonl_lines)."""
    n = style.shape[0]
    flat = style.transpose(0, 2, 1).reshape(n, -1)  # feature-major, side-minor: _STYLE_KEYS' order
    flat_keys = [key for keys in _STYLE_KEYS for key in keys]
    # Rows whose eight counts are all whole numbers (the usual case) are written from one int list each, with
    # one template; the others go through orjson, value by value (ints where whole). Same bytes either way.
    whole = (np.isfinite(flat) & (np.abs(flat) < 2**53)).all(axis=1)
    whole &= (np.where(whole[:, None], flat, 0.0) % 1 == 0).all(axis=1)
    # The whole rows' digits come from one orjson call over the int array ("[[1,2,...],[...]]"), split per row
    # and per value as bytes: no Python int is ever made (making 8 million of them was most of the cost).
    digits = orjson.dumps(np.where(whole[:, None], flat, 0).astype(np.int64), option=orjson.OPT_SERIALIZE_NUMPY)
    whole_rows = digits[2:-2].split(b"],[")
    template = b',"conv_metadata":{' + b",".join(b'"%s":%%b' % k.encode() for k in flat_keys) + b"}"
    any_finite = np.isfinite(flat).any(axis=1)
    out = []
    for i, (is_whole, values) in enumerate(zip(whole.tolist(), whole_rows)):
        if is_whole:
            out.append(template % tuple(values.split(b",")))
            continue
        md = {}
        for f, keys in enumerate(_STYLE_KEYS):
            for side in (0, 1):
                v = float(style[i, side, f])
                if math.isfinite(v):
                    md[keys[side]] = int(v) if v.is_integer() and abs(v) < 2**53 else v
        out.append(b',"conv_metadata":' + orjson.dumps(md) if md else b"")
    if not any_finite.any():  # a style array with no finite value still reads back as an array
        out[0] = b',"conv_metadata":{}'
    return out


# ------------------------------------------------------------------------------------------ the formats


def _guess_format(name: str, body: bytes, first: int) -> str:
    lower = name.lower()
    lead = body[first : first + 1]
    if lower.endswith((".json", ".jsonl", ".ndjson")):
        if lead == b"[":
            return "json"
        if lead == b"{":
            return "jsonl"
        return "json" if lower.endswith(".json") else "jsonl"
    if lower.endswith(".csv"):
        return "csv"
    if lead == b"[":
        return "json"
    if lead == b"{":
        return "jsonl"
    end = body.find(b"\n", first)
    head = body[first : end if end >= 0 else len(body)]
    if b"," in head and b"winner" in head:
        return "csv"
    raise BattleFileError(
        name, None, "cannot tell the file format from its name or content; pass format='json', 'jsonl' or 'csv'"
    )


def _read_json(name: str, body: bytes) -> Battles:
    try:
        recs = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise BattleFileError(name, e.lineno, f"invalid JSON: {_json_msg(e)} (column {e.colno})") from None
    if not isinstance(recs, list):
        hint = "; for JSON Lines use format='jsonl'" if isinstance(recs, dict) else ""
        raise BattleFileError(name, 1, f"expected a JSON array of battle objects, got {_kind(recs)}{hint}")
    enc = _Encoder(name, noun="field", thing="JSON object")

    def locate(i: int) -> tuple[int | None, str]:
        return _array_element_line(body, i), f"element [{i}]: "

    for s in range(0, len(recs), _CHUNK):
        enc.add_records(recs[s : s + _CHUNK], lambda j, s=s: locate(s + j))
    return enc.finish("no battles: the JSON array is empty")


def _read_jsonl(name: str, body: bytes) -> Battles:
    enc = _Encoder(name, noun="field", thing="JSON object")
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    pos, first_line, size = 0, 1, len(body)
    while pos < size:
        # Cut at a newline so each chunk holds whole lines; `first_line` is the chunk's first line number.
        end = body.find(b"\n", pos + _JSONL_CHUNK_BYTES)
        if end < 0:
            end = size
        lines = body[pos:end].split(b"\n")
        try:
            recs = list(map(loads, filter(None, lines)))
            numbers_ = None if len(recs) == len(lines) else [first_line + k for k, ln in enumerate(lines) if ln]
        except decode_error:
            recs, numbers_ = [], []
            for k, ln in enumerate(lines):
                if not ln.strip():
                    continue
                try:
                    recs.append(loads(ln))
                except decode_error as e:
                    # Report an earlier bad record first: the user reads errors top to bottom.
                    if recs:
                        enc.add_records(recs, lambda j, n=numbers_: (n[j], ""))
                    raise BattleFileError(
                        name, first_line + k, f"invalid JSON: {_json_msg(e)} (column {e.colno})"
                    ) from None
                numbers_.append(first_line + k)
        if recs:
            if numbers_ is None:
                enc.add_records(recs, lambda j, f=first_line: (f + j, ""))
            else:
                enc.add_records(recs, lambda j, n=numbers_: (n[j], ""))
        first_line += len(lines)
        pos = end + 1
    return enc.finish("no battles: the file has only blank lines")


def _read_csv(name: str, body: bytes) -> Battles:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BattleFileError(name, body.count(b"\n", 0, e.start) + 1, "not valid UTF-8 text") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        rows = list(reader)
    except csv.Error as e:
        raise BattleFileError(name, reader.line_num, f"bad CSV: {e}") from None
    rows = [r for r in rows if r]  # csv gives [] for a blank line
    header = [h.strip() for h in rows[0]]
    body_rows = rows[1:]
    row_lines: list[int] = []

    def line_of(k: int) -> int:
        """1-based line where non-blank row k (0 = header) starts; re-parses once, only for messages."""
        if not row_lines:
            rd = csv.reader(io.StringIO(text, newline=""), strict=True)
            prev = 0
            for r in rd:
                if r:
                    row_lines.append(prev + 1)
                prev = rd.line_num
        return row_lines[k]

    seen: set[str] = set()
    for h in header:
        if h in seen:
            raise BattleFileError(name, line_of(0), f"duplicate column {h!r} in the header")
        seen.add(h)
    if "model_a" not in seen and {"left", "right", "winner"} <= seen:
        columns = {"model_a": "left", "model_b": "right", "winner": "winner", "voter": "worker"}
        columns.update({f: f for f in ("tstamp", "category", "judge", "anony")})
        labels = _LLMFAO_LABELS
    else:
        columns = {f: f for f in _REQUIRED + _CSV_OPTIONAL}
        labels = _FASTCHAT_LABELS
    for f in _REQUIRED:
        if columns[f] not in seen:
            raise BattleFileError(
                name, line_of(0), f"missing required column {columns[f]!r} (the header has: {', '.join(header)})"
            )
    ncols = len(header)
    if not body_rows:
        raise BattleFileError(name, None, "no battles: the file has only a header")
    if set(map(len, body_rows)) != {ncols}:
        k = next(k for k, r in enumerate(body_rows) if len(r) != ncols)
        raise BattleFileError(
            name, line_of(k + 1), f"expected {ncols} fields as in the header, got {len(body_rows[k])}"
        )
    where = {h: i for i, h in enumerate(header)}
    enc = _Encoder(name, noun="column", thing="row", labels=labels, display=columns)
    for s in range(0, len(body_rows), _CHUNK):
        transposed = list(zip(*body_rows[s : s + _CHUNK]))
        cols: dict[str, list] = {}
        for field, column in columns.items():
            if column not in where:
                continue
            raw = transposed[where[column]]
            if field in ("tstamp", "weight"):
                cols[field] = [_csv_number(v) for v in raw]
            elif field == "anony":
                cols[field] = [_csv_bool(v) for v in raw]
            elif field in _REQUIRED:
                cols[field] = list(raw)
            else:
                cols[field] = [v if v else None for v in raw]
        enc.add_columns(cols, len(transposed[0]), lambda j, s=s: (line_of(s + j + 1), ""))
    return enc.finish("no battles")


def _csv_number(v: str) -> Any:
    if not v:
        return None
    try:
        return float(v)
    except ValueError:
        return v  # rejected with the field's message


_CSV_TRUE, _CSV_FALSE = {"true", "1"}, {"false", "0"}


def _csv_bool(v: str) -> Any:
    if not v:
        return None
    low = v.strip().lower()
    if low in _CSV_TRUE:
        return True
    if low in _CSV_FALSE:
        return False
    return v  # rejected with the field's message


def _array_element_line(body: bytes, index: int) -> int | None:
    """1-based line where element `index` of the top-level JSON array starts (error messages only)."""
    depth, commas, boundary = 0, 0, -1
    for m in _JSON_TOKEN.finditer(body):
        c = body[m.start()]
        if c == 0x22:  # a string
            continue
        if c in b"[{":
            depth += 1
            if depth == 1 and index == 0:
                boundary = m.start()
                break
        elif c in b"]}":
            depth -= 1
        elif depth == 1:  # a top-level comma
            commas += 1
            if commas == index:
                boundary = m.start()
                break
    if boundary < 0:
        return None
    start = _WS.match(body, boundary + 1).end()
    return body.count(b"\n", 0, start) + 1


def _json_msg(e: orjson.JSONDecodeError) -> str:
    return e.msg or str(e)


# ---------------------------------------------------------------------------------------------- encoder


class _Encoder:
    """Accumulates chunks of records into code arrays; name -> code dicts persist across chunks."""

    def __init__(
        self,
        path: str,
        *,
        noun: str,
        thing: str,
        labels: dict[str, int] = _FASTCHAT_LABELS,
        display: dict[str, str] | None = None,
    ):
        self.path, self.noun, self.thing, self.labels = path, noun, thing, labels
        self.display = display or {}
        self.expected = ", ".join(repr(k) for k in labels)
        self.models: dict[str, int] = {}
        self.categories: dict[str, int] = {}
        self.voters: dict[str, int] = {}
        self.parts: list[tuple] = []

    # -- entry points

    def add_records(self, recs: list, locate: _Locate) -> None:
        """Records as parsed (dicts, or anything else for the slow path to reject)."""
        n = len(recs)
        try:
            keys = set().union(*recs)
            get = dict.get
            cols = {f: list(map(get, recs, repeat(f), repeat(_MISSING))) for f in _REQUIRED}
            cols.update({f: list(map(get, recs, repeat(f))) for f in _OPTIONAL if f in keys})
            part = self._fast(cols, n)
        except (_Slow, TypeError):
            part = self._slow(recs, locate)
        self.parts.append(part)

    def add_columns(self, cols: dict[str, list], n: int, locate: _Locate) -> None:
        """Columns by canonical field name (CSV), each a list of n values, None where a cell is empty."""
        try:
            part = self._fast(cols, n)
        except (_Slow, TypeError):
            items = list(cols.items())
            recs = [{f: c[i] for f, c in items if c[i] is not None} for i in range(n)]
            part = self._slow(recs, locate)
        self.parts.append(part)

    def finish(self, empty_message: str) -> Battles:
        if not self.parts:
            raise BattleFileError(self.path, None, empty_message)
        cols = list(zip(*self.parts))
        styles = cols[7]
        if all(s is None for s in styles):
            style = None
        else:
            style = np.concatenate(
                [
                    s if s is not None else np.full((len(p[0]), 2, len(STYLE_FEATURES)), np.nan)
                    for s, p in zip(styles, self.parts)
                ]
            )
        cat = lambda k: np.concatenate(cols[k])  # noqa: E731
        weight = None
        if any(w is not None for w in cols[8]):
            weight = np.concatenate([w if w is not None else np.ones(len(p[0])) for w, p in zip(cols[8], self.parts)])
        return Battles(
            model_a=cat(0),
            model_b=cat(1),
            outcome=cat(2),
            models=tuple(self.models),
            category=cat(3),
            categories=tuple(self.categories),
            voter=cat(4),
            voters=tuple(self.voters),
            tstamp=cat(5),
            anony=cat(6),
            style=style,
            sha256="",
            weight=weight,
        )

    # -- fast path: whole columns; any doubt -> _Slow. Commits names to the dicts only once all is checked.

    def _fast(self, cols: dict[str, list], n: int) -> tuple:
        names = [None] * (2 * n)
        names[0::2], names[1::2] = cols["model_a"], cols["model_b"]
        local = dict.fromkeys(names)  # first appearance, row by row, a before b; TypeError if unhashable
        for k in local:
            if not isinstance(k, str) or not k:
                raise _Slow
        for i, k in enumerate(local):
            local[k] = i
        pair = np.fromiter(map(local.__getitem__, names), np.int32, 2 * n)
        a_local, b_local = pair[0::2], pair[1::2]
        if (a_local == b_local).any():
            raise _Slow
        winner, labels = cols["winner"], self.labels
        for k in dict.fromkeys(winner):
            if k not in labels:
                raise _Slow
        outcome = np.fromiter(map(labels.__getitem__, winner), np.int8, n)

        tstamp = np.full(n, np.nan)
        if (ts := cols.get("tstamp")) is not None:
            if not set(map(type, ts)) <= {float, int, _NoneType}:
                raise _Slow
            try:
                tstamp = np.array(ts, dtype=np.float64)
            except OverflowError:
                raise _Slow from None
            if np.isinf(tstamp).any():
                raise _Slow

        category = cols.get("category")
        if category is not None and not set(map(type, category)) <= {str, _NoneType}:
            raise _Slow
        if (tag := cols.get("category_tag")) is not None:
            tag_types = set(map(type, tag))
            if not tag_types <= {str, dict, list, _NoneType}:
                raise _Slow
            if str in tag_types:
                if category is None:
                    category = [t if type(t) is str else None for t in tag]
                else:
                    category = [c if c else (t if type(t) is str else None) for c, t in zip(category, tag)]

        voter, judge = cols.get("voter"), cols.get("judge")
        for col in (voter, judge):
            if col is not None and not set(map(type, col)) <= {str, int, _NoneType}:
                raise _Slow
        if voter is None:
            voter = judge
        elif judge is not None:
            voter = [v if v is not None and v != "" else j for v, j in zip(voter, judge)]

        anony_col = cols.get("anony")
        if anony_col is None:
            anony = np.ones(n, dtype=bool)
        else:
            if not set(map(type, anony_col)) <= {bool, _NoneType}:
                raise _Slow
            anony = np.fromiter([v is not False for v in anony_col], bool, n)

        style = None
        if (meta := cols.get("conv_metadata")) is not None:
            kinds = set(map(type, meta))
            if not kinds <= {dict, _NoneType}:
                raise _Slow
            if dict in kinds:
                style = _style_columns(meta, n)
                if style is None:  # sub-count objects, or something to reject: one record at a time
                    style = np.full((n, 2, len(STYLE_FEATURES)), np.nan)
                    for i, md in enumerate(meta):
                        if md is not None:
                            try:
                                style[i] = _style_values(md, self.noun)
                            except _Reject:
                                raise _Slow from None

        weight = None
        if (wt := cols.get("weight")) is not None:
            if not set(map(type, wt)) <= {float, int, _NoneType}:
                raise _Slow
            try:
                weight = np.array([1.0 if v is None else v for v in wt], dtype=np.float64)
            except OverflowError:
                raise _Slow from None
            if not (np.isfinite(weight).all() and (weight >= 0).all()):
                raise _Slow

        # Everything checked: commit new names in first-appearance order.
        models = self.models
        remap = np.fromiter(
            (models.setdefault(k if type(k) is str else str(k), len(models)) for k in local), np.int32, len(local)
        )
        return (
            remap[a_local],
            remap[b_local],
            outcome,
            _optional_codes(category, self.categories, n),
            _optional_codes(voter, self.voters, n),
            tstamp,
            anony,
            style,
            weight,
        )

    # -- slow path: the reference, one record at a time, first broken rule raises

    def _slow(self, recs: list, locate: _Locate) -> tuple:
        n = len(recs)
        a = np.empty(n, np.int32)
        b = np.empty(n, np.int32)
        outcome = np.empty(n, np.int8)
        category = np.full(n, -1, np.int32)
        voter = np.full(n, -1, np.int32)
        tstamp = np.full(n, np.nan)
        anony = np.ones(n, bool)
        style = weight = None
        models, categories, voters = self.models, self.categories, self.voters
        for i, rec in enumerate(recs):
            try:
                ma, mb, o, ts, cat, vot, an, st, wt = self._check(rec)
            except _Reject as e:
                line, prefix = locate(i)
                raise BattleFileError(self.path, line, prefix + str(e.args[0])) from None
            a[i] = models.setdefault(ma, len(models))
            b[i] = models.setdefault(mb, len(models))
            outcome[i] = o
            tstamp[i] = ts
            if cat is not None:
                category[i] = categories.setdefault(cat, len(categories))
            if vot is not None:
                voter[i] = voters.setdefault(vot, len(voters))
            anony[i] = an
            if st is not None:
                if style is None:
                    style = np.full((n, 2, len(STYLE_FEATURES)), np.nan)
                style[i] = st
            if wt is not None:
                if weight is None:
                    weight = np.ones(n)
                weight[i] = wt
        return a, b, outcome, category, voter, tstamp, anony, style, weight

    def _name(self, field: str) -> str:
        return f"{self.noun} {self.display.get(field, field)!r}"

    def _number(self, rec: Mapping, field: str) -> float | None:
        """The record's `field` as a float, None when absent; a non-number or a number beyond float's range is
        refused, naming the field."""
        value = rec.get(field)
        if value is None:
            return None
        if not _is_number(value):
            raise _Reject(f"{self._name(field)} must be a number, got {_show(value)}")
        try:
            return float(value)
        except OverflowError:
            raise _Reject(f"{self._name(field)} is out of range: {_show(value)}") from None

    def _check(self, rec: Any) -> tuple:
        if not isinstance(rec, dict):
            raise _Reject(f"expected a {self.thing}, got {_kind(rec)}")
        pair = []
        for field in ("model_a", "model_b"):
            v = rec.get(field, _MISSING)
            if v is _MISSING:
                raise _Reject(f"missing required {self._name(field)}")
            if not isinstance(v, str):
                raise _Reject(f"{self._name(field)} must be a string (a model name), got {_show(v)}")
            if not v:
                raise _Reject(f"empty model name in {self._name(field)}")
            pair.append(str(v))
        if pair[0] == pair[1]:
            a_name, b_name = (self.display.get(f, f) for f in ("model_a", "model_b"))
            raise _Reject(f"self-battle: {a_name} and {b_name} are both {pair[0]!r}")
        w = rec.get("winner", _MISSING)
        if w is _MISSING:
            raise _Reject(f"missing required {self._name('winner')}")
        try:
            o = self.labels[w]
        except (KeyError, TypeError):
            raise _Reject(f"unknown winner label {_show(w)}; expected one of {self.expected}") from None

        ts = self._number(rec, "tstamp")
        if ts is None:
            ts = math.nan
        elif math.isinf(ts):
            raise _Reject(f"{self._name('tstamp')} must be finite, got {ts}")

        cat = rec.get("category")
        if cat is not None and not isinstance(cat, str):
            raise _Reject(f"{self._name('category')} must be a string, got {_show(cat)}")
        tag = rec.get("category_tag")
        if tag is not None and not isinstance(tag, (str, dict, list)):
            raise _Reject(f"{self._name('category_tag')} must be a string or an object, got {_show(tag)}")
        if not cat:
            cat = tag if isinstance(tag, str) and tag else None

        names = []
        for field in ("voter", "judge"):
            v = rec.get(field)
            if v is not None and not (isinstance(v, str) or _is_integer(v)):
                raise _Reject(f"{self._name(field)} must be a string, got {_show(v)}")
            names.append(v)
        vot = names[0] if names[0] is not None and names[0] != "" else names[1]
        vot = None if vot is None or vot == "" else (str(vot) if isinstance(vot, str) else str(int(vot)))

        an = rec.get("anony")
        if an is None:
            an = True
        elif isinstance(an, (bool, np.bool_)):
            an = bool(an)
        else:
            raise _Reject(f"{self._name('anony')} must be true or false, got {_show(an)}")

        md = rec.get("conv_metadata")
        st = None
        if md is not None:
            if not isinstance(md, Mapping):
                raise _Reject(f"{self._name('conv_metadata')} must be an object, got {_show(md)}")
            st = _style_values(md, self.noun)

        wt = self._number(rec, "weight")
        if wt is not None and not (math.isfinite(wt) and wt >= 0):
            raise _Reject(f"{self._name('weight')} must be a finite number >= 0, got {_show(wt)}")
        return pair[0], pair[1], o, ts, (str(cat) if cat is not None else None), vot, an, st, wt


def _optional_codes(col: list | None, index: dict[str, int], n: int) -> np.ndarray:
    """Codes for an optional name column (None or "" -> -1); new names are added to `index` in order."""
    if col is None:
        return np.full(n, -1, np.int32)
    local = dict.fromkeys(col)
    for k in local:
        local[k] = -1 if k is None or k == "" else index.setdefault(k if type(k) is str else str(k), len(index))
    return np.fromiter(map(local.__getitem__, col), np.int32, n)


def _style_columns(meta: list, n: int) -> np.ndarray | None:
    """The fast path's style array, a key at a time, when every count present is a plain finite int or float;
    None when some value needs `_style_values` (a sub-count object, a bool, NaN, a huge int)."""
    style = np.full((n, 2, len(STYLE_FEATURES)), np.nan)
    for f, keys in enumerate(_STYLE_KEYS):
        for side, key in enumerate(keys):
            column = [None if md is None else md.get(key) for md in meta]
            if not set(map(type, column)) <= {int, float, _NoneType}:
                return None
            present = np.fromiter((v is not None for v in column), bool, n)
            try:
                values = np.array([math.nan if v is None else v for v in column], dtype=np.float64)
            except OverflowError:
                return None
            if not np.isfinite(values[present]).all():
                return None
            style[:, side, f] = values
    return style


def _style_values(md: Mapping, noun: str) -> list[list[float]]:
    """conv_metadata -> [[a features], [b features]] in STYLE_FEATURES order; a missing/null key -> NaN."""
    out = [[math.nan] * len(STYLE_FEATURES), [math.nan] * len(STYLE_FEATURES)]
    for f, keys in enumerate(_STYLE_KEYS):
        for side, key in enumerate(keys):
            v = md.get(key)
            if v is None:
                continue
            if isinstance(v, Mapping):
                subs = list(v.values())
                if not all(_is_number(s) for s in subs):
                    bad = next(s for s in subs if not _is_number(s))
                    raise _Reject(f"{noun} 'conv_metadata': {key!r} sub-counts must be numbers, got {_show(bad)}")
                total = float(sum(subs))
            elif _is_number(v):
                total = float(v)
            else:
                raise _Reject(
                    f"{noun} 'conv_metadata': {key!r} must be a number or an object of counts, got {_show(v)}"
                )
            if not math.isfinite(total):
                raise _Reject(f"{noun} 'conv_metadata': {key!r} must be finite, got {total}")
            out[side][f] = total
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def _is_integer(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, Mapping):
        return "an object"
    if isinstance(v, (list, tuple)):
        return "an array"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, numbers.Number):
        return "a number"
    return type(v).__name__


def _show(v: Any) -> str:
    """A value as the user wrote it, shortened: JSON spelling for null/true/false, quotes for strings."""
    if v is None:
        return "null"
    if v is True or v is False:
        return "true" if v else "false"
    if isinstance(v, Mapping):
        return "an object"
    if isinstance(v, (list, tuple)):
        return "an array"
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."
