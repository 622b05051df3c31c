"""Published snapshots, checked by anyone: their numbers, recomputed from the published battle file.

A snapshot is a JSON document that the arena signs (`ranking.signature`); its battle file is published beside
it. Checking one needs no trust in the arena: the signature shows who published the document (against the
arena's public key, which the checker fetches on their own), the SHA-256 shows that the battle file is the one
the document names, and re-running the ranking on the file with each board's options must give back every
published number.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

from ranking import bradley_terry as bt
from ranking.data import Battles
from ranking.leaderboard import RankingOptions, board_dict, rank_battles

SNAPSHOT_FORMAT = "arena-snapshot/1"
# The numbers compared between a published board and its recomputation, per model.
COMPARED_FIELDS = ("rating", "ci_low", "ci_high", "rank_ub", "tier", "battles", "wins", "losses", "ties")


class BoardCheck(NamedTuple):
    board: str  # "overall", "style" or "category:<name>"
    models: int
    exact: bool
    problems: list[str]  # empty when every published number was reproduced


def board_specs(document: dict) -> list[tuple[str, dict]]:
    """(name, published board) for every board of a snapshot document, overall first."""
    boards = document.get("boards") or {}
    specs = [("overall", boards["overall"])] if boards.get("overall") else []
    if boards.get("style"):
        specs.append(("style", boards["style"]))
    for name, board in sorted((boards.get("categories") or {}).items()):
        specs.append((f"category:{name}", board))
    return specs


def options_of(board: dict) -> RankingOptions:
    """The RankingOptions a published board names (unknown option names are refused, not ignored)."""
    options = dict(board.get("options") or {})
    unknown = sorted(set(options) - set(RankingOptions._fields))
    if unknown:
        raise ValueError(f"the snapshot names ranking options this code does not know: {', '.join(unknown)}")
    return RankingOptions(**options)


def recompute_board(battles: Battles, published: dict, name: str) -> BoardCheck:
    """Rank the battles with the board's own options and compare every published number with the result."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bt.RankingWarning)
        ours = board_dict(rank_battles(battles, options_of(published)))
    problems = []
    if ours["battles_used"] != published.get("battles_used"):
        problems.append(
            f"{published.get('battles_used')} battles published as used, {ours['battles_used']} selected from the file"
        )
    mine = {row["model"]: row for row in ours["models"]}
    theirs = {row["model"]: row for row in published.get("models", [])}
    for model in sorted(set(theirs) - set(mine)):
        problems.append(f"{model}: published, but has no battle in the file")
    for model in sorted(set(mine) - set(theirs)):
        problems.append(f"{model}: in the file, but not published")
    for model in sorted(set(mine) & set(theirs)):
        for field in COMPARED_FIELDS:
            published_value, value = theirs[model].get(field), mine[model][field]
            if not _same(published_value, value):
                problems.append(f"{model}: {field} published {published_value}, recomputed {value}")
    return BoardCheck(name, len(theirs), not problems, problems)


def _same(published, value) -> bool:
    if published is None or value is None:
        return published is None and value is None
    if isinstance(value, float) or isinstance(published, float):
        return float(published) == float(value) or (math.isnan(float(published)) and math.isnan(float(value)))
    return published == value
