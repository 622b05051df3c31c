"""Milestones, declared once as data and never edited, and the decisions made against them: a model meets a
milestone when every safety part and the capability part are met, conservatively at the 95 % level."""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import date, datetime, timezone
from typing import Annotated, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from arena.board.scores import (
    METRIC_PATTERN,
    ChosenScore,
    Score,
    same_day_note,
    scores_on,
    unknown_model,
)
from arena.catalog.audit import OPERATOR, record_action
from arena.errors import Rejected
from arena.leaderboard.reading import named_boards
from arena.models import Milestone, Model, Snapshot

CONFIDENCE = 0.95


# ------------------------------------------------------------------------------------------------ milestones


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


_Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]*$")
]
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


class MilestoneError(Rejected):
    """Milestone definitions that do not validate; nothing was stored. `problems` lists every one."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(
            "invalid_milestones",
            f"nothing added: {len(problems)} problem(s) in the milestone definitions",
            details={"problems": problems},
        )


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
        label = f"milestone {index}" + (
            f" ({item['name']!r})" if isinstance(item, dict) and isinstance(item.get("name"), str) else ""
        )
        if not isinstance(item, dict):
            problems.append(f"{label}: must be an object")
            continue
        try:
            definition = MilestoneDefinition.model_validate(item)
        except ValidationError as e:
            problems.extend(
                f"{label}: {'.'.join(map(str, error['loc'])) or 'milestone'}: "
                f"{error['msg'].removeprefix('Value error, ')}"
                for error in e.errors()
            )
            continue
        if definition.name in taken:
            problems.append(
                f"{label}: a milestone named {definition.name!r} exists; definitions are never "
                "edited: declare the changed rule as a new milestone under a new name"
            )
        elif definition.name in names:
            problems.append(f"{label}: the same name as milestone {names[definition.name]}")
        names.setdefault(definition.name, index)
        reference = definition.capability.at_least_model
        if reference is not None and reference not in models:
            problems.append(f"{label}: capability.at_least_model: {unknown_model(reference, models)}")
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
        record_action(session, OPERATOR, "milestone.add", details={"definition": definition})
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise MilestoneError(["a milestone of the file was added meanwhile by someone else; nothing added"]) from None
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
    safety = ", ".join(
        f"{t['metric']} >= {t['at_least']:g}" if "at_least" in t else f"{t['metric']} <= {t['at_most']:g}"
        for t in definition["safety"]
    )
    provisional = "; provisional ratings allowed" if definition.get("allow_provisional") else ""
    return f"board {definition['board']}; capability: {floor}; safety: {safety}{provisional}"


# ------------------------------------------------------------------------------------------------ decisions


def snapshot_day(document: dict) -> date:
    """The UTC date of a snapshot: safety scores dated on or before it are the ones used."""
    return datetime.fromisoformat(document["created_at"].replace("Z", "+00:00")).astimezone(timezone.utc).date()


def board_rows(document: dict, name: str) -> list[dict] | None:
    """The rows of a snapshot's board by name (as arena.leaderboard.reading names them), or None if it has none."""
    board = dict(named_boards(document["boards"])).get(name)
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
        return CapabilityThreshold(
            rule, None, None, f"the reference model {capability[rule]!r} has no rating on this board"
        )
    return CapabilityThreshold(rule, reference, reference["rating"], None)


def evaluate_milestone(definition: dict, document: dict, chosen: dict[tuple[str, str], ChosenScore]) -> dict:
    """Every model of the snapshot against one milestone: met or not, each part with its margin, and why.
    The models on the milestone's board come first, in the board's order, then the snapshot's other models."""
    rows = board_rows(document, definition["board"])
    floor = capability_threshold(definition["capability"], rows)
    decisions = [_decide(definition, row["model"], row, floor, chosen, document["version"]) for row in rows or []]
    rated = {row["model"] for row in rows or []}
    decisions += [
        _decide(definition, model, None, floor, chosen, document["version"], board_missing=rows is None)
        for model in sorted(m["model"] for m in document["models"] if m["model"] not in rated)
    ]
    reference = floor.reference
    return {
        "name": definition["name"],
        "description": definition.get("description", ""),
        "board": definition["board"],
        "rule": describe_rule(definition),
        "definition": definition,
        "capability_reference": {
            "rule": floor.rule,
            "model": reference["model"] if reference else None,
            "rating": reference["rating"] if reference else None,
            "threshold": floor.threshold,
            "note": floor.missing,
        },
        "met_by": [d["model"] for d in decisions if d["met"]],
        "models": decisions,
    }


def _decide(
    definition: dict,
    model: str,
    row: dict | None,
    floor: CapabilityThreshold,
    chosen: dict,
    version: int,
    *,
    board_missing: bool = False,
) -> dict:
    """One model's decision: the capability part from its board row (None: not rated there), each safety part
    from its chosen scores, and every reason it is not met (none: it is met)."""
    reasons = []
    board = definition["board"]
    capability = {
        "rule": floor.rule,
        "reference": floor.reference["model"] if floor.reference else None,
        "threshold": floor.threshold,
        "value": None,
        "interval": None,
        "bound": None,
        "margin": None,
        "provisional": None,
        "battles": None,
        "met": False,
    }
    if row is None:
        reasons.append(
            f"snapshot {version} has no {board!r} board"
            if board_missing
            else f"not rated on the {board!r} board of snapshot {version}"
        )
    else:
        low, threshold = row["ci_low"], floor.threshold
        capability.update(
            value=row["rating"],
            interval=[low, row["ci_high"]],
            bound=low,
            provisional=row["provisional"],
            battles=row["battles"],
        )
        if threshold is None:
            reasons.append(f"capability: {floor.missing}")
        elif low is None:
            reasons.append("capability: the data give no lower bound on its rating")
        else:
            capability["margin"] = low - threshold
            capability["met"] = low >= threshold
            if not capability["met"]:
                reasons.append(
                    f"capability: lower bound {low:.1f} is {threshold - low:.1f} below the threshold "
                    f"{threshold:.1f}{_reference_text(floor)}"
                )
        if row["provisional"] and not definition.get("allow_provisional", False):
            reasons.append(
                f"capability: provisional rating ({row['battles']} counted battles; the milestone "
                "does not allow provisional ratings)"
            )
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
    part = {
        "metric": metric,
        "direction": direction,
        "threshold": threshold,
        "value": None,
        "interval": None,
        "bound": None,
        "bound_from": None,
        "margin": None,
        "source": None,
        "date": None,
        "met": False,
    }
    if chosen is None:
        return part, f"safety: no {metric} score measured on or before the snapshot's date"
    score = chosen.score
    if direction == "at_least":
        bound, bound_from = (score.ci_low, "ci_low") if score.ci_low is not None else (score.value, "value")
        margin = bound - threshold
    else:
        bound, bound_from = (score.ci_high, "ci_high") if score.ci_high is not None else (score.value, "value")
        margin = threshold - bound
    part.update(
        value=score.value,
        interval=[score.ci_low, score.ci_high],
        bound=bound,
        bound_from=bound_from,
        margin=margin,
        source=score.source,
        date=score.measured_on.isoformat(),
        met=margin >= 0,
    )
    if chosen.same_day:
        part["note"] = same_day_note(chosen)
    if margin >= 0:
        return part, None
    sign, where = (">=", "below") if direction == "at_least" else ("<=", "above")
    return part, (
        f"safety: {metric} {bound_from} {bound:g} is {abs(margin):g} {where} the threshold ({sign} {threshold:g})"
    )


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
    for number, signature in session.execute(
        select(Snapshot.version, Snapshot.signature).where(Snapshot.version <= version).order_by(Snapshot.version)
    ):
        if not pending:
            break
        document = None
        for definition in list(pending):
            key = (signature, json.dumps(definition, sort_keys=True), digest)
            with _met_cache_lock:
                models = _met_cache.get(key)
            if models is None:
                if document is None:
                    document = json.loads(session.scalar(select(Snapshot.document).where(Snapshot.version == number)))
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
