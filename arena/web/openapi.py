"""The /api/v1 contract: request and response bodies as pydantic v2 models, and the OpenAPI 3.1 document.

The lab API parses its requests and builds its responses with these models, so what it does and what the
document says cannot drift apart. Each view carries its own entry (`documented`, under its route decorator);
`document` takes every method and path from Flask's URL map, so no route is written twice.
tests/arena/test_openapi.py checks that every route under /api/v1 is in the document and runs schemathesis
against it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Callable, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic.json_schema import models_json_schema

from arena.errors import BadRequest
from arena.models import MODEL_STATUSES, WINNERS

API_VERSION = "1.0.0"
MAX_ID = 2**31 - 1  # ids are 32-bit integers in PostgreSQL


def _storable(text: str) -> str:
    """Text that every database can store: no NUL character, no lone UTF-16 surrogate."""
    if "\x00" in text:
        raise ValueError("must not contain a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return text


NO_NUL = r"^[^\x00]*$"
NOT_BLANK = r"^[^\x00]*[^\x00\s][^\x00]*$"  # no NUL, and some character besides whitespace


def _text(max_length: int, min_length: int = 0, strip: bool = False):
    """Storable text; stripped of surrounding whitespace when `strip`, so that one needing a character (min_length)
    must have one that is not whitespace, as its schema's pattern says."""
    pattern = NOT_BLANK if strip and min_length else NO_NUL
    return Annotated[
        str,
        StringConstraints(min_length=min_length, max_length=max_length, strip_whitespace=strip, pattern=pattern),
        AfterValidator(_storable),
    ]


Name = _text(200, 1, strip=True)


def _whole_number(value):
    """JSON Schema's integer includes 198.0 (a number with no fraction): take it as 198. Anything else as it is,
    for the strict int check (a bool or a numeric string is still refused)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _whole(ge: int, le: int):
    """An integer in [ge, le] (the bounds before the validator, so that the schema shows them)."""
    return Annotated[int, Field(ge=ge, le=le), BeforeValidator(_whole_number)]


Id = _whole(1, MAX_ID)


def parse(schema: type[BaseModel], body) -> BaseModel:
    """A decoded JSON request body checked by its model (the one the document shows): the model, or 400
    invalid_json (not an object) / invalid_request with each failing field in details."""
    if not isinstance(body, dict):
        raise BadRequest("invalid_json", "The request body must be a JSON object (Content-Type: application/json).")
    try:
        return schema.model_validate(body)
    except ValidationError as e:
        fields = {
            ".".join(map(str, error["loc"])) or "body": error["msg"].removeprefix("Value error, ")
            for error in e.errors()
        }
        raise BadRequest("invalid_request", "The request body is not valid: see details.", details=fields) from None


def _no_null_default(schema: dict) -> None:
    schema.pop("default", None)


def Omittable(**kwargs):  # noqa: N802 - used like Field
    """A field a request may leave out but not send as null: the document shows no `"default": null`."""
    return Field(None, json_schema_extra=_no_null_default, **kwargs)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------------------------------------ errors


class ErrorDetail(_Out):
    code: str = Field(description="A stable machine-readable name, e.g. invalid_request, not_found.")
    message: str = Field(description="What went wrong, for a person.")
    details: dict[str, Any] | None = Field(None, description="Per-field or per-line problems, when there are.")


class ErrorBody(_Out):
    """Every error of the API has this shape."""

    error: ErrorDetail


# ------------------------------------------------------------------------------------------------ lab API


class SamplingParams(_In):
    """Sent with every request to the endpoint, as they are."""

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: _whole(1, 65536) | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    seed: _whole(0, 2**63 - 1) | None = None


class EndpointIn(_In):
    base_url: _text(2000, 1, strip=True) = Field(
        description="OpenAI-compatible base URL (http or https, no user:password@), e.g. https://host/v1."
    )
    model: _text(200, 1, strip=True) = Field(description="The model name to send to the endpoint.")
    api_key: _text(4096) | None = Field(
        None, description="The endpoint's key. Write-only: stored encrypted, never returned."
    )


_ALIASES = (
    "Other names of this model that its answers could reveal it by (e.g. a short name, a code name); "
    "case, punctuation and spacing are ignored, whole words only. An answer naming one leaves its vote "
    "out of the ranking, in past battles too."
)
_FAMILIES = 'The model families it belongs to (e.g. "Llama", "GPT"), matched like aliases.'


class ModelCreate(_In):
    """An endpoint model: `endpoint`; a recorded one: `"kind": "recorded"`, then upload its answers."""

    name: Name = Field(description="The public name, unique in the arena.")
    organization: Name
    kind: Literal["endpoint", "recorded"] = "endpoint"
    endpoint: EndpointIn | None = None
    system_prompt: _text(20000) | None = None
    sampling_params: SamplingParams | None = None
    aliases: list[Name] = Omittable(max_length=50, description=_ALIASES)
    families: list[Name] = Omittable(max_length=50, description=_FAMILIES)


class EndpointPatch(_In):
    """Only the fields sent change. A new base_url, model or api_key is checked with one real request first."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})  # at least one field: labs.update_model

    base_url: _text(2000, 1, strip=True) = Omittable(
        description="A base URL on another scheme, host or port needs api_key in the same request: the stored "
        "key is never sent to another host."
    )
    model: _text(200, 1, strip=True) = Omittable(description="The model name to send to the endpoint.")
    api_key: _text(4096) | None = Field(
        None,
        description="A new key (write-only, stored encrypted), or null to remove the stored one; leave out to keep it.",
    )


class ModelPatch(_In):
    """Change a model: pause (`paused`) or resume (`active`) it, retire it for good (`retired`), or change
    its endpoint, system prompt or sampling parameters (null removes these two). At least one field; all of it
    is applied or none. Once a vote has counted, the endpoint's base_url and model, the system prompt and the
    sampling parameters are fixed (409 model_rated: another configuration is another model, to register anew);
    the endpoint's api_key can always change. Name and organization never change."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})  # at least one field: labs.update_model

    status: Literal["active", "paused", "retired"] = Omittable()
    endpoint: EndpointPatch = Omittable(description="Endpoint models only.")
    system_prompt: _text(20000) | None = None
    sampling_params: SamplingParams | None = Field(None, description="Replaces the stored ones; endpoint models only.")
    aliases: list[Name] = Omittable(
        max_length=50, description="Added to the stored aliases (never removed: an operator can). " + _ALIASES
    )
    families: list[Name] = Omittable(max_length=50, description="Added to the stored families (never removed).")


class EndpointOut(_Out):
    base_url: str
    model: str
    has_api_key: bool = Field(description="Whether a key is stored; the key itself is never returned.")


class LastError(_Out):
    at: datetime
    message: str


class Health(_Out):
    """The current endpoint's recent calls: its check (at registration or at its last change) and its answers
    in battles since."""

    since: datetime | None = Field(
        description="When the current endpoint was set (registered or last changed); "
        "null for a model the operator added without a check."
    )
    last_success_at: datetime | None
    last_error: LastError | None
    error_rate: float | None = Field(description="Failed share of the last `calls` calls; null before any call.")
    calls: int = Field(description="How many calls the error rate is over (at most 100, the newest).")


class ExcludedVotes(_Out):
    identity_leak: int = Field(description="Votes on battles where an answer named its model or maker.")
    battle_void: int = Field(description="Votes on battles that are not in the voted state (void).")
    voter_excluded: int = Field(description="Votes of voters an operator excluded, with a recorded reason.")


class Votes(_Out):
    counted: int = Field(
        description="Votes on voted, unflagged battles: these rank the model, but for those a "
        "snapshot's integrity rules leave out (daily cap, statistical tests, identity "
        "leaks found later: the snapshot's vote file gives each one's reason)."
    )
    excluded: int
    excluded_by_reason: ExcludedVotes


class Leaderboard(_Out):
    rating: float | None = Field(
        description="Elo-scale rating in the newest leaderboard snapshot; null until a snapshot ranks this model."
    )
    interval: list[float | None] | None = Field(description="95 % interval [low, high] of the rating.")
    rank: int | None = Field(description="Rank upper bound: 1 + the models whose interval lies wholly above.")
    tier: int | None = Field(description="Models in a tier cannot be told apart from its first model at 95 %.")
    provisional: bool | None = Field(description="Fewer counted votes than the arena's provisional threshold.")
    snapshot: str | None = Field(description="The snapshot's version.")
    counted_votes: int | None = Field(
        description="Votes of this model's battles the snapshot counted, after every "
        "counting rule, integrity rules included."
    )
    excluded_votes: dict[str, int] | None = Field(
        description="Votes of this model's battles the snapshot left out, "
        "by rule (the snapshot's vote file has each one)."
    )
    note: str


class ModelOut(_Out):
    id: int
    name: str
    organization: str
    kind: Literal["endpoint", "recorded"]
    status: Literal[MODEL_STATUSES]  # type: ignore[valid-type]
    created_at: datetime
    endpoint: EndpointOut | None
    system_prompt: str | None
    sampling_params: dict[str, Any]
    aliases: list[str] = Field(description="Names its answers must not reveal it by, besides name and organization.")
    families: list[str]
    recorded_answers: int = Field(description="Recorded answers stored (recorded models).")
    health: Health | None = Field(description="Endpoint models only.")
    battles: int
    votes: Votes
    leaderboard: Leaderboard
    deletable: bool = Field(description="False once a vote has counted: the model can then only be retired.")


class ModelList(_Out):
    models: list[ModelOut]


class LineProblem(_Out):
    line: int
    error: str


class RejectedLines(_Out):
    lines: list[LineProblem] = Field(description="The failing lines, first 1000.")
    failed: int
    total: int


class AnswersRejectedDetail(_Out):
    code: Literal["invalid_answers"]
    message: str
    details: RejectedLines


class AnswersRejected(_Out):
    """The answers upload's 422: nothing was stored; every failing line with its reason."""

    error: AnswersRejectedDetail


class AnswersImported(_Out):
    model_id: int
    imported: int


class KeyRotated(_Out):
    api_key: str = Field(description="The new key, shown this once. Every older key stopped working.")
    prefix: str
    revoked: int = Field(description="How many keys were revoked.")


# ------------------------------------------------------------------------------------------------ voters' API


class PromptOut(_Out):
    id: int
    text: str
    category: str


class PromptList(_Out):
    prompts: list[PromptOut]
    attribution: str | None = None


class FailingCalls(_Out):
    failed: int
    calls: int


class SampledModel(_Out):
    model: str
    organization: str
    weight: float = Field(description="The operator's published weight (0: never drawn)")
    kind: str
    votes: int = Field(description="Counted votes: the newest snapshot's and those since")
    provisional: bool
    share: float = Field(
        description="Expected share of battle sides under the rule now, for a prompt every "
        "active model answers (shares sum to 1)"
    )
    failing: FailingCalls | None = Field(
        description="Set when the model's recent calls failed too often: it is not drawn until they age out"
    )


class SamplingOut(_Out):
    policy: Literal["uniform", "weighted", "new_model_boost", "active"]
    rule: str
    settings: dict[str, Any]
    snapshot: int | None = Field(description="The snapshot whose fit the rule reads (active, new_model_boost)")
    refreshed_at: str
    models: list[SampledModel]


class _VoterIn(BaseModel):
    """The voters' bodies: typed strictly, other fields ignored (as browsers' extra fields always were)."""

    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)


# Some text besides whitespace. Its upper bound is a setting (ARENA_MAX_PROMPT_CHARS): over it, 413 prompt_too_long.
PromptText = Annotated[str, StringConstraints(min_length=1, pattern=NOT_BLANK), AfterValidator(_storable)]


class BattleCreate(_VoterIn):
    """Exactly one of `prompt` (text; endpoint models answer) and `prompt_id` (a prompt of the set)."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["prompt"]}, {"required": ["prompt_id"]}]})
    prompt: PromptText = Omittable()
    prompt_id: Id = Omittable()

    @model_validator(mode="after")
    def _exactly_one(self):
        if (self.prompt is None) == (self.prompt_id is None):
            raise ValueError('send exactly one of "prompt" (text) or "prompt_id"')
        return self


class Challenge(_Out):
    """The vote's proof of work: send as the vote's "proof" a string p with SHA-256(salt + ":" + p) beginning
    with `difficulty` zero bits. Absent when the arena runs without the challenge."""

    algorithm: Literal["sha256"]
    salt: str
    difficulty: int


class BattleCreated(_Out):
    id: str
    prompt: str
    state: str
    stream: str
    attribution: str | None = None
    challenge: Challenge | None = None


class Turn(_Out):
    prompt: str | None
    a: str | None
    b: str | None


class Revealed(_Out):
    model: str
    organization: str


class Reveal(_Out):
    a: Revealed
    b: Revealed


class BattleOut(_Out):
    id: str
    state: str
    turns: list[Turn]
    winner: Literal[WINNERS] | None = None  # type: ignore[valid-type]
    models: Reveal | None = None
    follow_up: bool = Field(description="Whether the battle takes follow-up turns (both sides answer live).")
    challenge: Challenge | None = None


class TurnCreate(_VoterIn):
    prompt: PromptText


class TurnCreated(_Out):
    id: str
    turn: int
    state: str
    stream: str


class VoteIn(_VoterIn):
    winner: Literal[WINNERS]  # type: ignore[valid-type]
    proof: str = Omittable(max_length=64, description="Solves the battle's challenge (403 otherwise).")


class VoteOut(_Out):
    battle_id: str
    winner: str
    models: Reveal


# ------------------------------------------------------------------------------------------------ leaderboard


class _Open(BaseModel):
    """A published document: the fields named here are promised, others may be added."""

    model_config = ConfigDict(extra="allow")


class BoardRow(_Open):
    model: str
    rating: float
    ci_low: float | None  # null: the data give no lower limit
    ci_high: float | None
    rank_ub: int
    tier: int
    battles: int
    wins: int
    losses: int
    ties: int
    organization: str
    lab: str | None
    status: str
    retired: bool
    provisional: bool


class LeaderboardOut(_Open):
    version: int
    created_at: str
    board: str
    models: list[BoardRow]
    categories: list[str]
    style_available: bool
    battle_file: dict
    votes: dict


class SnapshotSummary(_Out):
    version: int
    created_at: str
    code_version: str
    votes_counted: int
    votes_excluded: int
    battle_file_sha256: str
    key_id: str
    url: str


class SnapshotList(_Out):
    snapshots: list[SnapshotSummary]


class SnapshotDocument(_Open):
    format: str
    version: int
    boards: dict
    signature: dict


class PublicKeyOut(_Out):
    algorithm: str
    public_key: str
    key_id: str
    pem: str


# ------------------------------------------------------------------------------------------------ milestone board


class MilestoneDecision(_Open):
    model: str
    met: bool
    capability: dict = Field(
        description="rule, reference, threshold, value, interval, bound (the rating's "
        "lower 95 % limit), margin, provisional, battles, met."
    )
    safety: list[dict] = Field(
        description="Per threshold: metric, direction, threshold, value, interval, bound, margin, source, date, met."
    )
    reasons: list[str] = Field(description="Why the milestone is not met; empty when it is.")


class MilestoneResult(_Open):
    name: str
    board: str
    rule: str
    definition: dict
    met_by: list[str]
    met_first: dict | None = Field(
        description="The first snapshot (up to this one) where a model met it, with the model(s); null if none did."
    )
    models: list[MilestoneDecision]


class MilestonesOut(_Open):
    snapshot: dict
    scores_dated_on_or_before: str
    milestones: list[MilestoneResult]
    correlations: dict = Field(
        description="Each safety metric's Pearson and Spearman correlation with the "
        "overall rating, bootstrap intervals, and the safetywashing flag."
    )
    safety_scores: list[dict]


class BoardExport(_Open):
    format: str
    snapshot: dict = Field(description="The snapshot's version and the SHA-256 of its signed bytes.")
    capability: dict
    safety_scores: list[dict]
    milestones: list[MilestoneResult]
    correlations: dict
    signature: dict


# ------------------------------------------------------------------------------------------------ the document

JSONL = "application/jsonl"
SSE = "text/event-stream"
_STATUS_TEXT = {
    200: "OK",
    201: "Created",
    204: "Deleted",
    400: "Invalid request",
    401: "Missing or invalid API key",
    403: "Refused: a missing or wrong vote proof, or a write from another site",
    404: "Not found (or another lab's)",
    405: "Method not allowed",
    409: "Conflict with the current state",
    413: "Request body too large",
    422: "Rejected: see the message and details",
    429: "Too many requests: wait Retry-After seconds",
    503: "Not enough models right now",
}


CSV = "text/csv"
PEM = "application/x-pem-file"


@dataclass(frozen=True)
class Operation:
    """What the document says of one route beyond its method and path, which come from Flask's own routing."""

    summary: str
    tag: str
    responses: dict[int, Any]  # status -> pydantic model, a text media type, (model, text type), or None (no body)
    body: Any = None  # a pydantic model, JSONL, or None
    description: str = ""
    path_params: dict[str, dict] = field(default_factory=dict)  # schemas; a parameter not named: from its converter
    query_params: dict[str, dict] = field(default_factory=dict)


def documented(summary: str, tag: str, responses: dict[int, Any], **more) -> Callable:
    """Attach a view's OpenAPI entry to the view itself, under its route decorator: the route is written once,
    where Flask serves it, and `document` reads every /api/v1 route from the app's URL map. A lab route's
    security comes from `requires_key` (it marks the view), not from here."""

    def attach(view):
        view.openapi = Operation(summary, tag, responses, **more)
        return view

    return attach


MODEL_ID = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
BATTLE_ID = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9_-]+$"}
VERSION = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
FORMAT_JSON_CSV = {"format": {"type": "string", "enum": ["json", "csv"]}}


def _api_views(app) -> list[tuple[str, str, Callable, Operation, str]]:
    """(method, OpenAPI path, view, its Operation, Flask rule) for every route under /api/v1, in the URL map's order.
    A route without an entry is an error: the document would otherwise leave it out in silence."""
    found = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        view = app.view_functions[rule.endpoint]
        operation = getattr(view, "openapi", None)
        if operation is None:
            raise LookupError(f"{rule.rule} ({rule.endpoint}) has no OpenAPI entry: decorate it with documented()")
        path = _PARAMETER.sub(r"{\2}", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            found.append((method.lower(), path, view, operation, rule.rule))
    return found


def _schemas(operations: list[Operation]) -> tuple[dict, dict]:
    """({model: {"$ref": ...}}, components.schemas) for every pydantic model the operations name."""
    models = []
    for operation in operations:
        for thing, mode in [
            (operation.body, "validation"),
            *((r, "serialization") for r in operation.responses.values()),
        ]:
            if isinstance(thing, tuple):
                thing = thing[0]
            if isinstance(thing, type) and issubclass(thing, BaseModel) and (thing, mode) not in models:
                models.append((thing, mode))
    refs, top = models_json_schema(models, ref_template="#/components/schemas/{model}")
    return {model: ref for (model, _mode), ref in refs.items()}, top.get("$defs", {})


_PARAMETER = re.compile(r"<(?:([^:<>]+):)?([^<>]+)>")  # werkzeug's <converter:name>, converter optional


def _path_parameters(rule: str, operation: Operation) -> list[dict]:
    """The rule's parameters in order: the schema the entry gives, else the one its converter implies."""
    parameters = []
    for converter, name in _PARAMETER.findall(rule):
        default = {"type": "integer", "minimum": 0} if converter == "int" else {"type": "string", "minLength": 1}
        parameters.append(
            {"name": name, "in": "path", "required": True, "schema": operation.path_params.get(name, default)}
        )
    return parameters


def document(app) -> dict:
    """The OpenAPI 3.1 document of /api/v1, from the app's routes and the entries their views carry."""
    views = _api_views(app)
    refs, schemas = _schemas([op for *_, op, _ in views])
    paths: dict[str, dict] = {}
    for method, path, view, op, rule in views:
        entry: dict[str, Any] = {
            "summary": op.summary,
            "tags": [op.tag],
            "operationId": f"{method}_{path.removeprefix('/api/v1/')}".replace("/", "_")
            .replace("{", "")
            .replace("}", "")
            .replace(".", "_"),
        }
        if op.description:
            entry["description"] = op.description
        entry["parameters"] = _path_parameters(rule, op)
        entry["parameters"] += [
            {"name": name, "in": "query", "required": False, "schema": schema}
            for name, schema in op.query_params.items()
        ]
        if op.body is JSONL:
            # at least one line with something on it (an empty upload is refused: no_answers)
            schema = {"type": "string", "pattern": r"\S"}
            entry["requestBody"] = {"required": True, "content": {JSONL: {"schema": schema}}}
        elif op.body is not None:
            entry["requestBody"] = {"required": True, "content": {"application/json": {"schema": refs[op.body]}}}
        responses = {}
        for status, body in op.responses.items():
            response: dict[str, Any] = {"description": _STATUS_TEXT[status]}
            if isinstance(body, str):  # a text format: SSE, JSON Lines, CSV, PEM
                response["content"] = {body: {"schema": {"type": "string"}}}
            elif isinstance(body, tuple):  # a pydantic model as JSON, or the same data in a text format
                model, text_format = body
                response["content"] = {
                    "application/json": {"schema": refs[model]},
                    text_format: {"schema": {"type": "string"}},
                }
            elif isinstance(body, type):
                response["content"] = {"application/json": {"schema": refs[body]}}
            elif status == 200:  # this document
                response["content"] = {"application/json": {"schema": {"type": "object"}}}
            responses[str(status)] = response
        entry["responses"] = responses
        entry["security"] = [{"bearer": []}] if getattr(view, "needs_key", False) else []
        paths.setdefault(path, {})[method] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "arena API",
            "version": API_VERSION,
            "description": "Labs register and follow their models (Authorization: Bearer <key>, from "
            "`arena labs create`); voters battle and vote. Every error is "
            '{"error": {"code", "message"}}.',
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "A lab's API key (arena_...)."}
            },
        },
    }
