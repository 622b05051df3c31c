"""Which models can answer a battle's prompt, read live for each battle (a paused model, or a recorded one
without an answer to the prompt, is never drawn, whatever a cache says)."""

from __future__ import annotations

import secrets
from typing import NamedTuple

from sqlalchemy import and_, bindparam, func, or_, select
from sqlalchemy.orm import Session

from arena.errors import Unavailable
from arena.models import Model, RecordedAnswer
from ranking.sampling import SamplingRule, draw_pair

_models, _answers = Model.__table__, RecordedAnswer.__table__
_system_random = secrets.SystemRandom()


class Candidate(NamedTuple):
    """A model that can answer a battle's prompt: all that pairing needs, read without loading the model."""

    id: int
    sampling_weight: float


# What str.strip() removes (all of it lies below U+3001). An answer made only of these is an empty recording:
# 25 of LLMFAO's answers are, and drawn into a battle one could only void it.
_WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())


_ELIGIBLE = (
    select(_models.c.id, _models.c.sampling_weight)
    .where(_models.c.status == "active", _models.c.sampling_weight > 0)
    .order_by(_models.c.id)
)


_ELIGIBLE_ENDPOINTS = _ELIGIBLE.where(_models.c.kind == "endpoint")


_ELIGIBLE_FOR_PROMPT = _ELIGIBLE.where(
    or_(
        _models.c.kind == "endpoint",
        and_(
            _models.c.kind == "recorded",
            select(_answers.c.id)
            .where(
                _answers.c.model_id == _models.c.id,
                _answers.c.prompt_id == bindparam("prompt_id"),
                func.length(func.trim(_answers.c.text, _WHITESPACE)) > 0,
            )
            .exists(),
        ),
    )
)


def eligible_models(session: Session, prompt_id: int | None) -> list[Candidate]:
    """Active models that can answer, by id: endpoint models always, recorded ones only for prompts they
    answered with some text. One query; the answers' text is tested in the database, never fetched."""
    if prompt_id is None:
        return [Candidate(*row) for row in session.execute(_ELIGIBLE_ENDPOINTS)]
    return [Candidate(*row) for row in session.execute(_ELIGIBLE_FOR_PROMPT, {"prompt_id": prompt_id})]


def pick_pair(models: list[Candidate], rng=_system_random) -> tuple[Candidate, Candidate]:
    """Two different models by the weighted rule, the pair {i, j} with probability proportional to w_i · w_j.

    The same draw as the service's (`ranking.sampling.draw_pair`, linear in the number of models, sides
    shuffled) for callers that hold candidates but no configured policy; battles go through
    `arena.leaderboard.sampling.pick_pair`, which applies the operator's policy and leaves failing models out.
    """

    pair = draw_pair(SamplingRule(policy="weighted"), [m.sampling_weight for m in models], rng)
    if pair is None:
        raise Unavailable("no_models", "Not enough models can answer this prompt right now.")
    return models[pair[0]], models[pair[1]]
