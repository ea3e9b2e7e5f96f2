"""People's data: how long it is kept (the retention sweep), what an export of a
conversation holds, and what forgetting or purging removes. The store implements
:class:`PrivacyStore` (bot/storage/privacy.py); the Discord commands and the CLI use it."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from bot.domain.conversation import without_quote_of_others
from bot.domain.errors import StorageError
from bot.domain.models import Conversation, Turn, TurnState

log = logging.getLogger(__name__)

SWEEP_INTERVAL_SECONDS = 3600.0
EXPORT_JSON_NAME = "conversation.json"
EXPORT_MARKDOWN_NAME = "conversation.md"
EXPORT_FORMAT_VERSION = 1
_RESET_LINE = "Started afresh (/reset): the model did not see what came before."


@dataclass(frozen=True, slots=True)
class Removed:
    """What a deletion removed (or, in a dry run, would remove). ``kept_unfinished`` counts
    matching turns left alone because they are still being answered."""

    turns: int = 0
    messages: int = 0
    conversations: int = 0
    usage_events: int = 0
    settings: int = 0
    kept_unfinished: int = 0

    def __add__(self, other: Removed) -> Removed:
        return Removed(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    @property
    def anything(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self) if f.name != "kept_unfinished")

    def describe(self) -> str:
        """``3 turns, 6 messages, 1 conversation`` (only what is not zero), or ``nothing``."""
        parts = [
            _count(getattr(self, name), word)
            for name, word in (
                ("turns", "turn"),
                ("messages", "message"),
                ("conversations", "conversation"),
                ("usage_events", "usage record"),
                ("settings", "settings row"),
            )
            if getattr(self, name)
        ]
        text = ", ".join(parts) or "nothing"
        if self.kept_unfinished:
            text += f" ({_count(self.kept_unfinished, 'turn')} still being answered kept)"
        return text


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


@dataclass(frozen=True, slots=True)
class Retention:
    """How long stored conversations are kept: ``days`` (0 keeps everything). Usage events
    the quotas still count (their longest window, ``usage_window_seconds``) stay even when
    older than that: they are counts without content."""

    days: int = 0
    usage_window_seconds: int = 0

    @property
    def enabled(self) -> bool:
        return self.days > 0

    @property
    def seconds(self) -> int | None:
        """The retention in seconds (what an uploaded file's lifetime is set to), or None."""
        return self.days * 86400 if self.enabled else None

    def turns_before(self, now: datetime) -> datetime:
        return now - timedelta(days=self.days)

    def usage_before(self, now: datetime) -> datetime:
        return min(self.turns_before(now), now - timedelta(seconds=self.usage_window_seconds))


@dataclass(frozen=True, slots=True)
class ConversationExport:
    """A conversation and the turns stored for it, oldest first: every turn (an operator's
    export), or, once narrowed :meth:`for_person`, that person's own turns with the answers
    to them, and how many messages of other people were ``left_out``."""

    conversation: Conversation
    turns: tuple[Turn, ...]
    person: str | None = None
    left_out: int = 0

    def for_person(self, user_id: str) -> ConversationExport:
        """What ``user_id`` gets of this conversation: their own turns and the answers to
        them. Other people's turns go, answers included (an answer may repeat the text it
        answers); they are counted by message (each attempt of one message counts once)."""
        others = {t.source_id for t in self.turns if t.author_id != user_id}
        own = tuple(t for t in self.turns if t.author_id == user_id)
        return ConversationExport(self.conversation, own, person=user_id, left_out=len(others))


class PrivacyStore(Protocol):
    """Finding and deleting people's data. Each deletion is safe to run in several
    processes at once on one database: rows are deleted by condition, so two runs never
    remove anything twice or anything the condition does not cover. Turns still being
    answered are never deleted (they are counted in ``kept_unfinished``)."""

    async def remove_older(
        self, turns_before: datetime, usage_before: datetime, *, dry_run: bool = False
    ) -> Removed:
        """Turns created before ``turns_before`` with their messages, conversations left
        empty that were last active before it, usage events before ``usage_before``."""
        ...

    async def export(self, scope_id: str) -> ConversationExport | None:
        """The conversation of a thread or DM channel, or None when there is none."""
        ...

    async def forget(self, user_id: str, guild_id: str | None, *, dry_run: bool = False) -> Removed:
        """The turns ``user_id`` wrote in server ``guild_id`` (None: in DMs with the bot),
        their attachments' links and the answers to them."""
        ...

    async def forget_messages(self, source_ids: Collection[str]) -> Removed:
        """The turns of Discord messages that were deleted (every attempt of each), with
        their attachments' links and the answers to them, as ``forget`` removes a turn."""
        ...

    async def purge_user(self, user_id: str, *, dry_run: bool = False) -> Removed:
        """Everything of ``user_id`` everywhere: their turns, conversations they started
        that are left empty, their usage events."""
        ...

    async def purge_guild(self, guild_id: str, *, dry_run: bool = False) -> Removed:
        """Every conversation of a server, its settings and its usage events."""
        ...


def user_usage_key(user_id: str) -> str:
    """The usage-event key of a user's quota (as bot/domain/quotas.py counts it)."""
    return f"user:{user_id}"


def guild_usage_key(guild_id: str) -> str:
    """The usage-event key of a server's quota (as bot/domain/quotas.py counts it)."""
    return f"guild:{guild_id}"


# --- the sweep ------------------------------------------------------------------------------


class RetentionSweeper:
    """Deletes what is older than the retention, at start and every ``interval`` seconds.
    A failing sweep is logged and tried again at the next interval."""

    def __init__(
        self,
        store: PrivacyStore,
        retention: Retention,
        *,
        interval: float = SWEEP_INTERVAL_SECONDS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self.retention = retention
        self._interval = interval
        self._clock = clock
        self.sweeps = 0
        self.swept = asyncio.Event()  # set after each sweep (tests wait on it)

    async def sweep(self) -> Removed:
        """One sweep now (nothing when retention is off)."""
        if not self.retention.enabled:
            return Removed()
        now = self._clock()
        removed = await self._store.remove_older(
            self.retention.turns_before(now), self.retention.usage_before(now)
        )
        if removed.anything:
            log.info("retention (%d days): removed %s", self.retention.days, removed.describe())
        return removed

    async def run(self) -> None:
        """Sweep now and then every interval, until cancelled."""
        while True:
            try:
                await self.sweep()
            except StorageError as exc:
                log.warning(
                    "retention sweep failed (%s); trying again in %.0fs", exc, self._interval
                )
            self.sweeps += 1
            self.swept.set()
            await asyncio.sleep(self._interval)


# --- exports --------------------------------------------------------------------------------


def _time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _prompt(turn: Turn, personal: bool) -> str:
    """The turn's prompt as an export shows it: a personal export leaves out the text of
    another person's message it quotes."""
    return without_quote_of_others(turn.prompt, turn.author_name) if personal else turn.prompt


def _turn_json(turn: Turn, personal: bool) -> dict[str, Any]:
    document = {
        "id": turn.id,
        "epoch": turn.epoch,
        "attempt": turn.attempt,
        "state": turn.state.value,
        "created_at": _time(turn.created_at),
        "author_id": turn.author_id,
        "author_name": turn.author_name,
        "source_message_id": turn.source_id,
        "prompt": _prompt(turn, personal),
        "images": [
            {"name": name, "url": url}
            for name, url in zip(
                _names(turn.image_names, turn.image_urls), turn.image_urls, strict=True
            )
        ],
        "videos": [
            {"name": name, "url": url}
            for name, url in zip(
                _names(turn.video_names, turn.video_urls), turn.video_urls, strict=True
            )
        ],
        "warnings": list(turn.warnings),
        "answer": turn.output,
        "reasoning": turn.reasoning,
        "error": turn.error,
        "fal_request_id": turn.handle.request_id if turn.handle else None,
        "reply_message_ids": list(turn.reply_message_ids),
    }
    if personal:
        # Internal detail (an exception's text, who stopped it): the state says what happened.
        del document["error"]
    return document


def _names(names: tuple[str, ...], urls: tuple[str, ...]) -> list[str]:
    """A name for each URL (turns stored before names were kept have none)."""
    return [names[i] if i < len(names) else f"attachment {i + 1}" for i in range(len(urls))]


def export_json(export: ConversationExport, *, exported_at: datetime) -> str:
    """``conversation.json``: the conversation and its stored turns, field for field."""
    c = export.conversation
    personal = export.person is not None
    document: dict[str, Any] = {
        "format": EXPORT_FORMAT_VERSION,
        "exported_at": _time(exported_at),
        "conversation": {
            "id": c.id,
            "channel_id": c.scope_id,
            "guild_id": c.guild_id,
            "parent_channel_id": c.parent_channel_id,
            "owner_id": c.owner_id,
            "epoch": c.epoch,
            "created_at": _time(c.created_at),
            "updated_at": _time(c.updated_at),
        },
        "turns": [_turn_json(t, personal) for t in export.turns],
    }
    if personal:
        document["exported_for"] = export.person
        document["messages_of_others_left_out"] = export.left_out
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def _stamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def export_markdown(export: ConversationExport, *, exported_at: datetime) -> str:
    """``conversation.md``: who said what and when, attachment names, the answers, the
    reasoning folded away. Answers replaced by a retry or an edit are left out."""
    c = export.conversation
    personal = export.person is not None
    shown = [t for t in export.turns if t.state is not TurnState.SUPERSEDED]
    where = f"server {c.guild_id}, thread {c.scope_id}" if c.guild_id else f"DM {c.scope_id}"
    out = [
        "# Conversation with Seed 2.0 Mini",
        "",
        f"{where}; started {_stamp(c.created_at)}; exported {_stamp(exported_at)}; "
        f"{_count(len(shown), 'turn')}.",
    ]
    if personal:
        out += ["", f"*{left_out_line(export.left_out)}*"]
    epoch: int | None = None
    for turn in shown:
        if epoch is not None and turn.epoch != epoch:
            out += ["", "---", "", f"*{_RESET_LINE}*"]
        epoch = turn.epoch
        heading = f"## {turn.author_name} · {_stamp(turn.created_at)}"
        out += ["", heading, "", _prompt(turn, personal) or "*(no text)*"]
        attachments = _names(turn.image_names, turn.image_urls) + _names(
            turn.video_names, turn.video_urls
        )
        if attachments:
            out += ["", "Attachments: " + ", ".join(f"`{a}`" for a in attachments)]
        out += ["", "### Seed 2.0 Mini", ""]
        if turn.output is not None:
            out.append(turn.output)
        elif turn.state in (TurnState.FAILED, TurnState.STOPPED):
            why = f": {turn.error}" if turn.error and not personal else ""
            out.append(f"*(no answer: {turn.state.value}{why})*")
        else:
            out.append("*(not answered yet)*")
        if turn.reasoning:
            out += [
                "",
                "<details><summary>Reasoning</summary>",
                "",
                turn.reasoning,
                "",
                "</details>",
            ]
    return "\n".join(out) + "\n"


def left_out_line(count: int) -> str:
    """What a personal export says of the messages it leaves out."""
    if not count:
        return (
            "Only your own messages and the answers to them are exported; nobody else wrote here."
        )
    return (
        f"Only your own messages and the answers to them are exported: "
        f"{_count(count, 'message')} of other people left out."
    )


def export_files(export: ConversationExport, *, exported_at: datetime) -> dict[str, str]:
    """The two files of an export, by name: ``conversation.md`` and ``conversation.json``."""
    return {
        EXPORT_MARKDOWN_NAME: export_markdown(export, exported_at=exported_at),
        EXPORT_JSON_NAME: export_json(export, exported_at=exported_at),
    }
