"""Vote integrity: the counting rules that leave rigged votes out of a snapshot, and their settings.

The snapshot builder (arena.leaderboard.builds) calls `apply_rules` on every vote it considers, after its own rules
(void and flagged battles, excluded voters). Each rule here names the votes it leaves out; nothing is deleted:
the snapshot's vote file lists every vote with the rule that excluded it, and the snapshot records each rule's
settings and counts, so that anyone can see what was filtered and redo it. The statistics are in
ranking.integrity (pure arrays); this module is the glue: settings from ARENA_*, the database reads the rules
need (answers to re-check for identity leaks, free-text prompts to compare), and the order of the rules.
`bench/rigging.py` calls the same `apply_rules` on simulated arenas.

Rules, in order (the first that applies is a vote's recorded reason):
1. identity_leak: an answer names its model, maker, a family or an alias registered for the model. Checked
   again at every build on the stored answers, so a family or alias registered later applies to old battles.
2. daily_cap: a voter's counted votes beyond ARENA_VOTER_DAILY_CAP on one UTC day.
3. sequential_test: every vote of a voter whose votes disagree with the crowd on the same pairs more than
   chance allows (FastChat's per-voter sequential test; ranking.integrity.crowd_disagreement_test).
4. improbable_votes: the votes the current fit makes very unlikely, of a voter on whom such votes cluster.
5. concentrated_influence: every vote of a voter whose votes push one model's rating up or down beyond
   chance, in the model's battles or through others (the fit's influence function).
Then heavily repeated free-text prompts are down-weighted (each counts as at most ARENA_REPEATED_PROMPT_VOTES
votes in all): the weights are written in the battle file, where `python -m ranking fit` reads them.
"""

from __future__ import annotations

import hashlib
import warnings
from typing import NamedTuple

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from arena.catalog.identity import Identity, identity_leak
from arena.models import Battle, Message, Model, RecordedAnswer, Vote
from arena.settings import Settings
from ranking import integrity as statistics
from ranking.stats import pair_counts

RULES = (
    (
        "identity_leak",
        "an answer named its model, maker, or a family or alias registered for the model (checked "
        "again at every build, so names registered later apply to earlier battles)",
    ),
    ("daily_cap", "beyond the voter's daily cap of counted votes (UTC days)"),
    (
        "sequential_test",
        "the voter's votes disagree with the crowd's votes on the same model pairs more than "
        "chance allows (FastChat's per-voter sequential test, alpha-spending over checkpoints)",
    ),
    (
        "improbable_votes",
        "an outcome the current fit makes very unlikely, from a voter on whom such votes cluster beyond chance",
    ),
    (
        "concentrated_influence",
        "the voter's votes push one model's rating up or down beyond chance, through "
        "its own battles or others' (influence function of the Bradley-Terry fit)",
    ),
)


# concentrated_influence (ranking.integrity.influence_concentration): the group test's z, the votes a voter
# needs to count in it, and its simulated null (replicates, seed); recorded in every snapshot.
GROUP_Z = 3.0
GROUP_MIN_VOTES = 5
NULL_REPLICATES = 4
NULL_SEED = 0
SUSPECT_Z = 2.0  # voters left out of the next fit it tests everyone against
SUSPECT_TAIL = 1e-3
SUSPECT_PUSHES = 3
INFLUENCE_ROUNDS = 4


class IntegritySettings(NamedTuple):
    """The rules' settings (ARENA_* in arena/settings.py), recorded in each snapshot."""

    enabled: bool  # ARENA_INTEGRITY_RULES: off leaves only the builder's own rules
    recheck_identity: bool  # ARENA_INTEGRITY_RECHECK_LEAKS: re-read stored answers at every build
    daily_cap: int  # ARENA_VOTER_DAILY_CAP: counted votes per voter per UTC day; 0: no cap
    alpha: float  # ARENA_INTEGRITY_ALPHA: each statistical test flags an honest voter with about this chance
    min_votes: int  # ARENA_INTEGRITY_MIN_VOTES: a voter is tested from this many (judged) votes on
    min_crowd: int  # ARENA_INTEGRITY_MIN_CROWD: a pair's history needs this many other votes to judge a vote
    improbable_below: float  # ARENA_INTEGRITY_IMPROBABLE_BELOW: the fit's probability of the voted outcome
    improbable_min_count: int  # at least this many improbable votes before a voter is flagged
    repeated_prompt_votes: int  # ARENA_REPEATED_PROMPT_VOTES: a free-text prompt counts as at most this many
    prior: float  # the fit's Gaussian prior precision (ranking's DEFAULT_PRIOR)

    @classmethod
    def from_settings(cls, settings: Settings) -> "IntegritySettings":
        """The rules' view of the arena's settings (validated there, once)."""
        from ranking.bradley_terry import DEFAULT_PRIOR  # ranking.bradley_terry loads JAX: only when a build runs

        return cls(
            enabled=settings.integrity_rules,
            recheck_identity=settings.integrity_recheck_leaks,
            daily_cap=settings.voter_daily_cap,
            alpha=settings.integrity_alpha,
            min_votes=settings.integrity_min_votes,
            min_crowd=settings.integrity_min_crowd,
            improbable_below=settings.integrity_improbable_below,
            improbable_min_count=settings.integrity_improbable_min_count,
            repeated_prompt_votes=settings.repeated_prompt_votes,
            prior=DEFAULT_PRIOR,
        )


class VoteTable(NamedTuple):
    """Every vote considered, as arrays in vote order (what the rules read)."""

    model_a: np.ndarray  # int codes
    model_b: np.ndarray
    outcome: np.ndarray  # ranking.data outcome codes
    voter: np.ndarray  # int codes, -1: unknown voter
    day: np.ndarray  # int: UTC days since the epoch
    prompt: np.ndarray  # int codes of free-text prompts (equal text, equal code), -1: a prompt of the set
    leaked: np.ndarray  # bool: an answer reveals its model's identity (checked at this build)
    reason: list  # str | None per vote: the builder's own rules, applied before these
    # bool: votes cast in this arena. Imported votes (the LLMFAO demo, `arena battles import`) were collected
    # and curated elsewhere: they are the crowd's history and part of the fit, but their voters are not tested
    # and not capped here (an identity leak leaves them out all the same).
    tested: np.ndarray | None = None


class IntegrityResult(NamedTuple):
    reason: list  # str | None per vote, the builder's reasons kept and these rules' added
    weight: np.ndarray  # per vote; 1 except on down-weighted repeated prompts (and on excluded votes)
    report: dict  # recorded in the snapshot: each rule's settings, votes excluded, voters flagged


def apply_rules(table: VoteTable, n_models: int, n_voters: int, settings: IntegritySettings) -> IntegrityResult:
    """Apply the rules in order to the votes that still count; see the module docstring."""
    reason = list(table.reason)
    counted = np.fromiter((r is None for r in reason), bool, len(reason))
    tested = np.ones(len(reason), bool) if table.tested is None else np.asarray(table.tested, bool)
    # Untested votes are never capped, tested or down-weighted: no voter, no prompt to compare.
    table = table._replace(voter=np.where(tested, table.voter, -1), prompt=np.where(tested, table.prompt, -1))
    report = {
        "enabled": settings.enabled,
        "settings": settings._asdict(),
        "rules": {},
        "votes_tested": int(tested.sum()),
        "applies_to": "the statistical tests and the daily cap judge votes cast in this arena; imported "
        "votes count as the crowd's history and in the fit, and identity leaks apply to all",
    }
    weight = np.ones(len(reason))
    if not settings.enabled:
        return IntegrityResult(reason, weight, report)

    def exclude(name: str, rows: np.ndarray, voters_flagged: int | None = None) -> None:
        for i in np.flatnonzero(rows & counted):
            reason[i] = name
        report["rules"][name] = {"excluded": int((rows & counted).sum())}
        if voters_flagged is not None:
            report["rules"][name]["voters_flagged"] = int(voters_flagged)
        counted[rows] = False

    exclude("identity_leak", np.asarray(table.leaked, bool))
    capped = np.zeros(counted.size, bool)
    rows = np.flatnonzero(counted)
    capped[rows] = statistics.daily_cap_mask(table.voter[rows], table.day[rows], cap=settings.daily_cap)
    exclude("daily_cap", capped)

    def current():
        rows = np.flatnonzero(counted)
        return rows, table.model_a[rows], table.model_b[rows], table.outcome[rows], table.voter[rows]

    rows, a, b, o, v = current()
    sequential = statistics.crowd_disagreement_test(
        a, b, o, v, n_voters, alpha=settings.alpha, min_votes=settings.min_votes, min_crowd=settings.min_crowd
    )
    exclude("sequential_test", _votes_of(table.voter, sequential.flagged), int(sequential.flagged.sum()))
    report["rules"]["sequential_test"]["checkpoints"] = (
        f"{settings.min_votes}, {2 * settings.min_votes}, "
        f"{4 * settings.min_votes}, ... judged votes and the last; "
        "level alpha / 2^(j+1) at checkpoint j"
    )

    rows, a, b, o, v = current()
    if rows.size:
        fit = _fit(a, b, o, n_models, settings.prior)
        improbable = statistics.improbable_vote_test(
            a,
            b,
            o,
            v,
            n_voters,
            fit.strengths,
            below=settings.improbable_below,
            alpha=settings.alpha,
            min_count=settings.improbable_min_count,
        )
        rule = np.zeros(counted.size, bool)
        rule[rows] = improbable.improbable
        exclude("improbable_votes", rule, int(improbable.flagged.sum()))
    else:
        exclude("improbable_votes", np.zeros(counted.size, bool), 0)

    rows, a, b, o, v = current()
    if rows.size:
        fit = _fit(a, b, o, n_models, settings.prior)  # the fit without the improbable votes just left out
        test = dict(
            prior=settings.prior,
            alpha=settings.alpha,
            min_votes=settings.min_votes,
            group_z=GROUP_Z,
            group_min_votes=GROUP_MIN_VOTES,
            suspect_z=SUSPECT_Z,
            null_replicates=NULL_REPLICATES,
            seed=NULL_SEED,
        )
        influence = statistics.influence_concentration(a, b, o, v, n_voters, fit.strengths, **test)
        flagged = influence.flagged
        # Many identities pushing one model drag the fit along, and then each looks like chance against it.
        # For the SUSPECT_PUSHES models pushed one way most unusually at z >= SUSPECT_Z (tail <= SUSPECT_TAIL), test
        # everyone again against a fit without the voters who pushed that model that way at z >= SUSPECT_Z (a
        # few per cent of honest voters, whose absence leaves the fit unbiased); repeated while it finds more,
        # at most INFLUENCE_ROUNDS fits, each without every voter flagged so far.
        for _ in range(INFLUENCE_ROUNDS):
            suspects = np.zeros(n_voters, bool)
            tail = influence.suspect_tail  # along every model and contrast
            nearest = np.argsort(tail, axis=None, kind="stable")[:SUSPECT_PUSHES]
            for sign_row, d in zip(*np.unravel_index(nearest, tail.shape)):
                if tail[sign_row, d] <= SUSPECT_TAIL:
                    suspects |= (1 - 2 * sign_row) * influence.direction_z[:, d] >= SUSPECT_Z
            if not suspects.any():
                break
            clean = ~_votes_of(v, flagged | suspects)
            if clean.all() or not clean.any():
                break
            refit = _fit(a[clean], b[clean], o[clean], n_models, settings.prior)
            influence = statistics.influence_concentration(a, b, o, v, n_voters, refit.strengths, **test)
            if not (influence.flagged & ~flagged).any():
                break
            flagged = flagged | influence.flagged
        exclude("concentrated_influence", _votes_of(table.voter, flagged), int(flagged.sum()))
        report["rules"]["concentrated_influence"].update(
            z_threshold=round(influence.threshold, 6),
            group_z=GROUP_Z,
            group_min_votes=GROUP_MIN_VOTES,
            null_replicates=NULL_REPLICATES,
            null_seed=NULL_SEED,
            suspect_z=SUSPECT_Z,
            suspect_tail=SUSPECT_TAIL,
            suspect_pushes=SUSPECT_PUSHES,
            rounds=INFLUENCE_ROUNDS,
        )
    else:
        exclude("concentrated_influence", np.zeros(counted.size, bool), 0)

    rows = np.flatnonzero(counted)
    weight[rows] = statistics.repeated_prompt_weights(table.prompt[rows], threshold=settings.repeated_prompt_votes)
    lighter = weight < 1
    report["repeated_prompts"] = {
        "votes_down_weighted": int(lighter.sum()),
        "prompts_down_weighted": int(np.unique(table.prompt[lighter]).size),
        "weight_removed": round(float((1 - weight[lighter]).sum()), 6),
    }
    return IntegrityResult(reason, weight, report)


def _votes_of(voter: np.ndarray, flagged: np.ndarray) -> np.ndarray:
    return (voter >= 0) & flagged[np.where(voter >= 0, voter, 0)] if flagged.size else np.zeros(voter.size, bool)


def _fit(a, b, o, n_models: int, prior: float):
    from ranking import bradley_terry as bt  # loads JAX: only when a build fits

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bt.RankingWarning)  # a piece of the graph apart changes nothing here
        return bt.fit_bradley_terry(pair_counts(a, b, o, n_models), ties="half", prior=prior)


# ------------------------------------------------------------------------------------------------ database reads


def prompt_codes(session: Session, battle_ids: list[str], prompt_ids: list) -> np.ndarray:
    """Per vote, a code shared by votes on the same free-text prompt (case and spacing ignored); -1 for prompts
    of the arena's own set, which are drawn by the arena and repeated by design, and for battles without a
    prompt text (imported)."""
    free = [battle for battle, prompt in zip(battle_ids, prompt_ids) if prompt is None]
    texts: dict[str, str] = {}
    for start in range(0, len(free), 5000):
        chunk = free[start : start + 5000]
        texts.update(session.execute(select(Battle.id, Battle.prompt_text).where(Battle.id.in_(chunk))).all())
    codes: dict[bytes, int] = {}
    out = np.full(len(battle_ids), -1, np.int64)
    for i, battle in enumerate(battle_ids):
        text = " ".join((texts.get(battle) or "").lower().split())
        if text:  # an imported battle has no prompt text: nothing to compare
            key = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
            out[i] = codes.setdefault(key, len(codes))
    return out


def leaked_votes(
    session: Session,
    cut: int,
    battle_ids: list[str],
    model_a_ids: list[int],
    model_b_ids: list[int],
    prompt_ids: list,
    reasons: list,
) -> np.ndarray:
    """Per vote, whether an answer shown in its battle names its model by any registered identity (name,
    organisation, aliases, families), checked now on the stored answers. Votes already left out are not read.
    Battles with stored messages are checked on them; imported battles (no messages) on the recorded answers
    that were shown, each (model, prompt) once."""
    identities = {
        row.id: Identity(row.name, row.organization, tuple(row.aliases or ()), tuple(row.families or ()))
        for row in session.execute(select(Model.id, Model.name, Model.organization, Model.aliases, Model.families))
    }
    index = {battle: i for i, (battle, why) in enumerate(zip(battle_ids, reasons)) if why is None}
    leaked = np.zeros(len(battle_ids), bool)
    with_messages: set[str] = set()
    statement = (
        select(Message.battle_id, Message.side, Message.content)
        .join(Vote, Vote.battle_id == Message.battle_id)
        .where(Vote.id <= cut, Message.role == "assistant")
        .execution_options(yield_per=2000)
    )
    for battle, side, content in session.execute(statement):
        with_messages.add(battle)
        i = index.get(battle)
        if i is None or leaked[i]:
            continue
        model = model_a_ids[i] if side == "a" else model_b_ids[i]
        if identity_leak(content or "", identities[model]):
            leaked[i] = True
    shown = {}
    for battle, i in index.items():
        if battle not in with_messages and prompt_ids[i] is not None:
            for model in (model_a_ids[i], model_b_ids[i]):
                shown.setdefault((model, prompt_ids[i]), []).append(i)
    if shown:
        models = sorted({model for model, _ in shown})
        for model, prompt, text in session.execute(
            select(RecordedAnswer.model_id, RecordedAnswer.prompt_id, RecordedAnswer.text).where(
                RecordedAnswer.model_id.in_(models)
            )
        ):
            votes = shown.get((model, prompt))
            if votes and identity_leak(text or "", identities[model]):
                leaked[votes] = True
    return leaked


def day_numbers(epoch_seconds: np.ndarray) -> np.ndarray:
    """UTC day of each time (days since 1970-01-01)."""
    return np.floor(np.asarray(epoch_seconds, np.float64) / 86400.0).astype(np.int64)


def read_evidence(
    session: Session,
    cut: int,
    battle_ids: list[str],
    model_a_ids: list[int],
    model_b_ids: list[int],
    prompt_ids: list,
    reasons: list,
    settings: IntegritySettings,
) -> tuple[np.ndarray, np.ndarray]:
    """What the rules need from the database besides the votes: (leaked per vote, free-text prompt codes)."""
    n = len(battle_ids)
    if not settings.enabled:
        return np.zeros(n, bool), np.full(n, -1, np.int64)
    leaked = (
        leaked_votes(session, cut, battle_ids, model_a_ids, model_b_ids, prompt_ids, reasons)
        if settings.recheck_identity
        else np.zeros(n, bool)
    )
    prompts = (
        prompt_codes(session, battle_ids, prompt_ids)
        if settings.repeated_prompt_votes > 0
        else np.full(n, -1, np.int64)
    )
    return leaked, prompts
