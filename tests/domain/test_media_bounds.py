"""The byte-weighted bound on attachments being prepared, and the text budget's arithmetic."""

from __future__ import annotations

import asyncio
import contextlib

from bot.domain.attachments import AttachmentLimits, cut_text, plan_attachments
from bot.domain.models import Attachment
from bot.domain.preparation import ByteGate


async def holder(gate: ByteGate, size: int, got: list[int], release: asyncio.Event) -> None:
    async with gate.hold(size):
        got.append(size)
        await release.wait()


async def settle() -> None:
    # Let every task run until it blocks: a fixed number of loop turns, not a timer.
    for _ in range(5):
        await asyncio.sleep(0)


async def test_the_byte_gate_serves_in_arrival_order_and_frees_on_release() -> None:
    gate = ByteGate(100)
    got: list[int] = []
    go = {n: asyncio.Event() for n in (60, 61, 10)}
    tasks = [asyncio.create_task(holder(gate, n, got, go[n])) for n in (60, 61, 10)]
    await settle()
    # 61 does not fit beside 60; 10 would, but waits behind 61 (no starving a big file).
    assert got == [60] and gate.free == 40
    go[60].set()
    await settle()
    assert got == [60, 61, 10] and gate.free == 100 - 61 - 10
    go[61].set()
    go[10].set()
    await asyncio.gather(*tasks)
    assert gate.free == 100


async def test_a_cancelled_waiter_lets_the_ones_behind_it_go() -> None:
    gate = ByteGate(100)
    got: list[int] = []
    release = asyncio.Event()
    first = asyncio.create_task(holder(gate, 90, got, release))
    await settle()
    blocked = asyncio.create_task(holder(gate, 50, got, release))
    small = asyncio.create_task(holder(gate, 10, got, release))
    await settle()
    assert got == [90]
    blocked.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await blocked
    await settle()
    assert got == [90, 10]
    release.set()
    await asyncio.gather(first, small)
    assert gate.free == 100


async def test_a_file_larger_than_the_gate_goes_alone() -> None:
    gate = ByteGate(100)
    got: list[int] = []
    release = asyncio.Event()
    big = asyncio.create_task(holder(gate, 1_000, got, release))
    await settle()
    small = asyncio.create_task(holder(gate, 1, got, release))
    await settle()
    assert got == [1_000] and gate.free == 0
    release.set()
    await asyncio.gather(big, small)
    assert got == [1_000, 1] and gate.free == 100


def att(name: str, size: int) -> Attachment:
    return Attachment(name, name, "text/plain", size, f"https://cdn.discordapp.com/{name}")


def test_text_budget_gives_whole_files_then_a_cut_one_then_leaves_out() -> None:
    limits = AttachmentLimits(max_text_files=4, max_text_bytes_per_turn=250)
    plan = plan_attachments([att(f"{n}.txt", 100) for n in range(5)], limits)
    assert [a.filename for a in plan.texts] == ["0.txt", "1.txt", "2.txt"]
    assert plan.text_allowances == (100, 100, 50)
    assert plan.dropped == (
        "2 text files left out (at most 250 B of text per message): `3.txt`, `4.txt`",
    )


def test_a_cut_text_ends_on_a_whole_character_and_a_line_end() -> None:
    data = "line one\nligne deux é\nthird".encode()
    assert cut_text(data, 21) == "line one\nligne deux "  # byte 21 splits "é": dropped
    assert cut_text(b"abc\ndefgh\nij", 11) == "abc\ndefgh"  # a line end in its second half
