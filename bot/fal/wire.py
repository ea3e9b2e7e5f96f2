"""fal's wire payloads (TypedDicts) and the one conversion per direction between them and
the domain: request body out, status/result/error bodies in.

Shapes follow ``fal-protocol.md`` (§3 submit, §4 status, §5 result and errors, §12 the
endpoint's schema).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, Required, TypedDict, cast

import msgspec

from bot.domain import jsontext
from bot.domain.errors import (
    AccountCondition,
    FieldProblem,
    ModelAuthError,
    ModelCancelled,
    ModelError,
    ModelInputRejected,
    ModelProtocolError,
    ModelRateLimited,
    ModelTimeout,
    ModelUnavailable,
)
from bot.domain.models import ChatMessage, JsonValue, ModelReply, ModelRequest, RawJson
from bot.domain.params import PARAMS

# --- payloads ------------------------------------------------------------------------------


class WireMessage(TypedDict):
    """One history message; ``content`` is a string or a list of content parts (opaque;
    ``RawJson`` is sent as the JSON text it holds)."""

    role: str
    content: JsonValue | RawJson


class SubmitBody(TypedDict, total=False):
    """The model input (``Seed2MiniInput``); absent keys take the model's defaults. The
    generation parameters' keys (``params.PARAMS``' wire keys) are added beside these."""

    prompt: Required[str]
    messages: list[WireMessage]
    image_urls: list[str]
    video_urls: list[str]


class QueueHandleBody(TypedDict):
    """What submit answers (the queue status of the new request)."""

    request_id: str
    status: NotRequired[str]
    status_url: NotRequired[str]
    response_url: NotRequired[str]
    cancel_url: NotRequired[str]
    queue_position: NotRequired[int]


class StatusBody(TypedDict):
    """A queue status, from polling or one status-stream event."""

    status: Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    request_id: NotRequired[str]
    queue_position: NotRequired[int]
    logs: NotRequired[list[dict[str, Any]] | None]
    metrics: NotRequired[dict[str, Any]]
    error: NotRequired[str | None]
    error_type: NotRequired[str | None]


class ResultBody(TypedDict):
    """The model output (``Seed2MiniOutput``)."""

    output: str
    reasoning_content: NotRequired[str | None]
    messages: list[WireMessage]


class UploadInitiateBody(TypedDict):
    """What ``/storage/upload/initiate`` answers."""

    upload_url: str
    file_url: str


class ErrorObject(TypedDict, total=False):
    """One item of a 422 ``detail`` list (pydantic style)."""

    loc: list[str | int]
    msg: str
    type: str
    url: str
    ctx: dict[str, Any]
    input: Any


class ErrorBody(TypedDict, total=False):
    """An error body: ``detail`` is a list of ``ErrorObject`` (model errors) or a string
    (infrastructure errors, with ``error_type``)."""

    detail: str | list[ErrorObject]
    error_type: str


# --- out -----------------------------------------------------------------------------------


def submit_body(request: ModelRequest) -> SubmitBody:
    """The JSON body for ``request``: unset fields and empty lists are left out, message
    content is passed through unchanged."""
    body: SubmitBody = {"prompt": request.prompt}
    if request.messages:
        body["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
    if request.image_urls:
        body["image_urls"] = list(request.image_urls)
    if request.video_urls:
        body["video_urls"] = list(request.video_urls)
    # The parameters' keys are their descriptors' (not spelled out in SubmitBody).
    params = cast(dict[str, object], body)
    for param in PARAMS:
        key = param.wire_key
        if key is not None and (value := getattr(request, key)) is not None:
            params[key] = value
    return body


def dumps(payload: object) -> bytes:
    """Compact UTF-8 JSON for a request body; stored history (``RawJson``) goes in as the
    text it holds."""
    return jsontext.dumps(payload)


# --- in ------------------------------------------------------------------------------------


def _protocol(what: str, request_id: str | None) -> ModelProtocolError:
    return ModelProtocolError(f"fal sent an unexpected {what}.", request_id=request_id)


def valid_request_id(request_id: str) -> bool:
    """fal's ids are UUIDs; anything that could change a URL's path is refused."""
    return bool(request_id) and all(c.isalnum() or c in "-_" for c in request_id)


def parse_handle(payload: object) -> QueueHandleBody:
    """Check a submit answer: an object with a string ``request_id``; the URLs are optional
    (the client can build them)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("request_id"), str):
        raise _protocol("submit response", None)
    request_id: str = payload["request_id"]
    if not valid_request_id(request_id):
        raise _protocol("request id", None)
    body: QueueHandleBody = {"request_id": request_id}
    for name in ("status_url", "response_url", "cancel_url"):
        value = payload.get(name)
        if isinstance(value, str) and value:
            body[name] = value
    position = payload.get("queue_position")
    if isinstance(position, int) and not isinstance(position, bool):
        body["queue_position"] = position
    return body


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """A parsed queue status."""

    state: Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    queue_position: int | None = None
    inference_time: float | None = None
    error: str | None = None
    error_type: str | None = None
    # What fal said the request consumed, when a status answer carried the header.
    billable_units: int | None = None


BILLABLE_UNITS_HEADER = "X-Fal-Billable-Units"


def billable_units(headers: Mapping[str, str]) -> int | None:
    """The units fal bills for a request, from ``X-Fal-Billable-Units`` (fal-protocol §5):
    None when the header is absent or not a non-negative number (a fraction is rounded up,
    so that a cost is never understated)."""
    raw = headers.get(BILLABLE_UNITS_HEADER)
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return math.ceil(value)


def parse_status(payload: object, request_id: str) -> QueueStatus:
    """Parse a status by its ``status`` field (never by the HTTP code, fal-protocol §4.1)."""
    if not isinstance(payload, dict):
        raise _protocol("status", request_id)
    state = payload.get("status")
    if state == "IN_QUEUE":
        position = payload.get("queue_position")
        if not isinstance(position, int) or isinstance(position, bool) or position < 0:
            position = None  # progress is cosmetic: a missing position is no reason to fail
        return QueueStatus("IN_QUEUE", queue_position=position)
    if state == "IN_PROGRESS":
        return QueueStatus("IN_PROGRESS")
    if state == "COMPLETED":
        metrics = payload.get("metrics")
        inference_time = metrics.get("inference_time") if isinstance(metrics, dict) else None
        error, error_type = payload.get("error"), payload.get("error_type")
        return QueueStatus(
            "COMPLETED",
            inference_time=float(inference_time)
            if isinstance(inference_time, int | float) and not isinstance(inference_time, bool)
            else None,
            error=error if isinstance(error, str) else None,
            error_type=error_type if isinstance(error_type, str) else None,
        )
    raise _protocol("status", request_id)


class _ResultMessage(msgspec.Struct, gc=False):
    """One message of a result as read: its role decoded, its content kept as the raw
    JSON it is (decoded only for a message the history does not hold yet). Not tracked by
    the garbage collector (``gc=False``: it holds a string and bytes, no cycle can pass
    through it): a long conversation's result has hundreds."""

    role: str
    content: msgspec.Raw = msgspec.Raw(b"null")


class _Result(msgspec.Struct):
    output: str
    messages: list[_ResultMessage]
    reasoning_content: Any = None


_RESULT = msgspec.json.Decoder(_Result)


def parse_reply(
    body: bytes,
    request_id: str,
    inference_time: float | None,
    billable_units: int | None = None,
    *,
    sent: int | None = None,
) -> ModelReply:
    """The model's answer from a result body; message content is kept as fal sent it. fal
    returns the whole conversation: with ``sent`` (how many conversation messages, system
    ones aside, the request carried) and more than that returned, those first ``sent`` are
    not decoded (the history holds them already): ``messages`` is what follows them and
    ``skipped`` says how many were left out. Otherwise every message is decoded."""
    try:
        result = _RESULT.decode(body)
    except msgspec.ValidationError as exc:
        what = "message in the result" if "$.messages[" in str(exc) else "result"
        raise _protocol(what, request_id) from None
    except msgspec.DecodeError:
        raise _protocol("result", request_id) from None
    returned = result.messages
    start = skipped = 0
    if sent:
        conversation = [i for i, m in enumerate(returned) if m.role != "system"]
        if len(conversation) > sent:
            start, skipped = conversation[sent], sent
    reasoning = result.reasoning_content
    return ModelReply(
        output=result.output,
        reasoning=reasoning if isinstance(reasoning, str) and reasoning else None,
        messages=tuple(
            ChatMessage(role=m.role, content=msgspec.json.decode(m.content))
            for m in returned[start:]
        ),
        request_id=request_id,
        inference_time=inference_time,
        billable_units=billable_units,
        skipped=skipped,
    )


def parse_upload(payload: object) -> UploadInitiateBody | None:
    """The two URLs of an upload, or ``None`` when the answer lacks them."""
    if not isinstance(payload, dict):
        return None
    upload_url, file_url = payload.get("upload_url"), payload.get("file_url")
    if not (isinstance(upload_url, str) and isinstance(file_url, str)):
        return None
    if not (
        upload_url.startswith(("https://", "http://"))
        and file_url.startswith(("https://", "http://"))
    ):
        return None
    return {"upload_url": upload_url, "file_url": file_url}


# --- errors --------------------------------------------------------------------------------

_TIMEOUT_TYPES = frozenset({"request_timeout", "startup_timeout", "generation_timeout"})
_CANCEL_TYPES = frozenset({"client_cancelled"})
_MAX_MESSAGE = 300


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def field_problems(detail: object, error_type: str | None) -> tuple[FieldProblem, ...] | None:
    """The problems a ``detail`` names (a pydantic-style list, or one string), or ``None``
    when ``detail`` is neither."""
    if isinstance(detail, str):
        return (FieldProblem("body", None, error_type or "value_error", detail),)
    if not isinstance(detail, list):
        return None
    problems: list[FieldProblem] = []
    for item in detail:
        if not isinstance(item, dict):
            return None
        loc = item.get("loc")
        loc = loc if isinstance(loc, list) else []
        # loc is ["body", field, index?]; a bare ["body"] concerns the input as a whole.
        field_name = str(loc[1]) if len(loc) > 1 else str(loc[0]) if loc else "body"
        index = (
            loc[2]
            if len(loc) > 2 and isinstance(loc[2], int) and not isinstance(loc[2], bool)
            else None
        )
        kind, msg = item.get("type"), item.get("msg")
        problems.append(
            FieldProblem(
                field=field_name,
                index=index,
                kind=kind if isinstance(kind, str) else "unknown",
                message=msg if isinstance(msg, str) else "",
            )
        )
    return tuple(problems)


def describe_problems(problems: Sequence[FieldProblem]) -> str:
    """One line naming each rejected field, e.g. ``image_urls[0]: Failed to download``."""
    parts = []
    for p in problems:
        where = p.field if p.index is None else f"{p.field}[{p.index}]"
        parts.append(f"{where}: {p.message or p.kind}")
    return _clip("; ".join(parts))


def account_condition(status: int, detail: str) -> AccountCondition:
    """What a 401/402/403 says about the account. fal answers a locked account with 403
    ``{"detail": "User is locked. Reason: Exhausted balance. Top up …"}`` (or ``Reason:
    TOP_UP``, ``Reason: Admin lock``); a wrong key with 401; a key without the right scope
    with a 403 of another text."""
    lowered = detail.lower()
    if status == 402 or any(w in lowered for w in ("balance", "top_up", "top up", "credit")):
        return "out_of_credit"
    if "locked" in lowered:
        return "account_locked"
    return "key_refused" if status == 401 else "no_permission"


def error_for(
    status: int,
    headers: Mapping[str, str],
    payload: object,
    *,
    request_id: str | None,
    timeout_type_user: bool = False,
    tried_for: float | None = None,
) -> ModelError:
    """The domain error for a failed fal answer (after retries).

    ``payload`` is the decoded JSON body, or ``None`` when it was not JSON (an ingress page).
    Messages are meant for users: no URL, no body echo, fal's request id kept separately.
    ``tried_for`` (seconds spent retrying) goes on ``ModelUnavailable``.
    """
    body = payload if isinstance(payload, dict) else {}
    detail = body.get("detail")
    error_type = body.get("error_type")
    if not isinstance(error_type, str):
        error_type = headers.get("X-Fal-Error-Type")
    label = f"HTTP {status}" + (f", {error_type}" if error_type else "")
    text = _clip(detail) if isinstance(detail, str) else ""

    if status == 499 or error_type in _CANCEL_TYPES:
        return ModelCancelled("The request was cancelled.", request_id=request_id)
    if status in (401, 402, 403):
        condition = account_condition(status, text)
        return ModelAuthError(
            f"fal refused the bot's account ({label}, {condition.replace('_', ' ')}).",
            condition=condition,
            request_id=request_id,
        )
    if status == 422 or (status == 400 and error_type == "bad_request"):
        problems = field_problems(detail, error_type)
        if problems is None:
            return ModelProtocolError(
                f"fal rejected the input without saying why ({label}).", request_id=request_id
            )
        return ModelInputRejected(
            f"The model rejected the input: {describe_problems(problems)}",
            problems,
            request_id=request_id,
        )
    if status == 429:
        return ModelRateLimited(
            "fal is rate limiting this bot; try again shortly.", request_id=request_id
        )
    if timeout_type_user or error_type in _TIMEOUT_TYPES:
        # fal's start timeout and a runner that never started: the request never ran.
        never_ran = timeout_type_user or error_type == "startup_timeout"
        return ModelTimeout(
            f"fal gave up on the request ({label}).",
            phase="queue" if never_ran else "run",
            request_id=request_id,
        )
    if status == 404:
        # A request id fal no longer knows: expired, or created with another key.
        return ModelUnavailable(
            f"fal no longer knows this request ({label}).", request_id=request_id
        )
    if status >= 500 or status in (408, 409):
        return ModelUnavailable(
            f"fal is unavailable ({label})" + (f": {text}" if text else "."),
            tried_for=tried_for,
            request_id=request_id,
        )
    return ModelProtocolError(f"fal answered unexpectedly ({label}).", request_id=request_id)
