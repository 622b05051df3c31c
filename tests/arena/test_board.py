"""The milestone board: safety score imports, milestone definitions, decisions on hand-made snapshots whose
answer is known (a model that is safe because it is useless must not pass), "met first" across snapshots,
the safetywashing correlation flag, and the signed export; through the domain, the API and the CLI, on a
fresh database per test (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pytest
from sqlalchemy import func, insert, select

from arena import cli
from arena.board import correlations as board_correlations
from arena.board import exports as board_exports
from arena.board import milestones as board_milestones
from arena.board import scores as board_scores
from arena.leaderboard import builds, reading, signing
from arena.models import AuditEvent, Battle, Milestone, SafetyScore, Vote
from arena.settings import override, settings_of
from tests.arena.conftest import gen_recorded_model

REPLICATES = 20  # snapshot bootstrap replicates: intervals exist; their quality is tested in tests/ranking
PROVISIONAL = 100  # counted battles below which a rating is provisional, in these tests
TODAY = datetime.now(timezone.utc).date()

# The hand-made arena: true strengths on the Elo scale; every pair meets GAMES times and the stronger side
# wins the expected share, so the fitted order is known. "Newcomer" plays only Reference, 20 times.
STRENGTH = {"Frontier Safe": 1300, "Frontier Unsafe": 1300, "Reference": 1000, "Useless Saint": 600}
GAMES = 60
# (refusal_of_harm: value, ci_low, ci_high), (jailbreak_rate: value, ci_low, ci_high)
SCORES = {
    "Frontier Safe": ((0.95, 0.93, 0.97), (0.02, 0.01, 0.03)),
    "Frontier Unsafe": ((0.60, 0.55, 0.65), (0.30, 0.25, 0.35)),
    "Useless Saint": ((0.99, 0.98, 1.00), (0.00, 0.00, 0.01)),  # refuses everything: safe because useless
    "Reference": ((0.92, 0.91, 0.93), (0.04, None, None)),
    "Newcomer": ((0.95, 0.94, 0.96), None),  # no jailbreak_rate measured
}
SAFE_AT_REFERENCE = {
    "name": "Safe at Reference level",
    "description": "as capable as Reference, and safe",
    "safety": [{"metric": "refusal_of_harm", "at_least": 0.9}, {"metric": "jailbreak_rate", "at_most": 0.05}],
    "capability": {"at_least_model": "Reference"},
}


@pytest.fixture
def board_app(app):
    override(app, SNAPSHOT_REPLICATES=REPLICATES, SNAPSHOT_EVERY_VOTES=0, PROVISIONAL_VOTES=PROVISIONAL)
    return app


@pytest.fixture
def runner(board_app):
    return board_app.test_cli_runner()


def invoke(runner, *args, code=0):
    result = runner.invoke(args=list(args))
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    if code:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    return result


# ------------------------------------------------------------------------------------------------ helpers


def gen_models(session, *names) -> dict[str, int]:
    return {name: gen_recorded_model(session, name, "Org", {}).id for name in names}


def add_votes(session, ids: dict[str, int], games: list[tuple[str, str, str]]) -> None:
    """Battles with their votes, (model a, model b, winner "a" | "b" | "tie"), one minute apart, in bulk."""
    stored = session.scalar(select(func.count()).select_from(Battle))
    start = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=stored)
    battles, votes = [], []
    for i, (a, b, winner) in enumerate(games):
        battle_id, at = f"t{stored + i + 1}", start + timedelta(minutes=i)
        # each its own typed prompt: one text repeated hundreds of times would be down-weighted
        # (arena.leaderboard.integrity)
        battles.append(
            {
                "id": battle_id,
                "prompt_id": None,
                "prompt_text": f"question {stored + i}",
                "model_a_id": ids[a],
                "model_b_id": ids[b],
                "state": "voted",
                "flagged": False,
                "voter": f"v{i % 7}",
                "source": "test",
                "sampling_policy": "imported",
                "created_at": at,
            }
        )
        votes.append(
            {"battle_id": battle_id, "winner": winner, "voter": f"v{i % 7}", "source": "test", "created_at": at}
        )
    session.execute(insert(Battle), battles)
    session.execute(insert(Vote), votes)
    session.commit()


def games_between(a: str, b: str, games: int, a_wins: int) -> list[tuple[str, str, str]]:
    return [(a, b, "a" if i < a_wins else "b") for i in range(games)]


def expected_wins(a: str, b: str) -> int:
    return round(GAMES / (1 + 10 ** ((STRENGTH[b] - STRENGTH[a]) / 400)))


def build(app) -> dict:
    built = builds.build_snapshot(app)
    assert built is not None
    return reading.published_document(built)


def score_rows(scores: dict, day: str) -> list[dict]:
    rows = []
    for model, (refusal, jailbreak) in scores.items():
        for metric, measured in (("refusal_of_harm", refusal), ("jailbreak_rate", jailbreak)):
            if measured is not None:
                value, low, high = measured
                rows.append(
                    {
                        "model": model,
                        "metric": metric,
                        "value": value,
                        "ci_low": low,
                        "ci_high": high,
                        "source": "SafetyLab",
                        "date": day,
                    }
                )
    return rows


def import_json(session, rows) -> int:
    return board_scores.import_scores(session, json.dumps(rows), fmt="json", name="scores.json")


@pytest.fixture
def hand_made(board_app, session):
    """The hand-made arena, one snapshot of it, its safety scores (dated yesterday) and one milestone."""
    ids = gen_models(session, *STRENGTH, "Newcomer", "Never Played")
    names = list(STRENGTH)
    games = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            games += games_between(a, b, GAMES, expected_wins(a, b))
    games += games_between("Newcomer", "Reference", 20, 17)
    add_votes(session, ids, games)
    document = build(board_app)
    import_json(session, score_rows(SCORES, (TODAY - timedelta(days=1)).isoformat()))
    board_milestones.add_milestones(session, SAFE_AT_REFERENCE)
    return document


def rows_by_model(document, board_name="overall") -> dict[str, dict]:
    return {row["model"]: row for row in board_milestones.board_rows(document, board_name)}


def decisions(report, name) -> dict[str, dict]:
    milestone = next(m for m in report["milestones"] if m["name"] == name)
    return {d["model"]: d for d in milestone["models"]}


# ------------------------------------------------------------------------------------------------ imports


def test_a_good_csv_json_and_json_lines_file_are_imported(board_app, session):
    gen_models(session, "Model A", "Model B")
    csv_text = (
        "model,metric,value,ci_low,ci_high,source,date\n"
        "Model A,refusal_of_harm,0.91,0.89,0.93,HarmBench,2026-05-01\n"
        "Model B,refusal_of_harm,0.5,,,HarmBench,2026-05-01\n"
    )
    assert board_scores.import_scores(session, csv_text, fmt="csv") == 2
    json_list = json.dumps(
        [{"model": "Model A", "metric": "jailbreak_rate", "value": 0.1, "source": "S", "date": "2026-05-02"}]
    )
    assert board_scores.import_scores(session, json_list, fmt="json") == 1
    json_lines = (
        "\n".join(
            json.dumps(
                {
                    "model": m,
                    "metric": "bias",
                    "value": v,
                    "ci_low": v - 0.1,
                    "ci_high": v + 0.1,
                    "source": "S",
                    "date": "2026-05-03",
                }
            )
            for m, v in (("Model A", 0.2), ("Model B", 0.4))
        )
        + "\n\n"
    )
    assert board_scores.import_scores(session, json_lines, fmt="json") == 2
    stored = board_scores.load_scores(session)
    assert [(s.model, s.metric, s.value, s.ci_low, s.ci_high, s.measured_on) for s in stored] == [
        ("Model A", "bias", 0.2, pytest.approx(0.1), pytest.approx(0.3), date(2026, 5, 3)),
        ("Model A", "jailbreak_rate", 0.1, None, None, date(2026, 5, 2)),
        ("Model A", "refusal_of_harm", 0.91, 0.89, 0.93, date(2026, 5, 1)),
        ("Model B", "bias", 0.4, pytest.approx(0.3), pytest.approx(0.5), date(2026, 5, 3)),
        ("Model B", "refusal_of_harm", 0.5, None, None, date(2026, 5, 1)),
    ]
    assert [s.model for s in board_scores.load_scores(session, model="Model B", metric="bias")] == ["Model B"]
    audit = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "safety.import").order_by(AuditEvent.id)
    ).all()
    assert [(e.actor, e.details["scores"], e.details["metrics"]) for e in audit] == [
        ("operator", 2, ["refusal_of_harm"]),
        ("operator", 1, ["jailbreak_rate"]),
        ("operator", 2, ["bias"]),
    ]


def test_every_bad_line_is_reported_and_nothing_is_stored(board_app, session):
    gen_models(session, "GPT 4", "Claude v1")
    csv_text = "\n".join(
        [
            "model,metric,value,ci_low,ci_high,source,date",
            "GPT 4,refusal_of_harm,0.9,0.85,0.95,HarmBench,2026-05-01",  # good
            "gpt-4,refusal_of_harm,0.9,,,HarmBench,2026-05-01",  # unknown model, close to GPT 4
            "Claude v1,refusal_of_harm,high,,,HarmBench,2026-05-01",  # not a number
            "Claude v1,refusal_of_harm,nan,,,HarmBench,2026-05-01",  # not finite
            "Claude v1,jailbreak_rate,0.5,0.6,0.7,HarmBench,2026-05-01",  # interval misses the value
            "Claude v1,jailbreak_rate,0.5,,,HarmBench,2026-02-30",  # no such date
            "Claude v1,jailbreak_rate,0.5,,,,2026-05-01",  # no source
            "GPT 4,refusal_of_harm,0.8,,,HarmBench,2026-05-01",  # same measurement as line 2
            "Unheard Of,x,1,,,S,2026-05-01",  # unknown, nothing close
            "",
        ]
    )
    with pytest.raises(board_scores.ScoreFileError) as caught:
        board_scores.import_scores(session, csv_text, fmt="csv", name="scores.csv")
    problems = {(p.where, p.message) for p in caught.value.problems}
    assert problems == {
        ("line 3", "unknown model 'gpt-4' (did you mean 'GPT 4'?)"),
        ("line 4", "value 'high' is not a number"),
        ("line 5", "value must be a finite number, not 'nan'"),
        ("line 6", "the interval [0.6, 0.7] does not contain the value 0.5"),
        ("line 7", 'date must be a date as YYYY-MM-DD, not "2026-02-30"'),
        ("line 8", "missing source"),
        ("line 9", "the same model, metric, source and date as line 2"),
        ("line 10", "unknown model 'Unheard Of'"),
    }
    assert str(caught.value) == "scores.csv: nothing imported: 8 problem(s) in 9 record(s)"
    assert session.scalar(select(func.count()).select_from(SafetyScore)) == 0  # the good line too


def test_json_problems_name_the_record_or_line(board_app, session):
    gen_models(session, "Model A")
    good = {"model": "Model A", "metric": "m", "value": 1, "source": "S", "date": "2026-05-01"}
    with pytest.raises(board_scores.ScoreFileError) as caught:
        import_json(
            session,
            [
                good,
                {**good, "value": "0.5", "date": "2026-05-02"},
                {**good, "vaule": 1, "date": "2026-05-03"},
                {**good, "value": True},
                [1],
            ],
        )
    assert [(p.where, p.message) for p in caught.value.problems] == [
        ("record 2", 'value must be a number, not "0.5"'),
        ("record 3", "unknown field(s) 'vaule' (the fields are model, metric, value, ci_low, ci_high, source, date)"),
        ("record 4", "value must be a number, not true"),
        ("record 5", "must be an object with the fields model, metric, value, ci_low, ci_high, source, date"),
    ]
    with pytest.raises(board_scores.ScoreFileError) as caught:
        board_scores.import_scores(session, json.dumps(good) + "\n{not json\n", fmt="json")
    assert [p.where for p in caught.value.problems] == ["line 2"]
    with pytest.raises(board_scores.ScoreFileError) as caught:
        board_scores.import_scores(session, "model,metric\nModel A,m\n", fmt="csv")
    assert (
        caught.value.problems[0].where == "line 1"
        and "missing column(s) value, source, date" in caught.value.problems[0].message
    )
    assert session.scalar(select(func.count()).select_from(SafetyScore)) == 0


def test_a_stored_measurement_is_refused_again_and_the_whole_file_with_it(board_app, session):
    gen_models(session, "Model A")
    first = {"model": "Model A", "metric": "m", "value": 1, "source": "S", "date": "2026-05-01"}
    import_json(session, [first])
    with pytest.raises(board_scores.ScoreFileError) as caught:
        import_json(session, [{**first, "date": "2026-05-02"}, {**first, "value": 2}])
    [problem] = caught.value.problems
    assert (
        problem.where == "record 2"
        and "(model 'Model A', metric 'm', source 'S', date 2026-05-01) is already stored" in problem.message
    )
    assert len(board_scores.load_scores(session)) == 1
    import_json(session, [{**first, "source": "Another lab"}])  # another source: another measurement
    assert len(board_scores.load_scores(session)) == 2


def test_the_score_used_is_the_latest_on_or_before_the_date_and_the_latest_import_on_a_tie():
    at = datetime(2026, 6, 1, tzinfo=timezone.utc)

    def score(i, source, day, value, imported):
        return board_scores.Score(i, "M", "m", value, None, None, source, day, at + timedelta(hours=imported))

    scores = [
        score(1, "A", date(2026, 5, 1), 0.1, 0),
        score(2, "B", date(2026, 5, 3), 0.2, 0),
        score(3, "C", date(2026, 5, 3), 0.3, 1),
        score(4, "D", date(2026, 5, 3), 0.4, -1),
        score(5, "E", date(2026, 5, 9), 0.9, 2),
    ]
    assert board_scores.scores_on(scores, date(2026, 4, 30)) == {}
    assert board_scores.scores_on(scores, date(2026, 5, 2))[("M", "m")].score.source == "A"
    chosen = board_scores.scores_on(scores, date(2026, 5, 8))[("M", "m")]
    assert chosen.score.source == "C" and sorted(chosen.same_day) == ["B", "D"]
    assert "the most recently imported (C) is used" in board_scores.score_dict(chosen)["note"]
    assert board_scores.scores_on(scores, date(2026, 5, 9))[("M", "m")].score.source == "E"


# ------------------------------------------------------------------------------------------------ milestones


def test_milestones_are_validated_all_or_nothing_and_never_redefined(board_app, session):
    gen_models(session, "GPT 3.5 Turbo")
    good = {
        "name": "Good",
        "safety": [{"metric": "refusal_of_harm", "at_least": 0.9}],
        "capability": {"min_rating": 1100},
    }
    bad = [
        {**good, "name": "Two floors", "capability": {"min_rating": 1, "within_of_leader": 5}},
        {**good, "name": "Both ways", "safety": [{"metric": "m", "at_least": 0.1, "at_most": 0.2}]},
        {**good, "name": "Typo", "capabilty": {"min_rating": 1}},
        {**good, "name": "Unknown reference", "capability": {"at_least_model": "GPT-3.5 Turbo"}},
        {**good, "name": "No safety", "safety": []},
        {**good, "name": "Text threshold", "safety": [{"metric": "m", "at_least": "0.9"}]},
        {**good, "name": "Negative gap", "capability": {"within_of_leader": -5}},
        {**good, "name": "Bad board", "board": "categories"},
        {**good},  # the same name as the first
    ]
    with pytest.raises(board_milestones.MilestoneError) as caught:
        board_milestones.add_milestones(session, [good, *bad])
    text = "\n".join(caught.value.problems)
    assert "give exactly one of at_least_model, within_of_leader and min_rating" in text
    assert "give exactly one of at_least and at_most" in text
    assert "capabilty: Extra inputs are not permitted" in text
    assert "unknown model 'GPT-3.5 Turbo' (did you mean 'GPT 3.5 Turbo'?)" in text
    assert "'No safety'): safety: List should have at least 1 item" in text
    assert "'Text threshold'): safety.0.at_least: Input should be a valid number" in text
    assert "within_of_leader: Input should be greater than or equal to 0" in text
    assert "'Bad board'): board: String should match pattern" in text
    assert "milestone 10 ('Good'): the same name as milestone 1" in text
    assert len(caught.value.problems) == 9
    assert session.scalar(select(func.count()).select_from(Milestone)) == 0

    [added] = board_milestones.add_milestones(session, good)
    assert added.definition == {**good, "description": "", "board": "overall", "allow_provisional": False}
    with pytest.raises(board_milestones.MilestoneError) as caught:
        board_milestones.add_milestones(session, {**good, "capability": {"min_rating": 1000}})  # a "changed rule"
    assert "definitions are never edited" in caught.value.problems[0]
    assert [m.definition for m in board_milestones.list_milestones(session)] == [added.definition]
    assert [
        e.details["definition"] for e in session.scalars(select(AuditEvent).where(AuditEvent.action == "milestone.add"))
    ] == [added.definition]  # refusals add none


# ------------------------------------------------------------------------------------------------ decisions


def test_the_hand_made_case_useless_but_safe_does_not_pass_and_capable_but_unsafe_does_not_either(
    board_app, session, hand_made
):
    report = board_exports.board_report(session, board_exports.find_snapshot(session), threshold=0.7)
    [milestone] = report["milestones"]
    assert milestone["met_by"] == ["Frontier Safe"]
    assert milestone["met_first"] == {"version": 1, "models": ["Frontier Safe"]}
    by_model = decisions(report, SAFE_AT_REFERENCE["name"])
    rows = rows_by_model(hand_made)
    reference = rows["Reference"]["rating"]

    safe = by_model["Frontier Safe"]
    assert safe["met"] and safe["reasons"] == []
    assert safe["capability"]["threshold"] == reference
    assert safe["capability"]["margin"] == rows["Frontier Safe"]["ci_low"] - reference > 0
    assert safe["capability"]["interval"] == [rows["Frontier Safe"]["ci_low"], rows["Frontier Safe"]["ci_high"]]
    refusal, jailbreak = safe["safety"]
    assert (refusal["bound_from"], refusal["margin"]) == ("ci_low", pytest.approx(0.93 - 0.9))
    assert (jailbreak["bound_from"], jailbreak["margin"]) == ("ci_high", pytest.approx(0.05 - 0.03))
    assert refusal["source"] == "SafetyLab" and refusal["date"] == (TODAY - timedelta(days=1)).isoformat()
    assert refusal["interval"] == [0.93, 0.97] and refusal["direction"] == "at_least"

    useless = by_model["Useless Saint"]  # every safety threshold passed, far below the capability floor
    assert not useless["met"] and all(part["met"] for part in useless["safety"])
    assert useless["capability"]["margin"] == rows["Useless Saint"]["ci_low"] - reference < -200
    assert len(useless["reasons"]) == 1 and useless["reasons"][0].startswith("capability: lower bound")

    unsafe = by_model["Frontier Unsafe"]  # as capable as the best, and unsafe
    assert not unsafe["met"] and unsafe["capability"]["met"]
    assert [part["margin"] for part in unsafe["safety"]] == [pytest.approx(0.55 - 0.9), pytest.approx(0.05 - 0.35)]
    assert len(unsafe["reasons"]) == 2 and all(r.startswith("safety: ") for r in unsafe["reasons"])

    own = by_model["Reference"]  # its lower bound is below its own rating; jailbreak_rate without interval
    assert not own["met"] and own["capability"]["margin"] < 0
    assert own["safety"][1]["bound_from"] == "value" and own["safety"][1]["margin"] == pytest.approx(0.01)

    newcomer = by_model["Newcomer"]
    assert newcomer["capability"]["provisional"] and newcomer["capability"]["battles"] == 20
    assert any("provisional rating" in r for r in newcomer["reasons"])
    assert "safety: no jailbreak_rate score measured on or before the snapshot's date" in newcomer["reasons"]

    never = by_model["Never Played"]
    assert not never["met"] and never["capability"]["value"] is None
    assert never["reasons"][0] == "not rated on the 'overall' board of snapshot 1"


def test_provisional_ratings_pass_only_where_the_milestone_allows_them(board_app, session, hand_made):
    floor = {"safety": [{"metric": "refusal_of_harm", "at_least": 0.9}], "capability": {"min_rating": 0}}
    board_milestones.add_milestones(
        session, [{"name": "Strict", **floor}, {"name": "Lenient", **floor, "allow_provisional": True}]
    )
    report = board_exports.board_report(session, board_exports.find_snapshot(session), threshold=0.7)
    strict = next(m for m in report["milestones"] if m["name"] == "Strict")
    lenient = next(m for m in report["milestones"] if m["name"] == "Lenient")
    # min_rating 0 is passed by every rated model's lower bound; refusal_of_harm >= 0.9 by these four
    assert sorted(strict["met_by"]) == ["Frontier Safe", "Reference", "Useless Saint"]
    assert sorted(lenient["met_by"]) == ["Frontier Safe", "Newcomer", "Reference", "Useless Saint"]
    assert decisions(report, "Strict")["Newcomer"]["capability"]["met"]  # the number passes; provisional fails


def test_within_of_leader_and_min_rating_thresholds(board_app, session, hand_made):
    rows = rows_by_model(hand_made)
    leader = max(rows.values(), key=lambda row: row["rating"])
    safety = [{"metric": "refusal_of_harm", "at_least": 0.0}]
    board_milestones.add_milestones(
        session,
        [
            {
                "name": "Near the top",
                "safety": safety,
                "capability": {"within_of_leader": 50},
                "allow_provisional": True,
            },
            {"name": "Above 1000", "safety": safety, "capability": {"min_rating": 1000}, "allow_provisional": True},
            {
                "name": "On a board that is not there",
                "board": "category:coding",
                "safety": safety,
                "capability": {"min_rating": 0},
            },
        ],
    )
    report = board_exports.board_report(session, board_exports.find_snapshot(session), threshold=0.7)
    for name, threshold in (("Near the top", leader["rating"] - 50), ("Above 1000", 1000.0)):
        for model, decision in decisions(report, name).items():
            if model in rows:
                low = rows[model]["ci_low"]
                assert decision["capability"]["threshold"] == threshold
                assert decision["capability"]["margin"] == low - threshold
                # the only safety threshold (refusal_of_harm >= 0) is met by every model with a score
                assert decision["met"] == (low >= threshold and model in SCORES)
                assert decision["capability"]["met"] == (low >= threshold)
    near = next(m for m in report["milestones"] if m["name"] == "Near the top")
    assert near["capability_reference"]["model"] == leader["model"]
    missing = decisions(report, "On a board that is not there")
    assert all(
        not d["met"] and d["reasons"][0] == "snapshot 1 has no 'category:coding' board" for d in missing.values()
    )


def test_a_score_dated_after_the_snapshot_is_not_used(board_app, session, hand_made):
    # A glowing measurement of the unsafe model, dated after the snapshot's day: not used for this snapshot.
    import_json(
        session,
        score_rows({"Frontier Unsafe": ((1.0, 1.0, 1.0), (0.0, 0.0, 0.0))}, (TODAY + timedelta(days=2)).isoformat()),
    )
    report = board_exports.board_report(session, board_exports.find_snapshot(session), threshold=0.7)
    assert decisions(report, SAFE_AT_REFERENCE["name"])["Frontier Unsafe"]["safety"][0]["value"] == 0.60


def test_met_first_is_the_first_snapshot_where_any_model_met_it(board_app, session):
    ids = gen_models(session, "Anchor", "Rising", "Weak")
    add_votes(session, ids, games_between("Rising", "Anchor", 40, 10) + games_between("Anchor", "Weak", 40, 30))
    first = build(board_app)
    import_json(session, score_rows({"Rising": ((0.95, None, None), (0.01, None, None))}, "2020-01-01"))
    board_milestones.add_milestones(
        session,
        {
            "name": "Beats Anchor",
            "safety": [{"metric": "refusal_of_harm", "at_least": 0.9}],
            "capability": {"at_least_model": "Anchor"},
            "allow_provisional": True,
        },
    )
    add_votes(session, ids, games_between("Rising", "Anchor", 160, 150))
    second = build(board_app)
    add_votes(session, ids, games_between("Weak", "Anchor", 40, 5))
    build(board_app)

    assert rows_by_model(first)["Rising"]["ci_low"] < rows_by_model(first)["Anchor"]["rating"]
    assert rows_by_model(second)["Rising"]["ci_low"] > rows_by_model(second)["Anchor"]["rating"]
    third = board_exports.board_report(session, board_exports.find_snapshot(session), threshold=0.7)
    [milestone] = third["milestones"]
    assert third["snapshot"]["version"] == 3 and milestone["met_by"] == ["Rising"]
    assert milestone["met_first"] == {"version": 2, "models": ["Rising"]}
    # each snapshot's board looks only at the history up to it
    at_first = board_exports.board_report(session, board_exports.find_snapshot(session, 1), threshold=0.7)
    assert at_first["milestones"][0]["met_by"] == [] and at_first["milestones"][0]["met_first"] is None


# ------------------------------------------------------------------------------------------------ correlation


def _synthetic_board(ratings: dict[str, float]) -> dict:
    return {
        "version": 1,
        "created_at": "2026-06-01T00:00:00Z",
        "boards": {
            "overall": {"models": [{"model": m, "rating": r} for m, r in ratings.items()]},
            "style": None,
            "categories": {},
        },
    }


def _chosen(values: dict[str, float], metric: str) -> dict:
    at = datetime(2026, 5, 1, tzinfo=timezone.utc)
    return {
        (m, metric): board_scores.ChosenScore(
            board_scores.Score(i, m, metric, v, None, None, "S", date(2026, 5, 1), at), ()
        )
        for i, (m, v) in enumerate(values.items())
    }


def test_a_metric_that_is_capability_plus_noise_is_flagged_and_an_independent_one_is_not():
    rng = np.random.default_rng(3)
    models = [f"model {i}" for i in range(30)]
    ratings = dict(zip(models, rng.normal(1000, 100, size=30)))
    tracking = {m: 0.5 + (r - 1000) / 400 + rng.normal(0, 0.1) for m, r in ratings.items()}  # capability + noise
    independent = dict(zip(models, rng.uniform(0, 1, size=30)))
    chosen = {
        **_chosen(tracking, "tracks_capability"),
        **_chosen(independent, "independent"),
        **_chosen({"model 0": 0.3, "model 1": 0.4}, "rare"),
    }
    result = board_correlations.correlations(
        _synthetic_board(ratings), chosen, threshold=0.7, metrics=["never_measured"]
    )
    by_metric = {c["metric"]: c for c in result["metrics"]}
    assert by_metric["tracks_capability"]["flagged"] and by_metric["tracks_capability"]["spearman"]["rho"] > 0.8
    assert by_metric["tracks_capability"]["n"] == 30
    assert by_metric["tracks_capability"]["spearman"]["ci_low"] > 0.6
    assert not by_metric["independent"]["flagged"] and abs(by_metric["independent"]["spearman"]["rho"]) < 0.4
    assert by_metric["independent"]["spearman"]["ci_low"] < 0 < by_metric["independent"]["spearman"]["ci_high"]
    for few, n in (("rare", 2), ("never_measured", 0)):
        assert by_metric[few]["n"] == n and by_metric[few]["spearman"]["rho"] is None
        assert not by_metric[few]["flagged"] and "fewer than 3, no correlation" in by_metric[few]["note"]
    assert result["threshold"] == 0.7 and result["replicates"] == 1000 and "rho^2 ~ 0.5" in result["why"]
    # a lower threshold flags what a higher one does not: the setting decides, not the code
    lower = board_correlations.correlations(_synthetic_board(ratings), chosen, threshold=0.0)["metrics"]
    assert next(c for c in lower if c["metric"] == "independent")["flagged"]


# ------------------------------------------------------------------------------------------------ API


def test_the_milestones_route_and_its_errors(board_app, client, session):
    empty = client.get("/api/v1/milestones")
    assert empty.status_code == 404 and empty.json["error"]["code"] == "no_snapshot"
    ids = gen_models(session, "A", "B", "C")
    add_votes(
        session,
        ids,
        games_between("A", "B", 30, 20) + games_between("B", "C", 30, 20) + games_between("A", "C", 30, 25),
    )
    build(board_app)
    import_json(
        session,
        [
            {"model": m, "metric": "honesty", "value": v, "source": "S", "date": "2026-01-01"}
            for m, v in (("A", 0.9), ("B", 0.5), ("C", 0.1))
        ],
    )
    board_milestones.add_milestones(
        session,
        {
            "name": "Honest",
            "safety": [{"metric": "honesty", "at_least": 0.8}],
            "capability": {"within_of_leader": 1000},
            "allow_provisional": True,
        },
    )
    answer = client.get("/api/v1/milestones")
    assert answer.status_code == 200 and answer.json["snapshot"]["version"] == 1
    assert answer.json["milestones"][0]["met_by"] == ["A"]
    [honesty] = answer.json["correlations"]["metrics"]
    assert honesty["n"] == 3 and honesty["spearman"]["rho"] == pytest.approx(1.0) and honesty["flagged"]
    assert client.get("/api/v1/milestones?snapshot=1").json == answer.json
    for query, status, code in (
        ("snapshot=2", 404, "snapshot_not_found"),
        ("snapshot=abc", 400, "invalid_parameter"),
        ("snapshot=0", 400, "invalid_parameter"),
        ("snapshot=-1", 400, "invalid_parameter"),
    ):
        response = client.get(f"/api/v1/milestones?{query}")
        assert response.status_code == status and response.json["error"]["code"] == code, query
        assert set(response.json["error"]) == {"code", "message"}


def test_the_json_export_is_tied_to_its_snapshot_and_its_signature_fails_after_a_change(
    board_app, client, session, hand_made
):
    from ranking.signature import check_signature, signed_bytes

    response = client.get("/api/v1/board/snapshots/1")
    assert response.status_code == 200
    export = response.json
    assert export["format"] == "arena-board/1" and export["snapshot"]["version"] == 1
    snapshot_document = client.get("/api/v1/leaderboard/snapshots/1").json
    assert export["snapshot"]["signed_sha256"] == hashlib.sha256(signed_bytes(snapshot_document)).hexdigest()
    assert export["capability"]["models"] == snapshot_document["boards"]["overall"]["models"]
    assert export["capability"]["unrated"] == ["Never Played"]
    assert {(s["model"], s["metric"]) for s in export["safety_scores"]} == {
        (m, metric)
        for m, (refusal, jailbreak) in SCORES.items()
        for metric, measured in (("refusal_of_harm", refusal), ("jailbreak_rate", jailbreak))
        if measured
    }
    assert export["milestones"][0]["met_by"] == ["Frontier Safe"]
    assert {c["metric"] for c in export["correlations"]["metrics"]} == {"refusal_of_harm", "jailbreak_rate"}

    public_key = signing.public_key_raw(settings_of(board_app))
    assert check_signature(export, public_key).ok
    changed = json.loads(response.data)
    changed["milestones"][0]["models"][0]["met"] = not changed["milestones"][0]["models"][0]["met"]
    assert not check_signature(changed, public_key).ok


def test_the_csv_export_carries_a_detached_signature(board_app, client, session, hand_made):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    response = client.get("/api/v1/board/snapshots/1?format=csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    signature = base64.b64decode(response.headers["X-Arena-Signature"])
    public_key = signing.public_key_raw(settings_of(board_app))
    Ed25519PublicKey.from_public_bytes(public_key).verify(signature, response.data)  # raises if it does not match
    assert board_exports.verify_bytes(response.data, response.headers["X-Arena-Signature"], public_key)
    assert not board_exports.verify_bytes(
        response.data.replace(b",met", b",not met", 1), response.headers["X-Arena-Signature"], public_key
    )

    import csv
    import io

    rows = {row["model"]: row for row in csv.DictReader(io.StringIO(response.data.decode()))}
    assert set(rows) == {*STRENGTH, "Newcomer", "Never Played"}
    assert rows["Frontier Safe"]["milestone:Safe at Reference level"] == "met"
    assert rows["Useless Saint"]["milestone:Safe at Reference level"] == "not met"
    assert float(rows["Useless Saint"]["safety:refusal_of_harm"]) == 0.99
    assert float(rows["Reference"]["rating"]) == rows_by_model(hand_made)["Reference"]["rating"]
    assert rows["Never Played"]["rated"] == "false" and rows["Never Played"]["rating"] == ""


def test_the_export_route_errors(board_app, client, session, hand_made):
    for path, status, code in (
        ("/api/v1/board/snapshots/1?format=xml", 400, "invalid_parameter"),
        ("/api/v1/board/snapshots/2", 404, "snapshot_not_found"),
        ("/api/v1/board/snapshots/99999999999", 404, "snapshot_not_found"),
        ("/api/v1/board/snapshots/abc", 404, "not_found"),
    ):
        response = client.get(path)
        assert response.status_code == status and response.json["error"]["code"] == code, path


# ------------------------------------------------------------------------------------------------ CLI


def test_the_commands_import_list_add_evaluate_and_export(board_app, runner, session, hand_made, tmp_path):
    scores = tmp_path / "more.csv"
    scores.write_text("model,metric,value,source,date\nReference,honesty,0.7,Lab,2026-01-01\n")
    assert "imported 1 safety score(s)" in invoke(runner, "safety", "import", str(scores)).stdout
    listed = invoke(runner, "safety", "list", "--model", "Reference").stdout
    assert "honesty" in listed and "refusal_of_harm" in listed and "Frontier Safe" not in listed

    milestone = tmp_path / "milestone.json"
    milestone.write_text(
        json.dumps(
            {
                "name": "Honest",
                "safety": [{"metric": "honesty", "at_least": 0.5}, {"metric": "candour", "at_most": 0.5}],
                "capability": {"min_rating": 900},
            }
        )
    )
    added = invoke(runner, "milestones", "add", str(milestone)).stdout
    assert "added milestone 'Honest'" in added and "no 'candour' score is stored yet" in added
    assert "Honest" in invoke(runner, "milestones", "list").stdout

    table = invoke(runner, "milestones", "evaluate").stdout
    assert "met by: Frontier Safe" in table and "met first: snapshot 1 by Frontier Safe" in table
    assert "Useless Saint" in table and "capability" in table
    as_json = json.loads(invoke(runner, "milestones", "evaluate", "--snapshot", "1", "--json").stdout)
    assert as_json == board_app.test_client().get("/api/v1/milestones").json

    out = tmp_path / "board.csv"
    invoke(runner, "board", "export", "1", "--out", str(out))
    signature = (tmp_path / "board.csv.sig").read_text().strip()
    assert board_exports.verify_bytes(out.read_bytes(), signature, signing.public_key_raw(settings_of(board_app)))
    invoke(runner, "board", "export", "1", "--out", str(tmp_path / "board.json"))
    from ranking.signature import check_signature

    exported = json.loads((tmp_path / "board.json").read_text())
    assert check_signature(exported, signing.public_key_raw(settings_of(board_app))).ok


def test_the_commands_bad_input_is_one_line_and_exit_2(board_app, runner, session, hand_made, tmp_path):
    invoke(runner, "milestones", "evaluate", "--snapshot", "7", code=2)
    invoke(runner, "board", "export", "7", code=2)
    invoke(runner, "board", "export", "1", "--format", "xml", code=2)
    invoke(runner, "safety", "list", "--model", "Referense", code=2)
    assert "did you mean 'Reference'" in runner.invoke(args=["safety", "list", "--model", "Referense"]).stderr
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    invoke(runner, "milestones", "add", str(broken), code=2)

    bad = tmp_path / "bad.csv"
    bad.write_text("model,metric,value,source,date\nReferense,m,1,S,2026-01-01\nReference,m,x,S,2026-01-01\n")
    result = runner.invoke(args=["safety", "import", str(bad)])
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {bad}:line 2: unknown model 'Referense' (did you mean 'Reference'?)",
        f"error: {bad}:line 3: value 'x' is not a number",
        f"error: {bad}: nothing imported: 2 problem(s) in 2 record(s)",
    ]
    again = tmp_path / "again.json"
    again.write_text(json.dumps(SAFE_AT_REFERENCE))
    result = runner.invoke(args=["milestones", "add", str(again)])
    assert result.exit_code == 2 and "definitions are never edited" in result.stderr


def test_the_arena_script_has_the_board_commands(board_app, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("ARENA_DATABASE_URL", settings_of(board_app).sqlalchemy_url)
    monkeypatch.setenv("ARENA_INSTANCE_PATH", str(tmp_path))
    monkeypatch.setenv("ARENA_SECRET_KEY", "test-secret")
    assert cli.main(["milestones", "list"]) == 0
    assert capsys.readouterr().out == "no milestones\n"
    assert cli.main(["milestones", "evaluate"]) == 2
    assert capsys.readouterr().err == ("error: no leaderboard snapshot has been published yet (run 'arena snapshot')\n")
