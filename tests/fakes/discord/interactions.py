"""Interactions seen from the test: the :class:`FakeInteraction` handle, and building a slash
command's ``options``/``resolved`` from Python values, checked against the synced definition.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .events import Event, InteractionResponded
from .models import FakeChannel, FakeMember, FakeMessage, FakeRole, FakeUser, UserFile

if TYPE_CHECKING:
    from .server import FakeDiscord
    from .world import InteractionState

__all__ = ["FakeInteraction", "build_command_options"]

OPTION_TYPE_NAMES = {
    1: "SUB_COMMAND",
    2: "SUB_COMMAND_GROUP",
    3: "STRING",
    4: "INTEGER",
    5: "BOOLEAN",
    6: "USER",
    7: "CHANNEL",
    8: "ROLE",
    9: "MENTIONABLE",
    10: "NUMBER",
    11: "ATTACHMENT",
}


class FakeInteraction:
    """A test-started interaction: what the bot answered, and ways to wait for it."""

    def __init__(self, fake: FakeDiscord, state: InteractionState) -> None:
        self._fake = fake
        self.state = state

    def __repr__(self) -> str:
        what = self.state.name or self.state.custom_id
        responded = self.response_type
        return f"<FakeInteraction id={self.id} type={self.type} {what!r} responded={responded}>"

    @property
    def id(self) -> int:
        return self.state.id

    @property
    def token(self) -> str:
        return self.state.token

    @property
    def type(self) -> int:
        return self.state.type

    @property
    def user(self) -> FakeUser:
        return self.state.user

    @property
    def channel_id(self) -> int:
        return self.state.channel_id

    @property
    def guild_id(self) -> int | None:
        return self.state.guild_id

    @property
    def context(self) -> int:
        """The ``context`` sent: 0 guild, 1 the bot's DM, 2 a private channel."""
        return self.state.context

    @property
    def authorizing_integration_owners(self) -> dict[str, str]:
        """As sent: ``{"0": guild id (or "0" in the bot's DM)}`` for a guild install,
        ``{"1": user id}`` for a user install, or both."""
        return dict(self.state.owners)

    @property
    def user_install_only(self) -> bool:
        """Only a user install authorizes it (at most 5 follow-ups)."""
        return self.state.user_install_only

    @property
    def forced_ephemeral(self) -> bool:
        """Discord makes every response ephemeral (a guild without the bot, where the
        member lacks USE_EXTERNAL_APPS)."""
        return self.state.forced_ephemeral

    @property
    def payload(self) -> dict[str, Any]:
        """The INTERACTION_CREATE payload sent to the bot."""
        return self.state.payload

    @property
    def response_type(self) -> int | None:
        """The initial callback's type (4 message, 5 deferred, 6 deferred update, 7 update,
        8 autocomplete, 9 modal) or ``None`` while unanswered."""
        return self.state.response_type

    @property
    def response(self) -> InteractionResponded | None:
        for event in self._fake.events_of(InteractionResponded):
            if event.interaction_id == self.id:
                return event
        return None

    @property
    def original_message(self) -> FakeMessage | None:
        """Current state of the response message (for components: the clicked message)."""
        message_id = self.state.original_message_id
        return self._fake.find_message(message_id) if message_id is not None else None

    @property
    def followups(self) -> list[FakeMessage]:
        found = [self._fake.find_message(i) for i in self.state.followup_ids]
        return [m for m in found if m is not None]

    @property
    def modal(self) -> dict[str, Any] | None:
        """The modal the bot opened (callback type 9), as sent."""
        return self.state.modal

    async def wait_response(self, *, timeout: float = 5.0) -> InteractionResponded:
        """The bot's initial callback."""
        return await self._fake.wait_for_event(
            InteractionResponded,
            lambda e: e.interaction_id == self.id,
            timeout=timeout,
            what=f"a response to interaction {self.id} ({self.state.name or self.state.custom_id})",
        )

    async def wait_original(
        self,
        predicate: Callable[[FakeMessage], bool] | None = None,
        *,
        timeout: float = 5.0,
    ) -> FakeMessage:
        """The response message once it is no longer "thinking" (and matches ``predicate``)."""

        def ready(_: Event) -> bool:
            message = self.original_message
            return (
                message is not None
                and not message.loading
                and (predicate is None or predicate(message))
            )

        await self._fake.wait_for(
            ready, timeout=timeout, what=f"the original response of interaction {self.id}"
        )
        message = self.original_message
        assert message is not None
        return message

    async def wait_followup(self, count: int = 1, *, timeout: float = 5.0) -> FakeMessage:
        """The ``count``-th followup message (1-based)."""
        await self._fake.wait_for(
            lambda _: len(self.state.followup_ids) >= count,
            timeout=timeout,
            what=f"followup #{count} of interaction {self.id}",
        )
        message = self._fake.find_message(self.state.followup_ids[count - 1])
        assert message is not None
        return message


def build_command_options(
    fake: FakeDiscord,
    command: Mapping[str, Any],
    path: list[str],
    options: dict[str, Any],
    user: FakeUser,
    channel: FakeChannel,
    *,
    partial: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``data.options`` and ``data.resolved`` for invoking ``command`` along ``path``
    (``partial``: an autocomplete request, where required options may be missing and string
    values need not be among the choices)."""
    schema: list[dict[str, Any]] = list(command.get("options") or [])
    wrappers: list[dict[str, Any]] = []
    for part in path[1:]:
        sub = next((o for o in schema if o.get("name") == part and o.get("type") in (1, 2)), None)
        if sub is None:
            names = [o.get("name") for o in schema if o.get("type") in (1, 2)]
            raise AssertionError(f"/{' '.join(path)}: no subcommand {part!r} (has {names})")
        wrappers.append(sub)
        schema = list(sub.get("options") or [])
    if any(o.get("type") in (1, 2) for o in schema):
        names = [o.get("name") for o in schema]
        raise AssertionError(f"/{' '.join(path)} needs a subcommand: one of {names}")
    known = {str(o["name"]): o for o in schema}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise AssertionError(f"/{' '.join(path)} has no options {unknown} (has {sorted(known)})")
    missing = [n for n, o in known.items() if o.get("required") and n not in options]
    if missing and not partial:
        raise AssertionError(f"/{' '.join(path)}: required options {missing} not given")
    resolved: dict[str, dict[str, Any]] = {}
    values = [
        _option_value(fake, known[name], value, user, channel, resolved, partial=partial)
        for name, value in options.items()
    ]
    result: list[dict[str, Any]] = values
    for wrapper in reversed(wrappers):
        result = [{"name": wrapper["name"], "type": wrapper["type"], "options": result}]
    return result, {k: v for k, v in resolved.items() if v}


def _option_value(
    fake: FakeDiscord,
    spec: Mapping[str, Any],
    value: Any,
    user: FakeUser,
    channel: FakeChannel,
    resolved: dict[str, dict[str, Any]],
    *,
    partial: bool = False,
) -> dict[str, Any]:
    name = str(spec["name"])
    kind = int(spec["type"])
    label = f"option {name!r} ({OPTION_TYPE_NAMES.get(kind, kind)})"

    def fail(reason: str) -> AssertionError:
        return AssertionError(f"{label}: {reason}, got {value!r}")

    out: dict[str, Any] = {"name": name, "type": kind}
    choices = spec.get("choices")
    if kind == 3:
        if not isinstance(value, str):
            raise fail("expected str")
        if len(value) < int(spec.get("min_length", 0)) or len(value) > int(
            spec.get("max_length", 6000)
        ):
            raise fail("length out of range")
        out["value"] = value
    elif kind == 4:
        if type(value) is not int:
            raise fail("expected int")
        _check_range(spec, value, fail)
        out["value"] = value
    elif kind == 10:
        if type(value) not in (int, float):
            raise fail("expected a number")
        _check_range(spec, value, fail)
        out["value"] = float(value)
    elif kind == 5:
        if type(value) is not bool:
            raise fail("expected bool")
        out["value"] = value
    elif kind in (6, 9) and isinstance(value, FakeUser | FakeMember):
        target = value.user if isinstance(value, FakeMember) else value
        out["value"] = str(target.id)
        resolved.setdefault("users", {})[str(target.id)] = fake.user_payload(target)
        guild = fake.guild_of(channel)
        if guild is not None and target.id in guild.members:
            member = dict(fake.member_payload(guild.members[target.id]))
            member["permissions"] = str(fake.permissions_for(target.id, channel))
            resolved.setdefault("members", {})[str(target.id)] = member
    elif kind in (8, 9) and isinstance(value, FakeRole):
        out["value"] = str(value.id)
        resolved.setdefault("roles", {})[str(value.id)] = fake.role_payload(value)
    elif kind == 7 and isinstance(value, FakeChannel):
        allowed_types = spec.get("channel_types")
        if allowed_types and value.type not in allowed_types:
            raise fail(f"channel type {value.type} not in {allowed_types}")
        out["value"] = str(value.id)
        resolved.setdefault("channels", {})[str(value.id)] = fake.partial_channel_payload(
            value, user.id
        )
    elif kind == 11 and isinstance(value, UserFile):
        attachment = fake.upload_attachment(value, fake.application_id, ephemeral=True)
        out["value"] = str(attachment.id)
        resolved.setdefault("attachments", {})[str(attachment.id)] = fake.attachment_payload(
            attachment
        )
    else:
        raise fail("unsupported value for this option type")
    if choices and not partial and out.get("value") not in [c.get("value") for c in choices]:
        raise fail(f"not one of the choices {[c.get('value') for c in choices]}")
    return out


def _check_range(
    spec: Mapping[str, Any], value: float, fail: Callable[[str], AssertionError]
) -> None:
    low, high = spec.get("min_value"), spec.get("max_value")
    if (low is not None and value < low) or (high is not None and value > high):
        raise fail(f"outside [{low}, {high}]")
