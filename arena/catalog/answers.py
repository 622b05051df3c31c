"""A recorded model's answers to the prompt set: uploaded as JSON Lines, checked line by line, stored all or
none; the one path of the labs' API (POST /models/ID/answers) and `arena answers import`."""

from __future__ import annotations

import json
import math

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from arena.answer_style import style_counts
from arena.catalog.audit import Actor, record_action
from arena.errors import BadRequest, Conflict, Rejected
from arena.models import Model, Prompt, RecordedAnswer

MAX_REPORTED_LINES = 1000


_ANSWER_FIELDS = {"prompt_id", "answer", "duration_ms"}


def answer_problem(record, prompts: set[int], answered: set[int], seen: dict[int, int]) -> str | None:
    """Why one line of a recorded-answers upload is refused, or None: the rules of both the lab API and
    `arena answers import`. `answered`: prompts the model already has; `seen`: prompt -> earlier line."""
    if not isinstance(record, dict):
        return "not a JSON object"
    unknown = sorted(set(record) - _ANSWER_FIELDS)
    if unknown:
        return f"unknown field(s) {', '.join(unknown)} (expected prompt_id, answer, duration_ms)"
    prompt_id = record.get("prompt_id")
    if not isinstance(prompt_id, int) or isinstance(prompt_id, bool):
        return "prompt_id must be an integer"
    if prompt_id not in prompts:
        return f"there is no prompt {prompt_id}"
    if prompt_id in answered:
        return f"the model already has an answer to prompt {prompt_id}"
    if prompt_id in seen:
        return f"prompt {prompt_id} is answered twice (also on line {seen[prompt_id]})"
    answer = record.get("answer")
    if not isinstance(answer, str) or not answer.strip():
        return "answer must be a non-empty string"
    if "\x00" in answer or not _encodable(answer):  # PostgreSQL text cannot hold NUL or lone surrogates
        return "answer must be valid Unicode text without NUL characters"
    duration = record.get("duration_ms")
    if duration is not None and (
        isinstance(duration, bool)
        or not isinstance(duration, (int, float))
        or not math.isfinite(duration)
        or duration < 0
    ):
        return "duration_ms must be a number of milliseconds >= 0"
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def import_answers(session: Session, actor: Actor, model: Model, data: bytes, *, file_name: str | None = None) -> int:
    """Store a recorded model's answers from JSON Lines, all or none; Rejected lists every failing line
    (details.lines: [{"line", "error"}, ...]). A retired model takes none: its answers are what was rated."""
    if model.kind != "recorded":
        raise Conflict("not_a_recorded_model", f"Model {model.id} is an endpoint model: it takes no answers.")
    if model.status == "retired":
        raise Conflict("model_retired", f"Model {model.id} is retired.")
    prompts = set(session.scalars(select(Prompt.id)))
    answered = set(session.scalars(select(RecordedAnswer.prompt_id).where(RecordedAnswer.model_id == model.id)))
    seen: dict[int, int] = {}
    rows, problems, count = [], [], 0
    for number, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        count += 1
        try:
            record = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            problems.append({"line": number, "error": "not UTF-8 text"})
            continue
        except (ValueError, RecursionError) as e:
            problems.append({"line": number, "error": f"not valid JSON ({getattr(e, 'msg', 'too deeply nested')})"})
            continue
        reason = answer_problem(record, prompts, answered, seen)
        if reason:
            problems.append({"line": number, "error": reason})
            continue
        seen[record["prompt_id"]] = number
        rows.append(
            {
                "model_id": model.id,
                "prompt_id": record["prompt_id"],
                "text": record["answer"],
                "duration_ms": None if record.get("duration_ms") is None else float(record["duration_ms"]),
                **style_counts(record["answer"]),
            }
        )  # a bulk insert skips the ORM listener that counts them
    if problems:
        raise Rejected(
            "invalid_answers",
            f"Nothing imported: {len(problems)} of {count} line(s) failed.",
            details={"lines": problems[:MAX_REPORTED_LINES], "failed": len(problems), "total": count},
        )
    if not rows:
        raise BadRequest("no_answers", "The upload has no answers: send one JSON object a line.")
    session.execute(insert(RecordedAnswer), rows)
    record_action(
        session,
        actor,
        "answers.import",
        lab_id=model.lab_id,
        model_id=model.id,
        details={"name": model.name, "answers": len(rows), **({"file": file_name} if file_name else {})},
    )
    try:
        session.commit()
    except IntegrityError:  # the same answers uploaded twice at once
        session.rollback()
        raise Conflict("answers_conflict", "Some of these answers were stored meanwhile; nothing imported.") from None
    return len(rows)
