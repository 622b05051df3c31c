"""Building leaderboard snapshots: the one function that computes the service's rankings.

A snapshot is computed once from the stored votes and never changed. `build_snapshot` is the only code that
computes rankings for the service; everything that shows a rating (the API, the pages, a lab's model status)
reads the newest stored snapshot, so a read never waits for a fit and never recomputes one.

How a snapshot is made (see DESIGN.md):
1. Take the votes with id <= the newest vote id (the cut), with their battles, models and prompt categories.
2. Decide for each vote whether it counts, by the named rules in COUNTING_RULES, in order; the first rule
   that applies is the vote's recorded reason. Nothing is deleted: the vote file lists every vote considered.
3. Write the counted battles as the canonical battle file (FastChat JSON Lines through
   `ranking.write_battles_jsonl`, in vote order, voters pseudonymised), hash it, and read it back with
   `ranking.read_battles`: the numbers are computed from exactly the bytes that are published, so
   `python -m ranking fit` (or `verify`) on the file with the board's options gives the same numbers.
4. Rank it (`ranking.rank_battles`): the overall board, one board per prompt category, and the
   style-controlled board when answer style counts are known.
5. Sign the document with the arena's Ed25519 key and store it with both files in one transaction.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import tempfile
import time
import warnings
from datetime import datetime, timezone
from typing import NamedTuple

import numpy as np
import orjson
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from arena import db, metrics
from arena.catalog.demo import LLMFAO_ATTRIBUTION
from arena.leaderboard import integrity, locks, signing
from arena.leaderboard.reading import as_utc, iso_utc, latest_version, named_boards, new_counted_votes
from arena.leaderboard.sampling import snapshot_record
from arena.leaderboard.voters import excluded_voters, pseudonymiser
from arena.models import Battle, Lab, Message, Model, Prompt, RecordedAnswer, Snapshot, SnapshotFile, Vote
from arena.settings import Settings, settings_of
from ranking.data import (
    A_WINS,
    B_WINS,
    TIE,
    TIE_BOTHBAD,
    Battles,
    battles_jsonl_lines,
    read_battles,
    write_battles_jsonl,
)
from ranking.signature import canonical_json

log = logging.getLogger(__name__)

LOCK_NAME = "snapshot-builder"

WINNER_LABELS = {"a": "model_a", "b": "model_b", "tie": "tie", "bothbad": "tie (bothbad)"}

STYLE_COLUMNS = ("tokens", "header_count", "list_count", "bold_count")  # ranking.data.STYLE_FEATURES order

_STYLE_KEYS = (
    ("sum_assistant_a_tokens", "sum_assistant_b_tokens"),
    ("header_count_a", "header_count_b"),
    ("list_count_a", "list_count_b"),
    ("bold_count_a", "bold_count_b"),
)


# Which votes count, checked in this order; the first that applies is the reason recorded for the vote.
COUNTING_RULES = (
    ("void_battle", "the battle was void (an answer failed), so its vote cannot be judged"),
    ("flagged_battle", "an answer revealed its model's identity before the vote (FastChat leaves these out)"),
    ("excluded_voter", "an operator excluded the voter, with a recorded reason (`arena voters exclude`)"),
    *integrity.RULES,  # identity leaks re-checked, the daily cap, the statistical tests (integrity.py)
)


class SnapshotSettings(NamedTuple):
    """The service's ranking settings (ARENA_SNAPSHOT_* and ARENA_PROVISIONAL_VOTES), recorded in each snapshot."""

    replicates: int
    style_replicates: int  # 0: sandwich intervals on the style board (a row bootstrap refits every battle row)
    seed: int
    ties: str
    provisional_votes: int
    every_votes: int  # a new snapshot after this many new counted votes; 0: only on the operator's command

    @classmethod
    def from_settings(cls, settings: Settings) -> "SnapshotSettings":
        return cls(
            replicates=settings.snapshot_replicates,
            style_replicates=settings.snapshot_style_replicates,
            seed=settings.snapshot_seed,
            ties=settings.snapshot_ties,
            provisional_votes=settings.provisional_votes,
            every_votes=settings.snapshot_every_votes,
        )


class BuildTimings(NamedTuple):
    """Seconds spent by one build, for bench/leaderboard.py."""

    query: float  # reading the votes, models and answer styles
    encoding: float  # counting rules, the canonical battle file written, hashed and read back
    fit: float  # Bradley-Terry fits, every board
    bootstrap: float  # bootstrap intervals, every board (style-controlled board excluded)
    style: float  # the style-controlled board: its fit and row bootstrap
    storing: float  # signing, compressing both files, one transaction
    total: float


def build_snapshot(
    app: Flask, *, only_if_due: bool = False, if_none: bool = False, timings: list | None = None
) -> Snapshot | None:
    """Build, sign and store a new snapshot; the only function that computes the service's rankings.

    Runs alone across workers and hosts (arena.leaderboard.locks): if another build holds the lock, returns None at
    once.
    `only_if_due`: build only when the settings' number of new counted votes has arrived since the newest
    snapshot; `if_none`: only when there is no snapshot yet. Returns the new snapshot, or None when nothing
    was built. Raises ValueError when there is no counted vote to rank.
    """
    settings = SnapshotSettings.from_settings(settings_of(app))
    with locks.try_exclusive(app.extensions["arena.engine"], LOCK_NAME) as held:
        if not held:
            log.info("a snapshot is being built elsewhere; not starting another")
            return None
        with db.new_session(app) as session:
            if if_none and latest_version(session) is not None:
                return None
            if only_if_due and (settings.every_votes <= 0 or new_counted_votes(session) < settings.every_votes):
                return None
            started = time.perf_counter()
            try:
                built = _build(app, session, settings, timings)
            except Exception:
                metrics.SNAPSHOT_BUILDS.labels("failed").inc()
                raise
            metrics.SNAPSHOT_BUILDS.labels("built").inc()
            metrics.SNAPSHOT_BUILD_SECONDS.observe(time.perf_counter() - started)
            return built


def _build(app: Flask, session: Session, settings: SnapshotSettings, timings: list | None) -> Snapshot:
    # ranking.leaderboard (and ranking.cli) load JAX: imported when a build runs, not by the web workers that
    # import this module for COUNTING_RULES.
    from ranking import RankingOptions
    from ranking.compilation import enable_compilation_cache

    enable_compilation_cache()  # compiled fits kept on disk: the next build (or restart) skips the compiling

    started = time.perf_counter()
    cut = session.scalar(select(func.max(Vote.id)))
    if cut is None:
        raise ValueError("there is no vote yet: nothing to rank")
    version = (latest_version(session) or 0) + 1
    created_at = datetime.now(timezone.utc).replace(microsecond=0)
    votes, models = _gather(session, cut)
    rules = integrity.IntegritySettings.from_settings(settings_of(app))
    leaked, prompts = integrity.read_evidence(
        session, cut, votes.battle_id, votes.model_a_id, votes.model_b_id, votes.prompt_id, votes.reason, rules
    )
    session.rollback()  # end the read transaction: the fit takes a while, and nothing read is written back
    queried = time.perf_counter()

    pseudonym = pseudonymiser(settings_of(app).secret_key)
    everything = _encode(votes, models, pseudonym)
    checked = integrity.apply_rules(
        integrity.VoteTable(
            everything.model_a,
            everything.model_b,
            everything.outcome,
            everything.voter,
            integrity.day_numbers(everything.tstamp),
            prompts,
            leaked,
            votes.reason,
            tested=np.array([source == "arena" for source in votes.source], bool),
        ),
        len(models),
        len(everything.voters),
        rules,
    )
    votes = votes._replace(reason=checked.reason)
    everything = everything._replace(weight=checked.weight)  # written where not 1: repeated prompts
    excluded = {name: sum(1 for reason in votes.reason if reason == name) for name, _ in COUNTING_RULES}
    counted = np.fromiter((reason is None for reason in votes.reason), bool, len(votes.reason))
    if not counted.any():
        raise ValueError(f"none of the {len(votes.reason)} votes counts: nothing to rank ({_describe(excluded)})")
    battles, battle_bytes = _canonical_battles(_rows(everything, counted), version)
    vote_bytes = _vote_file(everything, votes)
    encoded = time.perf_counter()
    base_options = RankingOptions(ties=settings.ties, replicates=settings.replicates, seed=settings.seed)
    ranking_times: dict = {}
    boards = _boards(battles, base_options, models, settings, ranking_times)
    ranked = time.perf_counter()

    document = {
        "format": "arena-snapshot/1",
        "version": version,
        "created_at": iso_utc(created_at),
        "code_version": _code_version(),
        "settings": settings._asdict(),
        "battle_file": {
            "sha256": battles.sha256,
            "battles": int(counted.sum()),
            "bytes": len(battle_bytes),
            "download": f"/api/v1/leaderboard/snapshots/{version}/battles",
        },
        "vote_file": {
            "sha256": hashlib.sha256(vote_bytes).hexdigest(),
            "votes": len(votes.reason),
            "bytes": len(vote_bytes),
            "download": f"/api/v1/leaderboard/snapshots/{version}/votes",
        },
        "votes": {
            "considered": len(votes.reason),
            "counted": int(counted.sum()),
            "excluded": excluded,
            "last_vote_id": cut,
        },
        "counting_rules": [{"name": name, "description": text} for name, text in COUNTING_RULES],
        "integrity": checked.report,  # the integrity rules' settings, votes excluded and voters flagged by each
        "sampling": _sampling_policy(models, settings_of(app)),
        "reproduce": {name: _reproduce(board["options"], name) for name, board in named_boards(boards)},
        "boards": boards,
        "models": _registry(models, battles, everything, votes.reason),
        "public_key": "/api/v1/leaderboard/public-key",
    }
    if any(model.source == "llmfao" for model in models.values()):
        document["attribution"] = LLMFAO_ATTRIBUTION
    signature = signing.sign_document(settings_of(app), document)
    snapshot = Snapshot(
        version=version,
        created_at=created_at,
        code_version=document["code_version"],
        seed=settings.seed,
        last_vote_id=cut,
        votes_counted=int(counted.sum()),
        votes_excluded=int((~counted).sum()),
        battle_file_sha256=battles.sha256,
        document=_canonical_text(document),
        signature=json.dumps(signature, sort_keys=True),
        key_id=signature["key_id"],
    )
    session.add(snapshot)
    session.flush()
    for kind, data in (("battles", battle_bytes), ("votes", vote_bytes)):
        session.add(
            SnapshotFile(
                version=version,
                kind=kind,
                sha256=hashlib.sha256(data).hexdigest(),
                size=len(data),
                gzip=gzip.compress(data, compresslevel=1, mtime=0),
            )
        )
    session.commit()
    finished = time.perf_counter()
    if timings is not None:
        timings.append(
            BuildTimings(
                query=queried - started,
                encoding=encoded - queried,
                fit=ranking_times.get("fit", 0.0),
                bootstrap=ranking_times.get("bootstrap", 0.0),
                style=ranking_times.get("style", 0.0),
                storing=finished - ranked,
                total=finished - started,
            )
        )
    log.info(
        "snapshot %d built from %d counted votes (%d excluded) in %.1f s",
        version,
        snapshot.votes_counted,
        snapshot.votes_excluded,
        finished - started,
    )
    return snapshot


class _Votes(NamedTuple):
    """Every vote considered, as columns in vote order."""

    id: list[int]
    winner: list[str]  # "a", "b", "tie" or "bothbad"
    created_at: list[datetime]
    voter: list[str | None]
    source: list[str]
    model_a_id: list[int]
    model_b_id: list[int]
    category: list[str | None]
    reason: list[str | None]  # why the vote does not count; None when it counts
    style: np.ndarray  # (n, 2, 4) answer style counts, NaN where not known for both answers
    battle_id: list[str] | None = None  # for the integrity rules' reads (arena.leaderboard.integrity.read_evidence)
    prompt_id: list[int | None] | None = None


class _ModelInfo(NamedTuple):
    name: str
    organization: str
    lab: str | None
    kind: str
    status: str
    source: str
    sampling_weight: float


def _gather(session: Session, cut: int) -> tuple[_Votes, dict[int, _ModelInfo]]:
    """Every vote with id <= cut, in vote order, with what the counting rules and the battle file need."""
    models = {
        row.id: _ModelInfo(row.name, row.organization, row.lab, row.kind, row.status, row.source, row.sampling_weight)
        for row in session.execute(
            select(
                Model.id,
                Model.name,
                Model.organization,
                Lab.name.label("lab"),
                Model.kind,
                Model.status,
                Model.source,
                Model.sampling_weight,
            ).outerjoin(Lab, Model.lab_id == Lab.id)
        )
    }
    left_out_voters = excluded_voters(session)
    styles = _message_styles(session, cut)
    recorded = {
        (row.model_id, row.prompt_id): tuple(row[2:])
        for row in session.execute(
            select(
                RecordedAnswer.model_id, RecordedAnswer.prompt_id, *(getattr(RecordedAnswer, c) for c in STYLE_COLUMNS)
            )
        )
    }
    statement = (
        select(
            Vote.id,
            Vote.winner,
            Vote.created_at,
            Vote.voter,
            Vote.source,
            Battle.model_a_id,
            Battle.model_b_id,
            Prompt.category,
            Battle.state,
            Battle.flagged,
            Battle.id,
            Battle.prompt_id,
        )
        .join(Battle, Vote.battle_id == Battle.id)
        .outerjoin(Prompt, Battle.prompt_id == Prompt.id)
        .where(Vote.id <= cut)
        .order_by(Vote.created_at, Vote.id)
    )
    rows = session.execute(statement).all()
    columns = [list(column) for column in zip(*rows)] if rows else [[] for _ in range(12)]
    states, flags, battle_ids, prompt_ids = columns[8:]
    reason = [
        "void_battle"
        if state == "void"
        else "flagged_battle"
        if flagged
        else "excluded_voter"
        if voter is not None and voter in left_out_voters
        else None
        for state, flagged, voter in zip(states, flags, columns[3])
    ]
    style = np.full((len(rows), 2, len(STYLE_COLUMNS)), np.nan)
    for i, (battle_id, model_a, model_b, prompt_id) in enumerate(zip(battle_ids, columns[5], columns[6], prompt_ids)):
        sides = styles.get(battle_id)
        if sides is None and prompt_id is not None:  # imported battles: the recorded answers were shown
            sides = (recorded.get((model_a, prompt_id)), recorded.get((model_b, prompt_id)))
        if sides is not None and _complete(sides[0]) and _complete(sides[1]):
            style[i] = sides
    return _Votes(*columns[:8], reason, style, battle_ids, prompt_ids), models


def _complete(counts) -> bool:
    return counts is not None and None not in counts


def _message_styles(session: Session, cut: int) -> dict[str, tuple]:
    """Per voted battle, each side's style counts summed over its answers (None for a side with an uncounted
    answer), from the counts stored with each message."""
    counted = [func.count(Message.tokens)] + [func.sum(getattr(Message, c)) for c in STYLE_COLUMNS]
    statement = (
        select(Message.battle_id, Message.side, func.count(), *counted)
        .join(Vote, Vote.battle_id == Message.battle_id)
        .where(Vote.id <= cut, Message.role == "assistant")
        .group_by(Message.battle_id, Message.side)
    )
    styles: dict[str, list] = {}
    for battle_id, side, answers, known, *sums in session.execute(statement):
        sides = styles.setdefault(battle_id, [None, None])
        sides[0 if side == "a" else 1] = tuple(sums) if answers == known else None
    return {battle_id: tuple(sides) for battle_id, sides in styles.items()}


def _epoch(moment: datetime) -> float:
    return as_utc(moment).timestamp()


def _encode(votes: _Votes, models: dict[int, _ModelInfo], pseudonym):
    """Every vote considered as ranking's arrays (battle file rows, before the counting rules select them)."""
    names = tuple(info.name for info in models.values())
    position = {model_id: i for i, model_id in enumerate(models)}
    categories = tuple(sorted({c for c in votes.category if c}))
    category_code = {c: i for i, c in enumerate(categories)}
    judges = [pseudonym(voter) for voter in votes.voter]
    voters = tuple(sorted({j for j in judges if j is not None}))
    voter_code = {v: i for i, v in enumerate(voters)}
    outcome_code = {"a": A_WINS, "b": B_WINS, "tie": TIE, "bothbad": TIE_BOTHBAD}
    n = len(votes.id)
    return Battles(
        model_a=np.fromiter((position[m] for m in votes.model_a_id), np.int32, n),
        model_b=np.fromiter((position[m] for m in votes.model_b_id), np.int32, n),
        outcome=np.fromiter((outcome_code[w] for w in votes.winner), np.int8, n),
        models=names,
        category=np.fromiter((category_code[c] if c else -1 for c in votes.category), np.int32, n),
        categories=categories,
        voter=np.fromiter((-1 if j is None else voter_code[j] for j in judges), np.int32, n),
        voters=voters,
        tstamp=np.fromiter((_epoch(moment) for moment in votes.created_at), np.float64, n),
        anony=np.ones(n, bool),
        style=votes.style,
        sha256="",
    )


def _rows(battles, keep: np.ndarray):
    """The selected rows of encoded battles (the name tuples stay whole: the file holds names, not codes)."""
    style = battles.style[keep]
    return battles._replace(
        model_a=battles.model_a[keep],
        model_b=battles.model_b[keep],
        outcome=battles.outcome[keep],
        category=battles.category[keep],
        voter=battles.voter[keep],
        tstamp=battles.tstamp[keep],
        anony=battles.anony[keep],
        style=style if np.isfinite(style).any() else None,
        weight=None if battles.weight is None else battles.weight[keep],
    )


def _canonical_battles(encoded, version: int):
    """Write the canonical battle file and read it back: the arrays every board is computed from are the ones
    anyone gets by reading the published bytes. Returns (Battles, the file's bytes)."""
    with tempfile.TemporaryDirectory(prefix="arena-snapshot-") as folder:
        path = os.path.join(folder, f"snapshot-{version}-battles.jsonl")
        write_battles_jsonl(encoded, path)
        with open(path, "rb") as f:
            data = f.read()
        battles = read_battles(path, format="jsonl")
    return battles, data


def _vote_file(encoded, votes: _Votes) -> bytes:
    """Every vote considered, one JSON line each: the battle file's fields, plus the vote's id, source, and
    whether it counted (with the rule that left it out). Each line is the battle's canonical line with those
    fields spliced in around it, the bytes orjson would write for {"vote", **battle, "source", "counted",
    "excluded"}, without parsing and dumping a million lines again."""
    quoted = {value: orjson.dumps(value) for value in {*votes.source, *votes.reason}}
    return b"".join(
        b'{"vote":%d,%b,"source":%b,"counted":%b,"excluded":%b}\n'
        % (vote_id, line[1:-2], quoted[source], b"true" if reason is None else b"false", quoted[reason])
        for line, vote_id, source, reason in zip(battles_jsonl_lines(encoded), votes.id, votes.source, votes.reason)
    )


def _boards(battles, base_options, models: dict[int, _ModelInfo], settings: SnapshotSettings, timings: dict) -> dict:
    """The overall board, one per prompt category and, where answer style is known, the style-controlled one;
    each model row completed with what the service knows of the model (organisation, lab, status)."""
    from ranking import RankingWarning, rank_battles  # JAX, as in _build
    from ranking.leaderboard import board_dict

    by_name = {info.name: info for info in models.values()}

    def board(options):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RankingWarning)  # collected in the board's own warnings
            data = board_dict(rank_battles(battles, options, timings=timings))
        for row in data["models"]:
            info = by_name[row["model"]]
            row.update(
                organization=info.organization,
                lab=info.lab,
                status=info.status,
                retired=info.status == "retired",
                provisional=row["battles"] < settings.provisional_votes,
            )
        return data

    boards = {"overall": board(base_options), "categories": {}, "style": None}
    for category in sorted(battles.categories):
        boards["categories"][category] = board(base_options._replace(category=category))
    if battles.style is not None and settings.ties == "half":
        boards["style"] = board(base_options._replace(style=True, replicates=settings.style_replicates))
    return boards


def _reproduce(options: dict, name: str) -> str:
    """The command that recomputes a board from the snapshot's battle file (save it as battles.jsonl)."""
    parts = [
        "python -m ranking fit battles.jsonl",
        f"--bootstrap {options['replicates']}",
        f"--seed {options['seed']}",
        f"--ties {options['ties']}",
        f"--prior {options['prior']!r}",
        f"--confidence {options['confidence']!r}",
    ]
    if options["category"] is not None:
        parts.append(f"--category '{options['category']}'")
    if options["style"]:
        parts.append("--style")
    return (
        " ".join(parts + ["--format json"]) + f"   # or: python -m ranking verify snapshot.json battles.jsonl "
        f"--board {name}"
    )


def _registry(models: dict[int, _ModelInfo], battles, everything, reasons: list[str | None]) -> list[dict]:
    """Every model the arena knows, rated or not, so that no variant a lab registered can be left unseen, with
    the votes of its battles this snapshot counted and those it left out by each rule (a lab reads them in its
    model's status: the integrity rules run here, not when a vote is cast)."""
    rated = set(battles.models)
    rules = [name for name, _ in COUNTING_RULES]
    code = {None: 0, **{name: i + 1 for i, name in enumerate(rules)}}
    reason_codes = np.fromiter((code[reason] for reason in reasons), np.int64, len(reasons))
    n_models = len(everything.models)
    tally = np.zeros((n_models, len(rules) + 1), np.int64)  # per model: counted, then each rule
    for side in (everything.model_a, everything.model_b):
        np.add.at(tally, (side, reason_codes), 1)
    by_name = dict(zip(everything.models, tally.tolist()))
    entries = []
    for info in sorted(models.values(), key=lambda info: info.name):
        counts = by_name.get(info.name, [0] * (len(rules) + 1))
        entries.append(
            {
                "model": info.name,
                "organization": info.organization,
                "lab": info.lab,
                "kind": info.kind,
                "status": info.status,
                "rated": info.name in rated,
                "votes": {"counted": counts[0], "excluded": {rule: n for rule, n in zip(rules, counts[1:]) if n}},
            }
        )
    return entries


def _sampling_policy(models: dict[int, _ModelInfo], settings: Settings) -> dict:
    """The sampling policy in force (name, rule, settings: arena.leaderboard.sampling) and every active model's
    weight."""
    active = sorted((info for info in models.values() if info.status == "active"), key=lambda info: info.name)
    return {**snapshot_record(settings), "weights": {info.name: info.sampling_weight for info in active}}


def _canonical_text(document: dict) -> str:
    return canonical_json(document).decode("utf-8")


def _code_version() -> str:
    from ranking.leaderboard import code_version  # JAX, as in _build

    return code_version()


def _describe(excluded: dict) -> str:
    return ", ".join(f"{count} {name}" for name, count in excluded.items() if count) or "no vote at all"
