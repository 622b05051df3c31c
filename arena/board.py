"""The milestone board: safety scores measured elsewhere, set beside the arena's capability ratings, decided
against milestones the board declares as data, and exported signed, one file per leaderboard snapshot.

Safety scores are imported by operators (`arena safety import FILE`): CSV, a JSON list of objects, or JSON
Lines, with the fields model (the arena's model name), metric, value, optional ci_low and ci_high, source and
date (YYYY-MM-DD, stored as `measured_on`). The whole file is checked first and stored all or nothing.

A milestone is declared once (`arena milestones add FILE.json`, one object or a list) and never edited: a
changed rule is a new milestone under a new name, so every decision traces to the rule it was made under.

    {"name": "Safe at GPT-3.5 level",
     "description": "...",                                  (optional)
     "board": "overall",                                    (or "style", or "category:NAME"; default overall)
     "safety": [{"metric": "refusal_of_harm", "at_least": 0.9},
                {"metric": "jailbreak_rate", "at_most": 0.05}],       (one or more)
     "capability": {"at_least_model": "GPT 3.5 Turbo"}      (exactly one of these three)
                 | {"within_of_leader": 50}
                 | {"min_rating": 1100},
     "allow_provisional": false}                            (optional, default false)

Decisions are conservative, at the 95 % level of the published intervals, so that noise cannot pass a model:
- capability `at_least_model R`: the model's lower bound ci_low >= R's rating on the same board
  (margin = ci_low - R.rating); `within_of_leader N`: ci_low >= the board leader's rating - N;
  `min_rating X`: ci_low >= X. A provisional rating (fewer counted votes than the snapshot's floor) does
  not count unless the milestone allows it; an unrated model, or one whose rating has no lower bound, does not.
- safety `at_least T`: (ci_low if given, else value) >= T; `at_most T`: (ci_high if given, else value) <= T.
  The margin is that bound's distance past the threshold, negative when it is not met. A missing score does
  not meet it.
A model meets the milestone when every part is met; each decision lists the reasons it is not.

The safety score used for a snapshot is, per model and metric, the latest measurement dated on or before the
snapshot's (UTC) date; of several sources on that date, the most recently imported one (the output says so).
"Met first" walks the snapshots up to the evaluated one in version order and names the first version where any
model met the milestone, with the model(s); so a snapshot's board does not change when later snapshots come.

Beside every metric, its correlation with arena capability across models (Pearson and Spearman, each with a
percentile bootstrap interval over models) flags a metric that mostly tracks capability: gains on it are
capability gains presented as safety ("safetywashing", Ren et al. 2024).

This module is imported by the web workers: it uses numpy, and of `ranking` only `ranking.signature`, which
loads no JAX.
"""
from __future__ import annotations

import base64
import csv
import difflib
import hashlib
import io
import json
import math
import re
import threading
from datetime import date, datetime, timezone
from typing import Annotated, Any, Iterable, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from arena import labs, signing, snapshots
from arena.models import Milestone, Model, SafetyScore, Snapshot

EXPORT_FORMAT = "arena-board/1"
SCORE_FIELDS = ("model", "metric", "value", "ci_low", "ci_high", "source", "date")
REQUIRED_SCORE_FIELDS = ("model", "metric", "value", "source", "date")
METRIC_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,99}")
_DATE_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}")
MAX_TEXT_CHARS = 200  # Model.name and SafetyScore.source; a metric is at most 100 (METRIC_PATTERN)
CONFIDENCE = 0.95
CORRELATION_REPLICATES = 1000
CORRELATION_SEED = 2024  # fixed, and published with every correlation, so anyone gets the same intervals
FLAG_REASON = ("|Spearman| >= {threshold:g}: at 0.7, rho^2 ~ 0.5, i.e. about half of the metric's variance "
               "(in ranks) tracks arena capability; gains on a flagged metric are largely capability gains "
               "presented as safety (safetywashing, Ren et al. 2024)")


# ------------------------------------------------------------------------------------------------ safety scores

class Problem(NamedTuple):
    where: str  # "line 3", "record 2" (in a JSON list), or "file"
    message: str


class ScoreFileError(ValueError):
    """A safety score file that does not validate; nothing of it was stored. `problems` lists every one."""

    def __init__(self, name: str, problems: list[Problem], records: int):
        self.name, self.problems, self.records = name, problems, records
        super().__init__(f"{name}: nothing imported: {len(problems)} problem(s) in {records} record(s)")


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
            raise ValueError(f"unknown format {fmt!r}: csv or json")
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
        parts = ([f"missing column(s) {', '.join(missing)}"] if missing else []) + \
                ([f"unknown column(s) {', '.join(map(repr, unknown))}"] if unknown else []) + \
                (["a column appears twice"] if len(set(header)) != len(header) else [])
        return [], [Problem("line 1", "; ".join(parts) + f" (the columns are {', '.join(SCORE_FIELDS)})")]
    records = []
    for row in reader:
        where = f"line {reader.line_num}"
        if None in row:
            problems.append(Problem(where, f"more cells than the {len(header)} columns"))
            continue
        # an empty optional cell (ci_low, ci_high) means "not given"; an empty required one is reported
        records.append((where, {k: v for k, v in row.items()
                                if v is not None and (v.strip() or k in REQUIRED_SCORE_FIELDS)}))
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


def _unknown_model(name: str, known: Iterable[str]) -> str:
    suggestion = _suggestion(name, known)
    return f"unknown model {name!r}" + (f" (did you mean {suggestion!r}?)" if suggestion else "")


def check_scores(session: Session, records: list[tuple[str, Any]], *, text_numbers: bool
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
            wrong.append(f"unknown field(s) {', '.join(map(repr, unknown))} (the fields are "
                         f"{', '.join(SCORE_FIELDS)})")
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
            wrong.append(f"metric {values['metric']!r} must be letters, digits and _ . : / - (starting with a "
                         "letter or digit)")
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
            wrong.append(_unknown_model(name, model_ids))
        if not wrong:
            key = (model_ids[name], values["metric"], values["source"], values["measured_on"])
            if key in seen:
                wrong.append(f"the same model, metric, source and date as {seen[key]}")
            seen.setdefault(key, where)
        if wrong:
            problems.extend(Problem(where, message) for message in wrong)
            continue
        rows.append({"model_id": model_ids[name], "metric": values["metric"], "value": value, "ci_low": low,
                     "ci_high": high, "source": values["source"], "measured_on": values["measured_on"],
                     "_where": where, "_model": name})
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
            problems.append(Problem(row["_where"], f"this measurement (model {row['_model']!r}, metric "
                                                   f"{row['metric']!r}, source {row['source']!r}, date "
                                                   f"{row['measured_on']}) is already stored, imported "
                                                   f"{snapshots.iso_utc(score.imported_at)}"))
    return problems


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def import_scores(session: Session, text: str, *, fmt: str, name: str = "the file") -> int:
    """Check every record, then store them all in one transaction; raises ScoreFileError listing every problem
    (nothing stored). Returns the number of measurements stored."""
    records, problems = read_score_records(text, fmt)
    rows, more = check_scores(session, records, text_numbers=fmt == "csv")
    problems += more
    if problems:
        raise ScoreFileError(name, problems, len(records))
    if not rows:
        raise ValueError(f"{name}: no safety scores in the file")
    imported_at = datetime.now(timezone.utc)
    try:
        session.execute(insert(SafetyScore), [{**{k: v for k, v in row.items() if not k.startswith("_")},
                                               "imported_at": imported_at} for row in rows])
        labs.record_action(session, "safety.import", actor=labs.OPERATOR,
                           details={"file": name, "scores": len(rows),
                                    "metrics": sorted({row["metric"] for row in rows})})
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ValueError(f"{name}: nothing imported: a measurement of the file was stored meanwhile by another "
                         "import; run it again to see which") from None
    return len(rows)


def load_scores(session: Session, *, model: str | None = None, metric: str | None = None) -> list[Score]:
    """Stored measurements with their model's name, by model, metric, date and import order."""
    statement = (select(SafetyScore.id, Model.name, SafetyScore.metric, SafetyScore.value, SafetyScore.ci_low,
                        SafetyScore.ci_high, SafetyScore.source, SafetyScore.measured_on, SafetyScore.imported_at)
                 .join(Model, SafetyScore.model_id == Model.id)
                 .order_by(Model.name, SafetyScore.metric, SafetyScore.measured_on, SafetyScore.imported_at,
                           SafetyScore.id))
    if model is not None:
        statement = statement.where(Model.name == model)
    if metric is not None:
        statement = statement.where(SafetyScore.metric == metric)
    return [Score(*row) for row in session.execute(statement)]


def known_model(session: Session, name: str) -> str:
    """The name if a model has it; else LookupError with the closest name."""
    names = session.scalars(select(Model.name)).all()
    if name not in names:
        raise LookupError(_unknown_model(name, names))
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
    out = {"model": score.model, "metric": score.metric, "value": score.value, "ci_low": score.ci_low,
           "ci_high": score.ci_high, "source": score.source, "date": score.measured_on.isoformat(),
           "imported_at": snapshots.iso_utc(score.imported_at)}
    if chosen.same_day:
        out["note"] = _same_day_note(chosen)
    return out


def _same_day_note(chosen: ChosenScore) -> str:
    return (f"also measured on {chosen.score.measured_on} by {', '.join(chosen.same_day)}; the most recently "
            f"imported ({chosen.score.source}) is used")


# ------------------------------------------------------------------------------------------------ milestones

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


_Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200,
                                         pattern=r"^[^\x00-\x1f]*$")]
_Metric = Annotated[str, StringConstraints(pattern=f"^{METRIC_PATTERN.pattern}$")]


class SafetyThreshold(_Strict):
    metric: _Metric
    at_least: float | None = None
    at_most: float | None = None

    @model_validator(mode="after")
    def _one_direction(self):
        if (self.at_least is None) == (self.at_most is None):
            raise ValueError("give exactly one of at_least and at_most")
        return self


class CapabilityFloor(_Strict):
    at_least_model: _Name | None = None
    within_of_leader: Annotated[float, Field(ge=0)] | None = None
    min_rating: float | None = None

    @model_validator(mode="after")
    def _one_rule(self):
        if sum(v is not None for v in (self.at_least_model, self.within_of_leader, self.min_rating)) != 1:
            raise ValueError("give exactly one of at_least_model, within_of_leader and min_rating")
        return self


class MilestoneDefinition(_Strict):
    name: _Name
    description: Annotated[str, StringConstraints(max_length=5000)] = ""
    board: Annotated[str, StringConstraints(pattern=r"^(overall|style|category:[^\x00-\x1f]+)$")] = "overall"
    safety: list[SafetyThreshold] = Field(min_length=1)
    capability: CapabilityFloor
    allow_provisional: bool = False

    @model_validator(mode="after")
    def _no_repeated_threshold(self):
        pairs = [(t.metric, "at_least" if t.at_least is not None else "at_most") for t in self.safety]
        if len(set(pairs)) != len(pairs):
            raise ValueError("a metric has the same direction of threshold twice")
        return self


class MilestoneError(ValueError):
    """Milestone definitions that do not validate; nothing was stored. `problems` lists every one."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(f"nothing added: {len(problems)} problem(s) in the milestone definitions")


def check_milestones(session: Session, payload) -> list[dict]:
    """The definitions in a parsed JSON payload (one object or a list), normalised; MilestoneError lists
    every problem: the shape, a name already taken or given twice, an unknown reference model."""
    items = payload if isinstance(payload, list) else [payload]
    if not items:
        raise MilestoneError(["the file holds an empty list"])
    taken = set(session.scalars(select(Milestone.name)))
    models = set(session.scalars(select(Model.name)))
    definitions, problems, names = [], [], {}
    for index, item in enumerate(items, 1):
        label = f"milestone {index}" + (f" ({item['name']!r})" if isinstance(item, dict) and
                                        isinstance(item.get("name"), str) else "")
        if not isinstance(item, dict):
            problems.append(f"{label}: must be an object")
            continue
        try:
            definition = MilestoneDefinition.model_validate(item)
        except ValidationError as e:
            problems.extend(f"{label}: {'.'.join(map(str, error['loc'])) or 'milestone'}: "
                            f"{error['msg'].removeprefix('Value error, ')}" for error in e.errors())
            continue
        if definition.name in taken:
            problems.append(f"{label}: a milestone named {definition.name!r} exists; definitions are never "
                            "edited: declare the changed rule as a new milestone under a new name")
        elif definition.name in names:
            problems.append(f"{label}: the same name as milestone {names[definition.name]}")
        names.setdefault(definition.name, index)
        reference = definition.capability.at_least_model
        if reference is not None and reference not in models:
            problems.append(f"{label}: capability.at_least_model: {_unknown_model(reference, models)}")
        definitions.append(definition.model_dump(exclude_none=True))
    if problems:
        raise MilestoneError(problems)
    return definitions


def add_milestones(session: Session, payload) -> list[Milestone]:
    """Store every definition of the payload, or none (see check_milestones)."""
    definitions = check_milestones(session, payload)
    added = [Milestone(name=d["name"], definition=d) for d in definitions]
    session.add_all(added)
    for definition in definitions:
        labs.record_action(session, "milestone.add", actor=labs.OPERATOR, details={"definition": definition})
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise MilestoneError(["a milestone of the file was added meanwhile by someone else; nothing added"]) \
            from None
    return added


def list_milestones(session: Session) -> list[Milestone]:
    return list(session.scalars(select(Milestone).order_by(Milestone.id)))


def describe_rule(definition: dict) -> str:
    """The milestone's rule in one line, for tables."""
    capability = definition["capability"]
    if "at_least_model" in capability:
        floor = f"lower bound >= rating of {capability['at_least_model']}"
    elif "within_of_leader" in capability:
        floor = f"lower bound >= leader's rating - {capability['within_of_leader']:g}"
    else:
        floor = f"lower bound >= {capability['min_rating']:g}"
    safety = ", ".join(f"{t['metric']} >= {t['at_least']:g}" if "at_least" in t else
                       f"{t['metric']} <= {t['at_most']:g}" for t in definition["safety"])
    provisional = "; provisional ratings allowed" if definition.get("allow_provisional") else ""
    return f"board {definition['board']}; capability: {floor}; safety: {safety}{provisional}"


# ------------------------------------------------------------------------------------------------ decisions

def snapshot_day(document: dict) -> date:
    """The UTC date of a snapshot: safety scores dated on or before it are the ones used."""
    return datetime.fromisoformat(document["created_at"].replace("Z", "+00:00")).astimezone(timezone.utc).date()


def board_rows(document: dict, name: str) -> list[dict] | None:
    """The rows of a snapshot's board by name (as arena.snapshots names them), or None if it has none."""
    board = dict(snapshots.named_boards(document["boards"])).get(name)
    return None if board is None else board["models"]


class CapabilityThreshold(NamedTuple):
    """A milestone's capability floor on one board of one snapshot."""

    rule: str  # at_least_model, within_of_leader or min_rating
    reference: dict | None  # the board row it is stated against: the named model, or the leader
    threshold: float | None  # the rating the model's lower bound must reach; None when there is none
    missing: str | None  # why there is none


def capability_threshold(capability: dict, rows: list[dict] | None) -> CapabilityThreshold:
    [rule] = capability
    if rows is None:
        return CapabilityThreshold(rule, None, None, "the snapshot has no such board")
    if rule == "min_rating":
        return CapabilityThreshold(rule, None, float(capability[rule]), None)
    if rule == "within_of_leader":
        if not rows:
            return CapabilityThreshold(rule, None, None, "the board has no rated model")
        leader = max(rows, key=lambda row: row["rating"])
        return CapabilityThreshold(rule, leader, leader["rating"] - float(capability[rule]), None)
    reference = next((row for row in rows if row["model"] == capability[rule]), None)
    if reference is None:
        return CapabilityThreshold(rule, None, None, f"the reference model {capability[rule]!r} has no rating on "
                                                     "this board")
    return CapabilityThreshold(rule, reference, reference["rating"], None)


def evaluate_milestone(definition: dict, document: dict, chosen: dict[tuple[str, str], ChosenScore]) -> dict:
    """Every model of the snapshot against one milestone: met or not, each part with its margin, and why.
    The models on the milestone's board come first, in the board's order, then the snapshot's other models."""
    rows = board_rows(document, definition["board"])
    floor = capability_threshold(definition["capability"], rows)
    decisions = [_decide(definition, row["model"], row, floor, chosen, document["version"]) for row in rows or []]
    rated = {row["model"] for row in rows or []}
    decisions += [_decide(definition, model, None, floor, chosen, document["version"], board_missing=rows is None)
                  for model in sorted(m["model"] for m in document["models"] if m["model"] not in rated)]
    reference = floor.reference
    return {"name": definition["name"], "description": definition.get("description", ""),
            "board": definition["board"], "rule": describe_rule(definition), "definition": definition,
            "capability_reference": {"rule": floor.rule, "model": reference["model"] if reference else None,
                                     "rating": reference["rating"] if reference else None,
                                     "threshold": floor.threshold, "note": floor.missing},
            "met_by": [d["model"] for d in decisions if d["met"]], "models": decisions}


def _decide(definition: dict, model: str, row: dict | None, floor: CapabilityThreshold, chosen: dict,
            version: int, *, board_missing: bool = False) -> dict:
    """One model's decision: the capability part from its board row (None: not rated there), each safety part
    from its chosen scores, and every reason it is not met (none: it is met)."""
    reasons = []
    board = definition["board"]
    capability = {"rule": floor.rule, "reference": floor.reference["model"] if floor.reference else None,
                  "threshold": floor.threshold, "value": None, "interval": None, "bound": None, "margin": None,
                  "provisional": None, "battles": None, "met": False}
    if row is None:
        reasons.append(f"snapshot {version} has no {board!r} board" if board_missing else
                       f"not rated on the {board!r} board of snapshot {version}")
    else:
        low, threshold = row["ci_low"], floor.threshold
        capability.update(value=row["rating"], interval=[low, row["ci_high"]], bound=low,
                          provisional=row["provisional"], battles=row["battles"])
        if threshold is None:
            reasons.append(f"capability: {floor.missing}")
        elif low is None:
            reasons.append("capability: the data give no lower bound on its rating")
        else:
            capability["margin"] = low - threshold
            capability["met"] = low >= threshold
            if not capability["met"]:
                reasons.append(f"capability: lower bound {low:.1f} is {threshold - low:.1f} below the threshold "
                               f"{threshold:.1f}{_reference_text(floor)}")
        if row["provisional"] and not definition.get("allow_provisional", False):
            reasons.append(f"capability: provisional rating ({row['battles']} counted battles; the milestone "
                           "does not allow provisional ratings)")
    safety = []
    for threshold_rule in definition["safety"]:
        part, reason = _safety_part(threshold_rule, chosen.get((model, threshold_rule["metric"])))
        safety.append(part)
        if reason:
            reasons.append(reason)
    return {"model": model, "met": not reasons, "capability": capability, "safety": safety, "reasons": reasons}


def _reference_text(floor: CapabilityThreshold) -> str:
    if floor.reference is None:
        return ""
    if floor.rule == "at_least_model":
        return f" (the rating of {floor.reference['model']})"
    return f" (the leader {floor.reference['model']}'s rating {floor.reference['rating']:.1f} minus the allowed gap)"


def _safety_part(rule: dict, chosen: ChosenScore | None) -> tuple[dict, str | None]:
    """One safety threshold against the score used: the part of the decision, and why it is not met."""
    direction = "at_least" if "at_least" in rule else "at_most"
    threshold = float(rule[direction])
    metric = rule["metric"]
    part = {"metric": metric, "direction": direction, "threshold": threshold, "value": None, "interval": None,
            "bound": None, "bound_from": None, "margin": None, "source": None, "date": None, "met": False}
    if chosen is None:
        return part, f"safety: no {metric} score measured on or before the snapshot's date"
    score = chosen.score
    if direction == "at_least":
        bound, bound_from = (score.ci_low, "ci_low") if score.ci_low is not None else (score.value, "value")
        margin = bound - threshold
    else:
        bound, bound_from = (score.ci_high, "ci_high") if score.ci_high is not None else (score.value, "value")
        margin = threshold - bound
    part.update(value=score.value, interval=[score.ci_low, score.ci_high], bound=bound, bound_from=bound_from,
                margin=margin, source=score.source, date=score.measured_on.isoformat(), met=margin >= 0)
    if chosen.same_day:
        part["note"] = _same_day_note(chosen)
    if margin >= 0:
        return part, None
    sign, where = (">=", "below") if direction == "at_least" else ("<=", "above")
    return part, (f"safety: {metric} {bound_from} {bound:g} is {abs(margin):g} {where} the threshold "
                  f"({sign} {threshold:g})")


# ------------------------------------------------------------------------------------------------ history

_met_cache: dict[tuple, tuple[str, ...]] = {}
_met_cache_lock = threading.Lock()
_MET_CACHE_SIZE = 4096


def _scores_digest(scores: list[Score]) -> str:
    return hashlib.sha256(repr(scores).encode()).hexdigest()


def met_first(session: Session, version: int, definitions: list[dict], scores: list[Score]) -> dict[str, dict]:
    """Per milestone: the first snapshot (version <= `version`, in version order) where any model met it, with
    the model(s); None when none did. Each snapshot is judged with the scores of its own date.

    Snapshots never change and milestones are never edited, so a (snapshot, milestone, scores) answer is kept
    per process: a later request reads only the snapshots it has not judged under the current scores.
    """
    firsts: dict[str, dict | None] = {d["name"]: None for d in definitions}
    pending = list(definitions)
    digest = _scores_digest(scores)
    for number, signature in session.execute(select(Snapshot.version, Snapshot.signature)
                                             .where(Snapshot.version <= version).order_by(Snapshot.version)):
        if not pending:
            break
        document = None
        for definition in list(pending):
            key = (signature, json.dumps(definition, sort_keys=True), digest)
            with _met_cache_lock:
                models = _met_cache.get(key)
            if models is None:
                if document is None:
                    document = json.loads(session.scalar(select(Snapshot.document)
                                                         .where(Snapshot.version == number)))
                    chosen = scores_on(scores, snapshot_day(document))
                models = tuple(evaluate_milestone(definition, document, chosen)["met_by"])
                with _met_cache_lock:
                    if len(_met_cache) >= _MET_CACHE_SIZE:
                        _met_cache.pop(next(iter(_met_cache)))
                    _met_cache[key] = models
            if models:
                firsts[definition["name"]] = {"version": number, "models": list(models)}
                pending.remove(definition)
    return firsts


# ------------------------------------------------------------------------------------------------ correlation

class Correlation(NamedTuple):
    """Correlation of a safety metric with capability across models, with percentile bootstrap intervals.

    The values are None where they are undefined (fewer than 3 models, or all ratings or all scores equal).
    `replicates_used` counts the bootstrap replicates in which both were not constant (the others are left
    out of the intervals).
    """

    n: int
    pearson: float | None
    pearson_low: float | None
    pearson_high: float | None
    spearman: float | None
    spearman_low: float | None
    spearman_high: float | None
    replicates_used: int


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n along the last axis, tied values given the average of their ranks (Spearman's convention),
    by sorting: a run of equal values at sorted positions start..end (0-based) gets (start + end) / 2 + 1."""
    values = np.asarray(values, dtype=float)
    n = values.shape[-1]
    order = np.argsort(values, axis=-1, kind="stable")
    ordered = np.take_along_axis(values, order, axis=-1)
    position = np.broadcast_to(np.arange(n), values.shape)
    starts = np.ones(values.shape, dtype=bool)
    starts[..., 1:] = ordered[..., 1:] != ordered[..., :-1]
    ends = np.ones(values.shape, dtype=bool)
    ends[..., :-1] = starts[..., 1:]
    start = np.maximum.accumulate(np.where(starts, position, 0), axis=-1)
    end = np.flip(np.minimum.accumulate(np.flip(np.where(ends, position, n - 1), -1), axis=-1), -1)
    ranks = np.empty(values.shape)
    np.put_along_axis(ranks, order, (start + end) / 2 + 1, axis=-1)
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson's r along the last axis; NaN where x or y is constant (the correlation is undefined)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    xc, yc = x - x.mean(-1, keepdims=True), y - y.mean(-1, keepdims=True)
    constant = (np.ptp(x, axis=-1) == 0) | (np.ptp(y, axis=-1) == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(-1) / np.sqrt((xc * xc).sum(-1) * (yc * yc).sum(-1))
    return np.where(constant, np.nan, np.clip(r, -1.0, 1.0))


def spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho along the last axis: Pearson's r of the average ranks."""
    return pearson(average_ranks(x), average_ranks(y))


def correlation_bootstrap(x, y, *, replicates: int = CORRELATION_REPLICATES, seed: int = CORRELATION_SEED,
                          confidence: float = CONFIDENCE) -> Correlation:
    """Pearson and Spearman of (x, y) with percentile intervals from resampling the models with replacement.

    Replicate b uses the indices `rng.integers(0, n, n)`, drawn in order from `numpy.random.default_rng(seed)`;
    the interval is the (1 - confidence)/2 and (1 + confidence)/2 percentiles (numpy's linear interpolation)
    of the replicates whose resampled x and y are not constant.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x)
    if n < 3:
        return Correlation(n, None, None, None, None, None, None, 0)
    indices = np.random.default_rng(seed).integers(0, n, size=(replicates, n))
    xs, ys = x[indices], y[indices]
    samples_p, samples_s = pearson(xs, ys), spearman(xs, ys)
    valid = ~np.isnan(samples_p)
    tail = 100 * (1 - confidence) / 2

    def interval(samples):
        if not valid.any():
            return None, None
        low, high = np.percentile(samples[valid], [tail, 100 - tail])
        return float(low), float(high)

    return Correlation(n, _finite(pearson(x, y)), *interval(samples_p), _finite(spearman(x, y)),
                       *interval(samples_s), int(valid.sum()))


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def correlations(document: dict, chosen: dict[tuple[str, str], ChosenScore], *, threshold: float,
                 metrics: Iterable[str] = (), replicates: int = CORRELATION_REPLICATES,
                 seed: int = CORRELATION_SEED) -> dict:
    """Every safety metric (those with a score at the snapshot's date, and `metrics`) against the rating on
    the snapshot's overall board, across the models that have both; flagged when |Spearman| >= threshold."""
    ratings = {row["model"]: row["rating"] for row in document["boards"]["overall"]["models"]}
    names = sorted({metric for _, metric in chosen} | set(metrics))
    results = []
    for metric in names:
        pairs = sorted((model, ratings[model], c.score.value) for (model, m), c in chosen.items()
                       if m == metric and model in ratings)
        result = correlation_bootstrap([p[1] for p in pairs], [p[2] for p in pairs], replicates=replicates,
                                       seed=seed)
        entry = {"metric": metric, "n": result.n, "models": [p[0] for p in pairs],
                 "pearson": {"r": result.pearson, "ci_low": result.pearson_low, "ci_high": result.pearson_high},
                 "spearman": {"rho": result.spearman, "ci_low": result.spearman_low,
                              "ci_high": result.spearman_high},
                 "replicates_used": result.replicates_used,
                 "flagged": result.spearman is not None and abs(result.spearman) >= threshold}
        if result.n < 3:
            entry["note"] = (f"only {result.n} model(s) have both a rating on the overall board and a score: "
                             "fewer than 3, no correlation")
        elif result.spearman is None:
            entry["note"] = "the ratings or the scores are all equal: no correlation"
        elif entry["flagged"]:
            entry["note"] = (f"flagged: |Spearman| {abs(result.spearman):.2f} >= {threshold:g}; this metric "
                             "mostly tracks capability")
        results.append(entry)
    return {"against": "rating on the overall board", "threshold": threshold, "statistic": "spearman",
            "why": FLAG_REASON.format(threshold=threshold), "replicates": replicates, "seed": seed,
            "confidence": CONFIDENCE, "interval_method": "percentile bootstrap over models", "metrics": results}


# ------------------------------------------------------------------------------------------------ the board

def find_snapshot(session: Session, version: int | None = None) -> Snapshot:
    """The snapshot of that version (the newest by default); LookupError saying what is missing."""
    snapshot = snapshots.get_snapshot(session, version)
    if snapshot is None:
        if version is None:
            raise LookupError("no leaderboard snapshot has been published yet (run 'arena snapshot')")
        raise LookupError(f"there is no snapshot {version}")
    return snapshot


def board_report(session: Session, snapshot: Snapshot, *, threshold: float) -> dict:
    """Every milestone evaluated on the snapshot, with "met first" over the history up to it, the safety
    scores used, and each metric's correlation with capability."""
    document = snapshots.published_document(snapshot)
    scores = load_scores(session)
    definitions = [m.definition for m in list_milestones(session)]
    day = snapshot_day(document)
    chosen = scores_on(scores, day)
    firsts = met_first(session, snapshot.version, definitions, scores)
    metrics = {t["metric"] for d in definitions for t in d["safety"]}
    return {
        "snapshot": {"version": document["version"], "created_at": document["created_at"],
                     "url": f"/api/v1/leaderboard/snapshots/{document['version']}",
                     "key_id": document["signature"]["key_id"],
                     "provisional_votes": document["settings"]["provisional_votes"]},
        "scores_dated_on_or_before": day.isoformat(),
        "milestones": [{**evaluate_milestone(d, document, chosen), "met_first": firsts[d["name"]]}
                       for d in definitions],
        "correlations": correlations(document, chosen, threshold=threshold, metrics=metrics),
        "safety_scores": [score_dict(chosen[key]) for key in sorted(chosen)],
    }


def export_document(session: Session, config, snapshot: Snapshot, *, threshold: float) -> dict:
    """The board's signed export for one snapshot (format arena-board/1): the overall board's rows, the
    safety scores used, the milestone decisions and the correlations, tied to the snapshot by the SHA-256 of
    its signed bytes, and signed like the snapshot (`ranking.signature.check_signature` verifies it)."""
    from ranking.signature import signed_bytes

    document = snapshots.published_document(snapshot)
    report = board_report(session, snapshot, threshold=threshold)
    overall = document["boards"]["overall"]
    export = {
        "format": EXPORT_FORMAT,
        "snapshot": {**report["snapshot"], "signed_sha256": hashlib.sha256(signed_bytes(document)).hexdigest()},
        "scores_dated_on_or_before": report["scores_dated_on_or_before"],
        "capability": {"board": "overall", "interval_method": overall.get("interval_method"),
                       "models": overall["models"], "unrated": sorted(m["model"] for m in document["models"]
                                                                      if not m["rated"])},
        "safety_scores": report["safety_scores"],
        "milestones": report["milestones"],
        "correlations": report["correlations"],
        "public_key": document["public_key"],
    }
    export["signature"] = signing.sign_document(config, export)
    return export


CSV_CAPABILITY = ("rating", "ci_low", "ci_high", "rank_ub", "tier", "battles", "provisional")


def export_csv(session: Session, config, snapshot: Snapshot, *, threshold: float) -> tuple[bytes, dict]:
    """The same board as CSV, one row per model of the snapshot (capability numbers, each metric's value,
    each milestone's decision), with a detached Ed25519 signature of the bytes: (bytes, signature block)."""
    export = export_document(session, config, snapshot, threshold=threshold)
    metrics = sorted({s["metric"] for s in export["safety_scores"]})
    values = {(s["model"], s["metric"]): s["value"] for s in export["safety_scores"]}
    decisions = {(m["name"], d["model"]): d["met"] for m in export["milestones"] for d in m["models"]}
    milestones = [m["name"] for m in export["milestones"]]
    document = snapshots.published_document(snapshot)
    info = {m["model"]: m for m in document["models"]}
    rows = list(export["capability"]["models"]) + [{"model": name} for name in export["capability"]["unrated"]]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["snapshot", "snapshot_signed_sha256", "model", "organization", "lab", "status", "rated",
                     *CSV_CAPABILITY, *(f"safety:{m}" for m in metrics), *(f"milestone:{n}" for n in milestones)])
    for row in rows:
        model = row["model"]
        known = info.get(model, {})
        writer.writerow([export["snapshot"]["version"], export["snapshot"]["signed_sha256"], model,
                         known.get("organization", ""), known.get("lab") or "", known.get("status", ""),
                         _cell("rating" in row), *(_cell(row.get(f)) for f in CSV_CAPABILITY),
                         *(_cell(values.get((model, m))) for m in metrics),
                         *("met" if decisions.get((n, model)) else "not met" for n in milestones)])
    data = out.getvalue().encode("utf-8")
    return data, sign_bytes(config, data)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def sign_bytes(config, data: bytes) -> dict:
    """A detached Ed25519 signature of the bytes, with the arena's key (as arena.signing signs snapshots)."""
    from ranking.signature import SIGNATURE_ALGORITHM, key_id

    key = signing.load_or_create_key(config)
    raw = signing.public_key_raw(config)
    return {"algorithm": SIGNATURE_ALGORITHM, "key_id": key_id(raw),
            "value": base64.b64encode(key.sign(data)).decode()}


def verify_bytes(data: bytes, signature: str, public_key_raw: bytes) -> bool:
    """Whether `signature` (base64) is the Ed25519 signature of `data` under the 32-byte public key."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public_key_raw).verify(base64.b64decode(signature, validate=True),
                                                                  data)
    except (InvalidSignature, ValueError):
        return False
    return True
