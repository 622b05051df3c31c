"""The embedded demo: the LLMFAO data set (data/llmfao) loaded as recorded models, prompts, answers and votes.

70 models from the "Crowdsourced LLM Benchmark" by llmonitor.com with their 1,133 recorded answers to 19
prompts, and the 8,931 crowd votes of LLMFAO (Dmitry Ustalov), both CC BY 4.0 (see data/llmfao/README.md for
the attribution that must be kept). Every vote becomes one historical battle with its vote, so the ranking,
the exports and the leaderboard work on real data from the first start, without any network.

The data set's prompt ids are kept as our prompt ids, so a battle file made from it lines up with the
database. The crowd file has no timestamps: battles get synthetic times one minute apart in file order
(`FIRST_VOTE_AT`), so ordering by time keeps the order in which the votes were collected.

Loading is one transaction with bulk inserts (about a second on SQLite): all of it or nothing.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import func, insert, select, text
from sqlalchemy.orm import Session

from arena.answer_style import style_counts
from arena.catalog.audit import OPERATOR, record_action
from arena.models import Battle, Model, Prompt, RecordedAnswer, Vote
from arena.settings import ROOT

DEMO_DATA = ROOT / "data" / "llmfao"
# Kept wherever the data set is shown (pages, the API, published snapshots), as its licence asks.
LLMFAO_ATTRIBUTION = (
    "Prompts and answers from the Crowdsourced LLM Benchmark by llmonitor.com (CC BY 4.0); "
    "crowd votes from LLMFAO by Dmitry Ustalov (CC BY 4.0)."
)
SOURCE = "llmfao"
FIRST_VOTE_AT = datetime(2023, 9, 1, tzinfo=timezone.utc)
VOTE_INTERVAL = timedelta(minutes=1)
SECONDS_TO_VOTE = timedelta(seconds=30)  # the vote is stamped this long after its battle
_WINNERS = {"left": "a", "right": "b", "tie": "tie"}  # LLMFAO's left side (model_x) is our side a


class DemoDataError(ValueError):
    """The demo's data files are missing or inconsistent; the message names the file and line."""


class DemoData(NamedTuple):
    models: list[dict]  # name, organization, llmfao_id
    prompts: list[dict]  # id, text, category, slug
    answers: list[dict]  # llmfao_model_id, prompt_id, text, duration_ms
    votes: list[dict]  # row (1-based), prompt_id, model_x, model_y (llmfao ids), worker, winner ("a"|"b"|"tie")


# ------------------------------------------------------------------------------------------------ reading


def _read_jsonl(path: Path, fields: tuple[str, ...]) -> list[tuple[int, dict]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DemoDataError(f"{path}: cannot read: {e.strerror or e}") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DemoDataError(f"{path}:{number}: not valid JSON: {e.msg}") from None
        if not isinstance(record, dict):
            raise DemoDataError(f"{path}:{number}: not a JSON object")
        missing = [f for f in fields if f not in record]
        if missing:
            raise DemoDataError(f"{path}:{number}: missing field(s) {', '.join(missing)}")
        records.append((number, record))
    return records


def read_demo(data_dir: Path | str = DEMO_DATA) -> DemoData:
    """Read and cross-check the four files; raises DemoDataError naming the first problem."""
    data_dir = Path(data_dir)
    models, by_id = [], {}
    path = data_dir / "models.jsonl"
    for number, r in _read_jsonl(path, ("id", "name", "org")):
        if r["id"] in by_id:
            raise DemoDataError(f"{path}:{number}: model id {r['id']} appears twice")
        by_id[r["id"]] = r["name"]
        models.append({"name": r["name"], "organization": r["org"] or "", "llmfao_id": r["id"]})
    prompts, prompt_text = [], {}
    path = data_dir / "prompts.jsonl"
    for number, r in _read_jsonl(path, ("id", "text", "type", "slug")):
        if not isinstance(r["id"], int) or r["id"] in prompt_text:
            raise DemoDataError(f"{path}:{number}: prompt id {r['id']!r} is not a new integer")
        prompt_text[r["id"]] = r["text"]
        prompts.append({"id": r["id"], "text": r["text"], "category": r["type"], "slug": r["slug"]})
    answers = []
    path = data_dir / "results.jsonl"
    for number, r in _read_jsonl(path, ("model", "prompt", "result", "duration")):
        if r["model"] not in by_id or r["prompt"] not in prompt_text:
            raise DemoDataError(f"{path}:{number}: unknown model {r['model']} or prompt {r['prompt']}")
        answers.append(
            {
                "llmfao_model_id": r["model"],
                "prompt_id": r["prompt"],
                "text": r["result"] or "",
                "duration_ms": r["duration"],
            }
        )
    votes = []
    path = data_dir / "crowd-comparisons.csv"
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            for row_number, row in enumerate(reader, 1):
                where = f"{path}:{reader.line_num}"
                try:
                    prompt_id, x, y = int(row["prompt"]), int(row["model_x"]), int(row["model_y"])
                except (KeyError, TypeError, ValueError):
                    raise DemoDataError(f"{where}: prompt, model_x and model_y must be integers") from None
                if prompt_id not in prompt_text or x not in by_id or y not in by_id or x == y:
                    raise DemoDataError(f"{where}: unknown prompt or models, or a model against itself")
                if (row.get("left"), row.get("right")) != (by_id[x], by_id[y]):
                    raise DemoDataError(f"{where}: left/right names do not match model_x/model_y")
                if row.get("winner") not in _WINNERS or not row.get("worker"):
                    raise DemoDataError(f"{where}: winner must be left, right or tie, and worker non-empty")
                votes.append(
                    {
                        "row": row_number,
                        "prompt_id": prompt_id,
                        "model_x": x,
                        "model_y": y,
                        "worker": row["worker"],
                        "winner": _WINNERS[row["winner"]],
                    }
                )
    except OSError as e:
        raise DemoDataError(f"{path}: cannot read: {e.strerror or e}") from None
    return DemoData(models, prompts, answers, votes)


# ------------------------------------------------------------------------------------------------ state


def demo_is_loaded(session: Session) -> bool:
    return session.scalars(select(Model.id).where(Model.source == SOURCE).limit(1)).first() is not None


def database_is_empty(session: Session) -> bool:
    """No model at all: the state in which `arena demo load --if-empty` loads the demo."""
    return session.scalars(select(Model.id).limit(1)).first() is None


# ------------------------------------------------------------------------------------------------ loading


def load_demo(session: Session, data_dir: Path | str = DEMO_DATA) -> dict:
    """Load the demo in one transaction and return the counts of what was stored.

    Raises ValueError (DemoDataError for bad files) when the demo is already loaded, when a demo model's
    name or prompt id is already taken, or when the files are inconsistent; nothing is stored then.
    """
    data = read_demo(data_dir)
    if demo_is_loaded(session):
        raise ValueError("the LLMFAO demo is already loaded")
    names = [m["name"] for m in data.models]
    taken = sorted(session.scalars(select(Model.name).where(Model.name.in_(names))))
    if taken:
        raise ValueError(f"model name(s) already taken: {', '.join(taken)}")
    taken_ids = sorted(session.scalars(select(Prompt.id).where(Prompt.id.in_([p["id"] for p in data.prompts]))))
    if taken_ids:
        raise ValueError(f"prompt id(s) already taken: {', '.join(map(str, taken_ids))}")
    try:
        counts = _insert_all(session, data)
        # on the operators' record like every other import (the loader runs from the command line)
        record_action(session, OPERATOR, "demo.load", details={"source": SOURCE, **counts})
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return counts


def _insert_all(session: Session, data: DemoData) -> dict:
    session.execute(
        insert(Model),
        [
            {
                "name": m["name"],
                "organization": m["organization"],
                "kind": "recorded",
                "status": "active",
                "sampling_weight": 1.0,
                "source": SOURCE,
            }
            for m in data.models
        ],
    )
    our_id = dict(session.execute(select(Model.name, Model.id).where(Model.source == SOURCE)).all())
    model_id = {m["llmfao_id"]: our_id[m["name"]] for m in data.models}

    session.execute(insert(Prompt), [{**p, "source": SOURCE} for p in data.prompts])
    _advance_id_sequence(session, Prompt.__tablename__)

    session.execute(
        insert(RecordedAnswer),
        [
            {
                "model_id": model_id[a["llmfao_model_id"]],
                "prompt_id": a["prompt_id"],
                "text": a["text"],
                "duration_ms": a["duration_ms"],
                **style_counts(a["text"]),
            }
            for a in data.answers
        ],
    )

    prompt_text = {p["id"]: p["text"] for p in data.prompts}
    battles, votes = [], []
    for i, v in enumerate(data.votes):
        battle_id, voter = f"{SOURCE}-{v['row']}", f"{SOURCE}:{v['worker']}"
        at = FIRST_VOTE_AT + i * VOTE_INTERVAL
        battles.append(
            {
                "id": battle_id,
                "prompt_id": v["prompt_id"],
                "prompt_text": prompt_text[v["prompt_id"]],
                "model_a_id": model_id[v["model_x"]],
                "model_b_id": model_id[v["model_y"]],
                "state": "voted",
                "flagged": False,
                "voter": voter,
                "source": SOURCE,
                "sampling_policy": "imported",
                "created_at": at,
            }
        )
        votes.append(
            {
                "battle_id": battle_id,
                "winner": v["winner"],
                "voter": voter,
                "source": SOURCE,
                "created_at": at + SECONDS_TO_VOTE,
            }
        )
    session.execute(insert(Battle), battles)
    _insert_votes(session, votes)
    return {
        "models": len(data.models),
        "prompts": len(data.prompts),
        "answers": len(data.answers),
        "battles": len(battles),
        "votes": len(votes),
    }


def _insert_votes(session: Session, votes: list[dict]) -> None:
    # In file order, so vote ids (the tie-breaker after created_at) follow it too.
    session.execute(insert(Vote), votes)


def _advance_id_sequence(session: Session, table: str) -> None:
    """After inserting explicit ids, move PostgreSQL's id sequence past them (SQLite needs nothing)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"))


def demo_counts(session: Session) -> dict:
    """What the database holds from the demo (by source), for reports and checks."""

    def count(model, column):
        return session.scalar(select(func.count()).select_from(model).where(column == SOURCE))

    answers = session.scalar(select(func.count()).select_from(RecordedAnswer).join(Model).where(Model.source == SOURCE))
    return {
        "models": count(Model, Model.source),
        "prompts": count(Prompt, Prompt.source),
        "answers": answers,
        "battles": count(Battle, Battle.source),
        "votes": count(Vote, Vote.source),
    }
