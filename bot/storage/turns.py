"""Turns after they are stored: the SQL side of a turn's life (its request id, its answer,
its delivery, its end) and the reads of single turns. Each method is one transaction of
plain Core statements on the shared transaction helper; a turn is begun (and its context
read) by ``SqlConversations``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Update, bindparam, case, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.conversation import estimate_tokens
from bot.domain.errors import StorageError
from bot.domain.models import (
    ChatMessage,
    Cost,
    ModelReply,
    RawJson,
    RequestHandle,
    Settlement,
    Turn,
    TurnState,
)
from bot.domain.ports import NOTHING_MORE, SubmittedWith
from bot.storage.costs import settle_in, store_reservation
from bot.storage.database import Database, now_utc
from bot.storage.dialects import PerDialect
from bot.storage.engine import json_text
from bot.storage.rows import (
    turn_from,
)
from bot.storage.tables import conversations, messages, speakers, turns
from bot.storage.unit import Unit

log = logging.getLogger(__name__)

UNFINISHED_STATES = tuple(s.value for s in TurnState if not s.finished)
FINAL_STATES = frozenset({TurnState.FAILED, TurnState.STOPPED, TurnState.SUPERSEDED})
_COMPLETABLE = (TurnState.PENDING.value, TurnState.SUBMITTED.value)
_FINAL_VALUES = tuple(s.value for s in FINAL_STATES)

_TURN = select(turns).where(turns.c.id == bindparam("b_id"))
_STATE = select(turns.c.state).where(turns.c.id == bindparam("b_id"))
_INSERT_MESSAGES = insert(messages)
_SUBMITTED = (
    update(turns)
    .where(turns.c.id == bindparam("b_id"))
    .values(
        request_id=bindparam("b_request_id"),
        status_url=bindparam("b_status_url"),
        response_url=bindparam("b_response_url"),
        cancel_url=bindparam("b_cancel_url"),
        # A turn stopped while it was being submitted keeps its state (it must not come back
        # to life) but still records the request, for support and cancellation.
        state=case(
            {TurnState.PENDING.value: TurnState.SUBMITTED.value},
            value=turns.c.state,
            else_=turns.c.state,
        ),
        updated_at=bindparam("b_now"),
    )
    .returning(turns.c.conversation_id)
)
_FINISH = (
    update(turns)
    .where(turns.c.id == bindparam("b_id"))
    .values(state=bindparam("b_state"), error=bindparam("b_error"), updated_at=bindparam("b_now"))
    .returning(turns.c.id)
)
_STOP = (
    update(turns)
    .where(turns.c.id == bindparam("b_id"), turns.c.state.in_(_COMPLETABLE))
    .values(state=TurnState.STOPPED.value, error=bindparam("b_by"), updated_at=bindparam("b_now"))
    .returning(turns.c.id)
)
_STATUS_MESSAGE = (
    update(turns)
    .where(turns.c.id == bindparam("b_id"))
    .values(status_message_id=bindparam("b_message"))
    .returning(turns.c.id)
)
_REPLY_PARTS = (
    update(turns)
    .where(turns.c.id == bindparam("b_id"))
    .values(reply_message_ids=bindparam("b_ids", type_=turns.c.reply_message_ids.type))
    .returning(turns.c.id)
)
_TRIM_NOTIFIED = (
    update(conversations)
    .where(conversations.c.id == bindparam("b_id"))
    .values(trim_notified_epoch=bindparam("b_epoch"))
)
_COMPLETE = (
    update(turns)
    .where(turns.c.id == bindparam("b_id"), turns.c.state.in_(_COMPLETABLE))
    .values(
        state=TurnState.COMPLETED.value,
        output=bindparam("b_output"),
        reasoning=bindparam("b_reasoning"),
        request_id=func.coalesce(turns.c.request_id, bindparam("b_request_id")),
        updated_at=bindparam("b_now"),
    )
    .returning(turns.c.conversation_id, turns.c.epoch, turns.c.author_id)
)
# Hands out positions without looking at the history; the row lock this UPDATE takes orders
# concurrent appends to the conversation (PostgreSQL; SQLite has a single writer anyway).
_TAKE_POSITIONS = (
    update(conversations)
    .where(conversations.c.id == bindparam("b_id"))
    .values(
        next_position=conversations.c.next_position + bindparam("b_count"),
        updated_at=bindparam("b_now"),
    )
    .returning(conversations.c.next_position)
)
# An author's first answered turn of an epoch (its columns given as the parameters); later
# ones leave the row as it is (positions only grow, so the first stored is the first).
_ADD_SPEAKER = PerDialect(
    lambda insert: insert(speakers).on_conflict_do_nothing(
        index_elements=[speakers.c.conversation_id, speakers.c.epoch, speakers.c.author_id]
    )
)
_DELIVERED = (
    update(turns)
    .where(turns.c.id == bindparam("b_id"))
    .values(
        reply_message_ids=bindparam("b_ids", type_=turns.c.reply_message_ids.type),
        # A failure notice is delivered too, but the turn stays failed (or stopped).
        state=case(
            {v: v for v in _FINAL_VALUES},
            value=turns.c.state,
            else_=TurnState.DELIVERED.value,
        ),
        updated_at=bindparam("b_now"),
    )
    .returning(turns.c.id)
)


class SqlTurns:
    """``TurnStore`` and ``DeliveryRecorder`` on the shared transaction helper."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def record_submission(
        self, turn_id: int, handle: RequestHandle, also: SubmittedWith = NOTHING_MORE
    ) -> None:
        async def op(unit: Unit) -> None:
            conversation_id = await unit.scalar(
                _SUBMITTED,
                {
                    "b_id": turn_id,
                    "b_request_id": handle.request_id,
                    "b_status_url": handle.status_url,
                    "b_response_url": handle.response_url,
                    "b_cancel_url": handle.cancel_url,
                    "b_now": now_utc(),
                },
            )
            if conversation_id is None:
                raise StorageError(f"no turn {turn_id}")
            if also.trim_notified_epoch is not None:
                await unit.execute(
                    _TRIM_NOTIFIED, {"b_id": conversation_id, "b_epoch": also.trim_notified_epoch}
                )
            if also.reservation is not None:
                await store_reservation(unit, also.reservation)

        # fal's request id: the one write a restart cannot do without (it would submit the
        # turn again), so it goes before every other waiting write of this process.
        await self._db.run_unit(
            "record_submission", op, write=True, priority=True, single=also == NOTHING_MORE
        )

    async def complete_turn(
        self,
        turn_id: int,
        reply: ModelReply,
        new_messages: Sequence[ChatMessage],
        *,
        settlement: Settlement | None = None,
    ) -> Cost | None:
        # Each message becomes its JSON text once, here, with its token estimate.
        stored = [
            (m.role, RawJson(json_text(m.content)), estimate_tokens(m.content))
            for m in new_messages
        ]

        async def op(unit: Unit) -> Cost | None:
            now = now_utc()
            done = await unit.first(
                _COMPLETE,
                {
                    "b_id": turn_id,
                    "b_output": reply.output,
                    "b_reasoning": reply.reasoning,
                    "b_request_id": reply.request_id,
                    "b_now": now,
                },
            )
            if done is None:
                state = await unit.scalar(_STATE, {"b_id": turn_id})
                if state is None:
                    raise StorageError(f"no turn {turn_id}")
                raise StorageError(f"turn {turn_id} is {state}: its answer is not stored")
            conversation_id, epoch, author_id = done
            end = await unit.scalar(
                _TAKE_POSITIONS, {"b_id": conversation_id, "b_count": len(stored), "b_now": now}
            )
            if end is None:
                raise StorageError(f"no conversation {conversation_id}")
            if stored:
                start = end - len(stored)
                await unit.insert_many(
                    _INSERT_MESSAGES,
                    [
                        {
                            "conversation_id": conversation_id,
                            "turn_id": turn_id,
                            "epoch": epoch,
                            "position": start + i,
                            "role": role,
                            "content": content,
                            "tokens": tokens,
                        }
                        for i, (role, content, tokens) in enumerate(stored)
                    ],
                )
                await unit.insert(
                    _ADD_SPEAKER.on(unit.postgres),
                    {
                        "conversation_id": conversation_id,
                        "epoch": epoch,
                        "author_id": author_id,
                        "turn_id": turn_id,
                        "position": start,
                    },
                )
            return None if settlement is None else await settle_in(unit, turn_id, settlement)

        return await self._db.run_unit("complete_turn", op, write=True)

    async def record_delivery(self, turn_id: int, message_ids: Sequence[str]) -> None:
        async def op(unit: Unit) -> None:
            delivered = await unit.first(
                _DELIVERED, {"b_id": turn_id, "b_ids": list(message_ids), "b_now": now_utc()}
            )
            if delivered is None:
                raise StorageError(f"no turn {turn_id}")

        await self._db.run_unit("record_delivery", op, write=True, single=True)

    async def finish_turn(self, turn_id: int, state: TurnState, error: str | None = None) -> None:
        if state not in FINAL_STATES:
            raise ValueError(f"finish_turn takes failed, stopped or superseded, not {state}")
        await self._update_turn(
            "finish_turn",
            _FINISH,
            {"b_id": turn_id, "b_state": state.value, "b_error": error, "b_now": now_utc()},
        )

    async def stop_turn(self, turn_id: int, by: str) -> bool:
        async def op(unit: Unit) -> bool:
            # Conditional: a turn whose answer was stored meanwhile is not stopped.
            stopped = await unit.first(_STOP, {"b_id": turn_id, "b_by": by, "b_now": now_utc()})
            return stopped is not None

        return await self._db.run_unit("stop_turn", op, write=True, single=True)

    async def record_status_message(self, turn_id: int, message_id: str) -> None:
        await self._update_turn(
            "record_status_message", _STATUS_MESSAGE, {"b_id": turn_id, "b_message": message_id}
        )

    async def record_reply_parts(self, turn_id: int, message_ids: Sequence[str]) -> None:
        await self._update_turn(
            "record_reply_parts", _REPLY_PARTS, {"b_id": turn_id, "b_ids": list(message_ids)}
        )

    async def _update_turn(self, what: str, statement: Update, params: dict[str, Any]) -> None:
        """One UPDATE of turn ``b_id`` RETURNING its id; no such turn is an error."""

        async def op(unit: Unit) -> None:
            if await unit.first(statement, params) is None:
                raise StorageError(f"no turn {params['b_id']}")

        await self._db.run_unit(what, op, write=True, single=True)

    # --- reading turns ------------------------------------------------------------------

    async def get_turn(self, turn_id: int) -> Turn:
        turn = await self._find_turn("get_turn", turn_id)
        if turn is None:
            raise StorageError(f"no turn {turn_id}")
        return turn

    async def find_turn(self, turn_id: int) -> Turn | None:
        return await self._find_turn("find_turn", turn_id)

    async def _find_turn(self, what: str, turn_id: int) -> Turn | None:
        async def op(unit: Unit) -> Turn | None:
            row = await unit.first(_TURN, {"b_id": turn_id})
            return None if row is None else turn_from(row)

        return await self._db.run_unit(what, op, write=False, single=True)

    async def latest_turn(self, scope_id: str) -> Turn | None:
        async def op(conn: AsyncConnection) -> Turn | None:
            row = (
                await conn.execute(
                    select(turns)
                    .join(conversations, conversations.c.id == turns.c.conversation_id)
                    .where(
                        conversations.c.scope_id == scope_id,
                        turns.c.epoch == conversations.c.epoch,
                        turns.c.state != TurnState.SUPERSEDED.value,
                    )
                    .order_by(turns.c.id.desc())
                    .limit(1)
                )
            ).one_or_none()
            return None if row is None else turn_from(row)

        return await self._db.run("latest_turn", op, write=False, single=True)

    async def turn_for_source(self, source_id: str) -> Turn | None:
        """The newest attempt's turn for a Discord message."""

        async def op(conn: AsyncConnection) -> Turn | None:
            row = (
                await conn.execute(
                    select(turns)
                    .where(turns.c.source_id == source_id)
                    .order_by(turns.c.attempt.desc())
                    .limit(1)
                )
            ).one_or_none()
            return None if row is None else turn_from(row)

        return await self._db.run("turn_for_source", op, write=False, single=True)

    async def unfinished_turns(self) -> list[Turn]:
        async def op(conn: AsyncConnection) -> list[Turn]:
            rows = await conn.execute(
                select(turns).where(turns.c.state.in_(UNFINISHED_STATES)).order_by(turns.c.id)
            )
            return [turn_from(row) for row in rows]

        return await self._db.run("unfinished_turns", op, write=False, single=True)
