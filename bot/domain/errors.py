"""One error tree for the whole bot.

Library exceptions (aiohttp, SQLAlchemy, discord.py) are translated into these where they
occur; the Discord layer turns them into user text, the CLI into exit codes.

    SeedBotError
    ├── ConfigError                 invalid configuration (lists every problem)
    ├── ModelError                  the model service failed a request (carries request_id)
    │   ├── ModelInputRejected      422: the model refused an input field or attachment
    │   ├── ModelTimeout            the per-request deadline passed, or fal's start timeout
    │   ├── ModelUnavailable        5xx / transport failures after retries
    │   │   └── ModelSubmitUnknown  the connection failed after a submit was sent
    │   ├── ModelRateLimited        429 after retries
    │   ├── ModelAuthError          401/403: the key is refused, the account locked or out of credit
    │   ├── ModelCancelled          the request was cancelled (Stop, shutdown)
    │   └── ModelProtocolError      fal answered something this client cannot understand
    ├── AttachmentError             an attachment could not be fetched or stored
    ├── DeliveryError               the answer could not be posted on Discord
    ├── StorageError                the database failed
    │   ├── DuplicateMessage        this Discord message was already taken as a turn
    │   └── StorageUnavailable      the database is busy or unreachable after retries
    ├── QuotaExceeded               a per-user / per-server quota refused the turn
    ├── AccessDenied                an access list refused the turn or command
    └── InvalidSetting              a slash-command or config value is out of range
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

TimeoutPhase = Literal["queue", "run"]
AccountCondition = Literal["key_refused", "no_permission", "account_locked", "out_of_credit"]


class SeedBotError(Exception):
    """Base of every error the bot raises on purpose."""


class ConfigError(SeedBotError):
    """The configuration is invalid; ``problems`` lists every problem found, one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One rejected input field, as fal's 422 ``detail`` list names it.

    ``field`` is the input name (``prompt``, ``image_urls`` …); ``index`` the position in a
    list field when the problem is about one item (an attachment); ``kind`` fal's machine type
    (``file_download_error`` …); ``message`` the human text.
    """

    field: str
    index: int | None
    kind: str
    message: str


class ModelError(SeedBotError):
    """The model service failed; ``request_id`` is fal's id when one exists (for support).
    ``billable_units`` is what fal reported the failed request consumed, when it said."""

    billable_units: int | None = None

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id


class ModelInputRejected(ModelError):
    """The model refused the input (HTTP 422); ``problems`` says which field and why."""

    def __init__(
        self,
        message: str,
        problems: tuple[FieldProblem, ...] = (),
        *,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, request_id=request_id)
        self.problems = problems


class ModelTimeout(ModelError):
    """The request did not finish before its deadline (ours or fal's start timeout).

    ``phase`` says where the time went: ``queue`` (the request never started running: it
    waited in fal's queue, or fal could not be asked) or ``run`` (the model was running);
    ``silent_for`` is set when fal failed every call for that many seconds before the
    deadline (fal, not the model, was the trouble)."""

    def __init__(
        self,
        message: str,
        *,
        phase: TimeoutPhase = "queue",
        silent_for: float | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, request_id=request_id)
        self.phase: TimeoutPhase = phase
        self.silent_for = silent_for


class ModelUnavailable(ModelError):
    """fal could not be reached or failed on its side, after retries; ``tried_for`` is how
    many seconds the bot kept trying (None when unknown)."""

    def __init__(
        self, message: str, *, tried_for: float | None = None, request_id: str | None = None
    ) -> None:
        super().__init__(message, request_id=request_id)
        self.tried_for = tried_for


class ModelSubmitUnknown(ModelUnavailable):
    """The connection failed after a submit's bytes were sent: fal may or may not have
    queued (and will bill) the request, and its id is unknown."""


class ModelRateLimited(ModelError):
    """fal kept answering 429 after retries."""


class ModelAuthError(ModelError):
    """fal refused the account (401/403): ``condition`` says how (the key is refused or
    lacks permission, the account is locked or out of credit). It concerns every turn until
    an admin fixes it."""

    def __init__(
        self,
        message: str,
        *,
        condition: AccountCondition = "key_refused",
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, request_id=request_id)
        self.condition: AccountCondition = condition


class ModelCancelled(ModelError):
    """The request was cancelled before it produced an answer."""


class ModelProtocolError(ModelError):
    """fal answered with something this client does not understand."""


class AttachmentError(SeedBotError):
    """An attachment could not be downloaded from Discord or stored at fal."""

    def __init__(self, filename: str, reason: str) -> None:
        super().__init__(f"{filename}: {reason}")
        self.filename = filename
        self.reason = reason


class DeliveryError(SeedBotError):
    """The reply could not be posted (missing permission, channel gone, Discord failing)."""


class StorageError(SeedBotError):
    """The database failed."""


class DuplicateMessage(StorageError):
    """The Discord message was already taken as a turn (a message is answered at most once)."""


class StorageUnavailable(StorageError):
    """The database stayed busy or unreachable after retries."""


class QuotaExceeded(SeedBotError):
    """A request quota refused the turn; ``retry_at`` says when it frees up."""

    def __init__(self, scope: str, retry_at: datetime) -> None:
        super().__init__(f"{scope} quota exceeded until {retry_at.isoformat()}")
        self.scope = scope
        self.retry_at = retry_at


class BudgetExceeded(SeedBotError):
    """A dollar budget refused the turn before it reached fal: ``scope`` is ``user``,
    ``server`` or ``bot``, ``period`` ``daily`` or ``monthly``; ``resets_at`` is when its
    period ends (UTC)."""

    def __init__(self, scope: str, period: str, limit_usd: float, resets_at: datetime) -> None:
        super().__init__(
            f"{scope} {period} budget of ${limit_usd:.2f} used up until {resets_at.isoformat()}"
        )
        self.scope = scope
        self.period = period
        self.limit_usd = limit_usd
        self.resets_at = resets_at


class AccessDenied(SeedBotError):
    """An allow/deny list or a permission check refused the action."""


class InvalidSetting(SeedBotError):
    """A setting value is invalid; the message is meant for the user."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message
