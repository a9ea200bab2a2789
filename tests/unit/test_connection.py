"""A channel's outbound queue: the first frame written in the join's own step, the rest
by the sender task, in order."""

from __future__ import annotations

import asyncio

from gateway.connection import Connection


def connection(sent: list[str]) -> Connection:
    async def send(frame: str) -> None:
        sent.append(frame)

    # No view: these paths never build a state from it.
    return Connection(conn_id="c1", run="r1", view=None,  # type: ignore[arg-type]
                      scopes=set(), send=send, cap_bytes=1 << 20, overflows_before_close=3,
                      overflow_window_s=10)


async def test_the_first_frame_inline_and_the_rest_by_the_sender_in_order() -> None:
    sent: list[str] = []
    conn = connection(sent)
    for frame in ("state", "group", "update"):
        conn.push(frame)
    await conn.send_queued(most=1)
    assert sent == ["state"]
    sender = asyncio.create_task(conn.run_sender())
    for _ in range(100):
        if len(sent) == 3:
            break
        await asyncio.sleep(0)
    assert sent == ["state", "group", "update"] and conn.frames_sent == 3
    conn.finish(1000, "done")
    await asyncio.wait_for(sender, 5)


async def test_nothing_is_written_inline_once_a_close_is_decided() -> None:
    sent: list[str] = []
    conn = connection(sent)
    conn.push("state")
    conn.close_code = 4408
    await conn.send_queued(most=1)
    assert sent == []


async def test_reading_pauses_at_the_answer_cap_and_resumes_at_half() -> None:
    sent: list[str] = []
    gate = asyncio.Event()

    async def send(frame: str) -> None:  # a client that does not read: writes wait
        await gate.wait()
        sent.append(frame)

    conn = Connection(conn_id="c1", run="r1", view=None,  # type: ignore[arg-type]
                      scopes=set(), send=send, cap_bytes=1 << 20, overflows_before_close=3,
                      overflow_window_s=10, max_unsent_answers=10)
    sender = asyncio.create_task(conn.run_sender())
    for i in range(30):
        conn.push(f"update {i}")  # updates do not count: they are dropped on overflow
    assert conn.may_read
    conn.push("ack 0", essential=True)
    await asyncio.sleep(0)  # the sender takes "update 0" and waits on the client
    for i in range(1, 10):
        conn.push(f"ack {i}", essential=True)
        assert conn.may_read == (i < 9), i
    waiting = asyncio.create_task(conn.answers_written())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    gate.set()
    await asyncio.wait_for(waiting, 5)
    for _ in range(100):
        if len(sent) == 40:
            break
        await asyncio.sleep(0)
    assert sent == [f"update {i}" for i in range(30)] + [f"ack {i}" for i in range(10)]
    assert conn.may_read
    conn.finish(1000, "done")
    await asyncio.wait_for(sender, 5)


async def test_answers_kept_through_an_overflow_still_count() -> None:
    gate = asyncio.Event()

    async def send(frame: str) -> None:
        await gate.wait()

    conn = Connection(conn_id="c1", run="r1", view=None,  # type: ignore[arg-type]
                      scopes=set(), send=send, cap_bytes=100, overflows_before_close=99,
                      overflow_window_s=10, max_unsent_answers=3)
    for i in range(3):
        conn.push(f"ack {i}", essential=True)
        conn.push("x" * 60)  # overflows: the updates go, the acks stay
    assert conn.needs_resync and not conn.may_read
    gate.set()
