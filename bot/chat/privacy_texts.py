"""What the bot says for /export and /forget."""

from __future__ import annotations

from typing import Final

EXPORT_WHERE: Final = "⛔ Use `/export` inside a conversation's thread (or in a DM with me)."
EXPORT_NOT_A_CONVERSATION: Final = (
    "⛔ This channel is not a conversation with me: there is nothing to export here."
)
FORGET_CONFIRM_LABEL: Final = "Delete what I wrote"
FORGET_NOT_YOURS: Final = "⛔ Only the person who asked to forget can confirm it."
FORGET_BUSY: Final = (
    "⏳ What you wrote here is still being answered: use `/forget` again once it is done."
)


def _turns(count: int) -> str:
    return f"{count} turn" + ("" if count == 1 else "s")


def _where(in_server: bool) -> str:
    return "in this server" if in_server else "in our direct messages"


EXPORT_NOTHING_OF_YOURS: Final = (
    "⛔ You have written nothing in this conversation that is still stored: there is nothing "
    "of yours to export. (An export holds only your own messages and the answers to them.)"
)


def export_ready(turns: int, left_out: int) -> str:
    others = (
        f"; {left_out} message{'' if left_out == 1 else 's'} of other people left out"
        if left_out
        else ""
    )
    return (
        f"📦 Your part of this conversation ({_turns(turns)} and the answers to them{others}): "
        "`conversation.md` to read, `conversation.json` with each of your stored turns."
    )


def export_too_large(size: int) -> str:
    return (
        f"⛔ This conversation's export ({size / 1_048_576:.1f} MB) is too large to send here; "
        "the bot's operator can export it with `seed-bot export`."
    )


def forget_nothing(in_server: bool) -> str:
    return f"Nothing you wrote {_where(in_server)} is stored: there is nothing to forget."


def forget_confirm(turns: int, in_server: bool) -> str:
    return (
        f"🗑️ This deletes the {_turns(turns)} you wrote {_where(in_server)} from my stored "
        "history: your text, your attachments' links and my answers to them. Other people's "
        "turns stay. This cannot be undone."
    )


def forgotten(turns: int, kept: int, in_server: bool) -> str:
    text = f"✅ Removed {_turns(turns)} you wrote {_where(in_server)}, and my answers to them."
    if kept:
        text += f" {_turns(kept)} still being answered stayed: use `/forget` again later."
    return text
