"""Safety scores: measured elsewhere, signed off by the operator's import, stored all or nothing, and the
score that counts for a snapshot's date."""

from __future__ import annotations

import csv
import difflib
import io
import json
import math
import re
from datetime import date, datetime, timezone
from typing import Any, Iterable, NamedTuple

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from arena.catalog.audit import OPERATOR, record_action
from arena.errors import BadRequest, Conflict, NotFound, Rejected
from arena.leaderboard.reading import iso_utc
from arena.models import Model, SafetyScore

SCORE_FIELDS = ("model", "metric", "value", "ci_low", "ci_high", "source", "date")
REQUIRED_SCORE_FIELDS = ("model", "metric", "value", "source", "date")
METRIC_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,99}")
_DATE_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}")
MAX_TEXT_CHARS = 200  # Model.name and SafetyScore.source; a metric is at most 100 (METRIC_PATTERN)


# ------------------------------------------------------------------------------------------------ safety scores


class Problem(NamedTuple):
    where: str  # "line 3", "record 2" (in a JSON list), or "file"
    message: str


class ScoreFileError(Rejected):
    """A safety score file that does not validate; nothing of it was stored. `problems` lists every one."""

    def __init__(self, name: str, problems: list[Problem], records: int):
        self.name, self.problems, self.records = name, problems, records
        super().__init__(
            "invalid_scores",
            f"{name}: nothing imported: {len(problems)} problem(s) in {records} record(s)",
            details={"problems": [{"where": p.where, "message": p.message} for p in problems]},
        )


class Score(NamedTuple):
    """A stored safety measurement, with its model's name."""

    id: int
    model: str
    metric: str
    value: float
    ci_low: float | None
    ci_high: float | None
    source: str
    measured_on: date
    imported_at: datetime


def score_format(filename: str, fmt: str | None = None) -> str:
    """The format named, or the one the file name says (.csv is CSV, anything else JSON)."""
    if fmt is not None:
        if fmt not in ("csv", "json"):
            raise BadRequest("unknown_format", f"unknown format {fmt!r}: csv or json")
        return fmt
    return "csv" if filename.lower().endswith(".csv") else "json"


def read_score_records(text: str, fmt: str) -> tuple[list[tuple[str, Any]], list[Problem]]:
    """The file's records with where each is: CSV rows, a JSON list (or one object), or JSON Lines."""
    text = text.removeprefix("\ufeff")
    if fmt == "csv":
        return _csv_records(text)
    stripped = text.strip()
    if not stripped:
        return [], []
    if stripped.startswith("["):
        try:
            items = json.loads(stripped)
        except json.JSONDecodeError as e:
            return [], [Problem(f"line {e.lineno}", f"not valid JSON: {e.msg} (column {e.colno})")]
        return [(f"record {i}", item) for i, item in enumerate(items, 1)], []
    try:
        return [("record 1", json.loads(stripped))], []  # one object, possibly over several lines
    except json.JSONDecodeError:
        pass
    records, problems = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append((f"line {number}", json.loads(line)))
            except json.JSONDecodeError as e:
                problems.append(Problem(f"line {number}", f"not valid JSON: {e.msg} (column {e.colno})"))
    return records, problems


def _csv_records(text: str) -> tuple[list[tuple[str, Any]], list[Problem]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    problems = []
    missing = [f for f in REQUIRED_SCORE_FIELDS if f not in header]
    unknown = [f for f in header if f not in SCORE_FIELDS]
    if missing or unknown or len(set(header)) != len(header):
        parts = (
            ([f"missing column(s) {', '.join(missing)}"] if missing else [])
            + ([f"unknown column(s) {', '.join(map(repr, unknown))}"] if unknown else [])
            + (["a column appears twice"] if len(set(header)) != len(header) else [])
        )
        return [], [Problem("line 1", "; ".join(parts) + f" (the columns are {', '.join(SCORE_FIELDS)})")]
    records = []
    for row in reader:
        where = f"line {reader.line_num}"
        if None in row:
            problems.append(Problem(where, f"more cells than the {len(header)} columns"))
            continue
        # an empty optional cell (ci_low, ci_high) means "not given"; an empty required one is reported
        records.append(
            (where, {k: v for k, v in row.items() if v is not None and (v.strip() or k in REQUIRED_SCORE_FIELDS)})
        )
    return records, problems


def _number(value, field: str, *, text_allowed: bool) -> tuple[float | None, str | None]:
    """(the number, None) or (None, what is wrong)."""
    if isinstance(value, str) and text_allowed:
        try:
            number = float(value.strip())
        except ValueError:
            return None, f"{field} {value!r} is not a number"
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        return None, f"{field} must be a number, not {json.dumps(value)}"
    if not math.isfinite(number):
        return None, f"{field} must be a finite number, not {value!r}"
    return number, None


def _text_field(record: dict, field: str, limit: int) -> tuple[str | None, str | None]:
    value = record.get(field)
    if not isinstance(value, str) or not value.strip():
        return None, f"{field} must be a non-empty text"
    value = value.strip()
    if len(value) > limit or "\x00" in value:
        return None, f"{field} must be at most {limit} characters, without NUL"
    return value, None


def _folded(name: str) -> str:
    return re.sub(r"[\W_]+", "", name.casefold())


def _suggestion(name: str, known: Iterable[str]) -> str | None:
    """The known name closest to a mistyped one, or None: the same but for case, spaces and punctuation
    first, then difflib's closest match on the case-folded names."""
    by_folded = {}
    for k in known:
        by_folded.setdefault(_folded(k), k)
        by_folded.setdefault(k.casefold(), k)
    if _folded(name) in by_folded:
        return by_folded[_folded(name)]
    close = difflib.get_close_matches(name.casefold(), list(by_folded), n=1, cutoff=0.6)
    return by_folded[close[0]] if close else None


def unknown_model(name: str, known: Iterable[str]) -> str:
    suggestion = _suggestion(name, known)
    return f"unknown model {name!r}" + (f" (did you mean {suggestion!r}?)" if suggestion else "")


def check_scores(
    session: Session, records: list[tuple[str, Any]], *, text_numbers: bool
) -> tuple[list[dict], list[Problem]]:
    """Rows ready to insert, and every problem: fields, numbers, the interval, unknown models, duplicates
    within the file and of stored measurements (same model, metric, source and date)."""
    model_ids = dict(session.execute(select(Model.name, Model.id)).all())
    rows, problems, seen = [], [], {}
    for where, record in records:
        if not isinstance(record, dict):
            problems.append(Problem(where, "must be an object with the fields " + ", ".join(SCORE_FIELDS)))
            continue
        wrong = []
        unknown = sorted(set(record) - set(SCORE_FIELDS))
        if unknown:
            wrong.append(f"unknown field(s) {', '.join(map(repr, unknown))} (the fields are {', '.join(SCORE_FIELDS)})")
        missing = [f for f in REQUIRED_SCORE_FIELDS if record.get(f) in (None, "")]
        if missing:
            wrong.append(f"missing {', '.join(missing)}")
        values: dict[str, Any] = {}
        for field in ("model", "metric", "source"):
            if field in missing:
                continue
            values[field], error = _text_field(record, field, MAX_TEXT_CHARS if field != "metric" else 100)
            if error:
                wrong.append(error)
        if values.get("metric") and not METRIC_PATTERN.fullmatch(values["metric"]):
            wrong.append(
                f"metric {values['metric']!r} must be letters, digits and _ . : / - (starting with a letter or digit)"
            )
        for field in ("value", "ci_low", "ci_high"):
            if record.get(field) in (None, ""):
                values[field] = None
                continue
            values[field], error = _number(record[field], field, text_allowed=text_numbers)
            if error:
                wrong.append(error)
        if "date" not in missing:
            values["measured_on"], error = _date(record["date"])
            if error:
                wrong.append(error)
        value, low, high = values.get("value"), values.get("ci_low"), values.get("ci_high")
        if value is not None and ((low is not None and low > value) or (high is not None and high < value)):
            wrong.append(f"the interval [{_shown(low)}, {_shown(high)}] does not contain the value {value:g}")
        name = values.get("model")
        if name is not None and name not in model_ids:
            wrong.append(unknown_model(name, model_ids))
        if not wrong:
            key = (model_ids[name], values["metric"], values["source"], values["measured_on"])
            if key in seen:
                wrong.append(f"the same model, metric, source and date as {seen[key]}")
            seen.setdefault(key, where)
        if wrong:
            problems.extend(Problem(where, message) for message in wrong)
            continue
        rows.append(
            {
                "model_id": model_ids[name],
                "metric": values["metric"],
                "value": value,
                "ci_low": low,
                "ci_high": high,
                "source": values["source"],
                "measured_on": values["measured_on"],
                "_where": where,
                "_model": name,
            }
        )
    problems.extend(_stored_duplicates(session, rows))
    return rows, problems


def _date(value) -> tuple[date | None, str | None]:
    if isinstance(value, str) and _DATE_PATTERN.fullmatch(value.strip()):
        try:
            return date.fromisoformat(value.strip()), None
        except ValueError:
            pass
    return None, f"date must be a date as YYYY-MM-DD, not {json.dumps(value)}"


def _shown(number: float | None) -> str:
    return "-" if number is None else f"{number:g}"


def _stored_duplicates(session: Session, rows: list[dict]) -> list[Problem]:
    if not rows:
        return []
    stored = {}
    for model_ids in _chunks(sorted({row["model_id"] for row in rows}), 500):
        for score in session.scalars(select(SafetyScore).where(SafetyScore.model_id.in_(model_ids))):
            stored[(score.model_id, score.metric, score.source, score.measured_on)] = score
    problems = []
    for row in rows:
        score = stored.get((row["model_id"], row["metric"], row["source"], row["measured_on"]))
        if score is not None:
            problems.append(
                Problem(
                    row["_where"],
                    f"this measurement (model {row['_model']!r}, metric "
                    f"{row['metric']!r}, source {row['source']!r}, date "
                    f"{row['measured_on']}) is already stored, imported "
                    f"{iso_utc(score.imported_at)}",
                )
            )
    return problems


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def import_scores(session: Session, text: str, *, fmt: str, name: str = "the file") -> int:
    """Check every record, then store them all in one transaction; raises ScoreFileError listing every problem
    (nothing stored). Returns the number of measurements stored."""
    records, problems = read_score_records(text, fmt)
    rows, more = check_scores(session, records, text_numbers=fmt == "csv")
    problems += more
    if problems:
        raise ScoreFileError(name, problems, len(records))
    if not rows:
        raise Rejected("no_scores", f"{name}: no safety scores in the file")
    imported_at = datetime.now(timezone.utc)
    try:
        session.execute(
            insert(SafetyScore),
            [{**{k: v for k, v in row.items() if not k.startswith("_")}, "imported_at": imported_at} for row in rows],
        )
        record_action(
            session,
            OPERATOR,
            "safety.import",
            details={"file": name, "scores": len(rows), "metrics": sorted({row["metric"] for row in rows})},
        )
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict(
            "scores_changed",
            f"{name}: nothing imported: a measurement of the file was stored meanwhile "
            "by another import; run it again to see which",
        ) from None
    return len(rows)


def load_scores(session: Session, *, model: str | None = None, metric: str | None = None) -> list[Score]:
    """Stored measurements with their model's name, by model, metric, date and import order."""
    statement = (
        select(
            SafetyScore.id,
            Model.name,
            SafetyScore.metric,
            SafetyScore.value,
            SafetyScore.ci_low,
            SafetyScore.ci_high,
            SafetyScore.source,
            SafetyScore.measured_on,
            SafetyScore.imported_at,
        )
        .join(Model, SafetyScore.model_id == Model.id)
        .order_by(Model.name, SafetyScore.metric, SafetyScore.measured_on, SafetyScore.imported_at, SafetyScore.id)
    )
    if model is not None:
        statement = statement.where(Model.name == model)
    if metric is not None:
        statement = statement.where(SafetyScore.metric == metric)
    return [Score(*row) for row in session.execute(statement)]


def known_model(session: Session, name: str) -> str:
    """The name if a model has it; else NotFound with the closest name."""
    names = session.scalars(select(Model.name)).all()
    if name not in names:
        raise NotFound("model_not_found", unknown_model(name, names))
    return name


class ChosenScore(NamedTuple):
    score: Score
    same_day: tuple[str, ...]  # the other sources measured on that date (not used: imported earlier)


def scores_on(scores: Iterable[Score], day: date) -> dict[tuple[str, str], ChosenScore]:
    """Per (model, metric): the latest measurement dated on or before `day`; of several on that date, the
    most recently imported (the latest in its file when imported together)."""
    latest: dict[tuple[str, str], list[Score]] = {}
    for score in scores:
        if score.measured_on > day:
            continue
        key = (score.model, score.metric)
        held = latest.get(key)
        if held is None or score.measured_on > held[0].measured_on:
            latest[key] = [score]
        elif score.measured_on == held[0].measured_on:
            held.append(score)
    chosen = {}
    for key, candidates in latest.items():
        candidates.sort(key=lambda s: (_aware(s.imported_at), s.id))
        used = candidates[-1]
        chosen[key] = ChosenScore(used, tuple(s.source for s in candidates[:-1]))
    return chosen


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment  # SQLite drops the zone


def score_dict(chosen: ChosenScore) -> dict:
    score = chosen.score
    out = {
        "model": score.model,
        "metric": score.metric,
        "value": score.value,
        "ci_low": score.ci_low,
        "ci_high": score.ci_high,
        "source": score.source,
        "date": score.measured_on.isoformat(),
        "imported_at": iso_utc(score.imported_at),
    }
    if chosen.same_day:
        out["note"] = same_day_note(chosen)
    return out


def same_day_note(chosen: ChosenScore) -> str:
    return (
        f"also measured on {chosen.score.measured_on} by {', '.join(chosen.same_day)}; the most recently "
        f"imported ({chosen.score.source}) is used"
    )
