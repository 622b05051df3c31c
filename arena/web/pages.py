"""The public pages: the arena (/), the leaderboard, the milestone board, model pages and About.

Server-rendered templates (arena/templates) with plain JavaScript from static/. Everything shown about ratings
is read from stored snapshots (arena.leaderboard.reading); nothing here fits or ranks. The arena page names no model:
it is given the prompt set only, and speaks to the voters' API (arena.api) of sides "a" and "b".
"""

from __future__ import annotations

import json
import os
import threading

from flask import Blueprint, abort, current_app, render_template, request
from sqlalchemy import select

from arena import db
from arena.board import exports
from arena.catalog.demo import LLMFAO_ATTRIBUTION
from arena.errors import NotFound
from arena.leaderboard import reading
from arena.leaderboard.builds import COUNTING_RULES
from arena.models import Model, Prompt, Snapshot
from arena.settings import current
from arena.web import charts

bp = Blueprint("pages", __name__)

HEATMAP_MODELS = 15  # the heatmap's models (the best-rated): a 70 x 70 grid is unreadable on any screen


@bp.app_template_filter("rating")
def _rating(value, unbounded: str = "∞") -> str:
    """A rating to one decimal; an interval end the data do not bound is stored as null, shown as ±∞."""
    return unbounded if value is None else f"{value:.1f}"


@bp.app_template_filter("signed")
def _signed(value) -> str:
    return "–" if value is None else f"{value:+.3g}" if abs(value) < 10 else f"{value:+.1f}"


@bp.get("/")
def arena_page():
    prompts = (
        db.session()
        .execute(select(Prompt.id, Prompt.text, Prompt.category, Prompt.source).order_by(Prompt.category, Prompt.id))
        .all()
    )
    attribution = LLMFAO_ATTRIBUTION if any(p.source == "llmfao" for p in prompts) else None
    return render_template(
        "arena.html",
        prompts=prompts,
        attribution=attribution,
        max_prompt_chars=current().max_prompt_chars,
        challenge_script=_has_static("js/challenge.js"),
    )


def _has_static(path: str) -> bool:
    """Whether static/PATH exists: the vote challenge's script comes with the integrity work, and a page that
    asked for a missing script would log an error in every visitor's console."""
    return os.path.isfile(os.path.join(current_app.static_folder, path))


def _choose_board(document: dict) -> tuple[str, dict]:
    """The board asked for with ?category=NAME or ?style=1 (the overall one by default); 404 if it has none."""
    category, style = request.args.get("category") or None, request.args.get("style") in ("1", "true", "on")
    boards = document["boards"]
    if category:
        if category not in boards["categories"]:
            abort(404)
        return f"category:{category}", boards["categories"][category]
    if style:
        if boards["style"] is None:
            abort(404)
        return "style", boards["style"]
    return "overall", boards["overall"]


@bp.get("/leaderboard")
def leaderboard_page():
    document = reading.newest_document(db.session())
    if document is None:
        return render_template("leaderboard.html", document=None)
    name, chosen = _choose_board(document)
    rows = chosen["models"]
    return render_template(
        "leaderboard.html",
        document=document,
        board_name=name,
        board=chosen,
        rows=rows,
        categories=sorted(document["boards"]["categories"]),
        style_available=document["boards"]["style"] is not None,
        category=request.args.get("category") or None,
        style=name == "style",
        unrated=[m for m in document["models"] if not m["rated"]],
        rating_chart=charts.rating_chart(rows),
        heatmap=charts.win_rate_heatmap(rows, limit=HEATMAP_MODELS),
        heatmap_models=min(HEATMAP_MODELS, len(rows)),
        attribution=document.get("attribution"),
    )


def _scatter_plots(report: dict) -> list[dict]:
    """One capability-against-safety plot per safety metric: every model with a rating on the overall board
    and a score, the milestones' thresholds on that metric (and their capability floors on the overall board)."""
    capability_by_model = {}
    for milestone in report["milestones"]:
        for decision in milestone["models"]:
            capability = decision["capability"]
            if milestone["board"] == "overall" and capability["value"] is not None:
                capability_by_model[decision["model"]] = capability
    met = {(m["name"], model) for m in report["milestones"] for model in m["met_by"]}
    plots = []
    for correlation in report["correlations"]["metrics"]:
        metric = correlation["metric"]
        safety_lines, capability_lines, milestones_here = [], [], []
        for milestone in report["milestones"]:
            for rule in milestone["definition"]["safety"]:
                if rule["metric"] == metric:
                    direction = "at_least" if "at_least" in rule else "at_most"
                    sign = "≥" if direction == "at_least" else "≤"
                    safety_lines.append(
                        charts.Threshold(
                            rule[direction],
                            f"{milestone['name']}: {sign} {rule[direction]:g}",
                            "above" if direction == "at_least" else "below",
                        )
                    )
                    milestones_here.append(milestone["name"])
                    threshold = milestone["capability_reference"]["threshold"]
                    if milestone["board"] == "overall" and threshold is not None:
                        capability_lines.append(
                            charts.Threshold(threshold, f"{milestone['name']}: capability", "right")
                        )
        points = []
        for score in report["safety_scores"]:
            capability = capability_by_model.get(score["model"])
            if score["metric"] != metric or capability is None:
                continue
            low, high = capability["interval"]
            points.append(
                {
                    "model": score["model"],
                    "rating": capability["value"],
                    "ci_low": low,
                    "ci_high": high,
                    "value": score["value"],
                    "value_low": score["ci_low"],
                    "value_high": score["ci_high"],
                    "met": any((name, score["model"]) in met for name in milestones_here),
                }
            )
        plots.append(
            {
                "metric": metric,
                "correlation": correlation,
                "points": points,
                "svg": charts.capability_safety_scatter(
                    points,
                    metric=metric,
                    safety_lines=safety_lines,
                    capability_lines=capability_lines,
                    flagged=correlation["flagged"],
                    note=correlation.get("note", ""),
                ),
            }
        )
    return plots


@bp.get("/board")
def board_page():
    session = db.session()
    try:
        snapshot = exports.find_snapshot(session)
    except NotFound:
        return render_template("board.html", report=None)
    report = exports.board_report(session, snapshot, threshold=float(current().board_correlation_flag))
    return render_template(
        "board.html",
        report=report,
        plots=_scatter_plots(report),
        attribution=reading.published_document(snapshot).get("attribution"),
    )


# ------------------------------------------------------------------------------------------------ model pages

_history_cache: dict[tuple[int, str], dict[str, dict]] = {}
_history_lock = threading.Lock()


def _overall_rows(session, version: int, signature: str) -> dict[str, dict]:
    """A snapshot's overall board by model, kept per process: a snapshot never changes, so its document (up to a
    megabyte) is parsed once, and only the few numbers a history needs are kept."""
    key = (version, signature)
    with _history_lock:
        rows = _history_cache.get(key)
    if rows is None:
        document = json.loads(session.scalar(select(Snapshot.document).where(Snapshot.version == version)))
        rows = {
            row["model"]: {
                "version": version,
                "created_at": document["created_at"],
                "rating": row["rating"],
                "ci_low": row["ci_low"],
                "ci_high": row["ci_high"],
                "rank_ub": row["rank_ub"],
                "battles": row["battles"],
                "provisional": row["provisional"],
            }
            for row in document["boards"]["overall"]["models"]
        }
        with _history_lock:
            _history_cache[key] = rows
    return rows


@bp.get("/models/<path:name>")
def model_page(name: str):
    session = db.session()
    model = session.scalars(select(Model).where(Model.name == name)).first()
    if model is None:
        return render_template(
            "error.html", title="No such model", message=f"The arena has no model called “{name}”."
        ), 404
    history = []
    for version, signature in session.execute(select(Snapshot.version, Snapshot.signature).order_by(Snapshot.version)):
        row = _overall_rows(session, version, signature).get(model.name)
        if row is not None:
            history.append(row)
    document = reading.newest_document(session)
    current = []
    if document is not None:
        for board_name, board_data in reading.named_boards(document["boards"]):
            row = next((r for r in board_data["models"] if r["model"] == model.name), None)
            if row is not None:
                current.append((board_name, row))
    return render_template(
        "model.html",
        model=model,
        history=history,
        current=current,
        document=document,
        chart=charts.history_chart(history) if history else None,
        attribution=LLMFAO_ATTRIBUTION if model.source == "llmfao" else None,
    )


@bp.get("/about")
def about_page():
    document = reading.newest_document(db.session())
    return render_template("about.html", document=document, attribution=LLMFAO_ATTRIBUTION, rules=COUNTING_RULES)
