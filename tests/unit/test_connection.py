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
                      overflow_window_s=10, max_unsent_answers=1000)


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


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def stepped_connection(sent: list[str], permits: asyncio.Semaphore, cap: int,
                       cap_bytes: int = 1 << 20) -> Connection:
    async def send(frame: str) -> None:  # a client that reads one frame per permit
        await permits.acquire()
        sent.append(frame)

    return Connection(conn_id="c1", run="r1", view=StateOnly(),  # type: ignore[arg-type]
                      scopes=set(), send=send, cap_bytes=cap_bytes, overflows_before_close=99,
                      overflow_window_s=10, max_unsent_answers=cap)


class StateOnly:
    """Stands in for a batch view: a resync writes one "state" frame."""

    def state_frames(self, scopes: set[str], resync: bool) -> list[str]:
        return ["state"]


async def test_reading_pauses_at_the_answer_cap_and_resumes_at_half() -> None:
    sent: list[str] = []
    permits = asyncio.Semaphore(0)
    conn = stepped_connection(sent, permits, cap=10)
    sender = asyncio.create_task(conn.run_sender())
    for i in range(30):
        conn.push(f"update {i}")  # updates do not count: they are dropped on overflow
    assert conn.may_read
    for i in range(10):
        conn.push(f"ack {i}", essential=True)
        assert conn.may_read == (i < 9), i
    waiting = asyncio.create_task(conn.answers_written())
    await settle()
    # The sender took "update 0" and waits for the client. Frame by frame: the
    # updates, then the acks; reading resumes once half of the ten are written.
    for written in range(1, 40):
        permits.release()
        await settle()
        assert len(sent) == written
        acks_taken = max(0, written - 29)  # the sender holds the next frame already
        assert conn.may_read == (acks_taken >= 5), (written, acks_taken)
        assert waiting.done() == conn.may_read
    permits.release()
    await settle()
    assert sent == [f"update {i}" for i in range(30)] + [f"ack {i}" for i in range(10)]
    conn.finish(1000, "done")
    await asyncio.wait_for(sender, 5)


async def test_answers_kept_through_an_overflow_still_count_until_written() -> None:
    sent: list[str] = []
    permits = asyncio.Semaphore(0)
    conn = stepped_connection(sent, permits, cap=3, cap_bytes=100)
    sender = asyncio.create_task(conn.run_sender())
    conn.push("first")
    await settle()  # the sender waits on the client with "first"
    for i in range(3):
        conn.push("x" * 60)
        conn.push("x" * 60)  # overflows: the updates go, the acks stay
        conn.push(f"ack {i}", essential=True)
    assert conn.needs_resync and not conn.may_read
    for _ in range(5):
        permits.release()  # "first", the resync's state, then the three acks
        await settle()
    assert sent == ["first", "state", "ack 0", "ack 1", "ack 2"] and conn.may_read
    conn.push("ack 3", essential=True)
    assert conn.may_read  # counted from zero again
    permits.release()
    conn.finish(1000, "done")
    await asyncio.wait_for(sender, 5)
