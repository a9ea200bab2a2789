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
