"""Sending one command from outside a gateway and waiting for its outcome (the CLI).

A gateway's hub pipelines commands and routes outcomes for thousands of
connections; a one-off caller needs neither: it writes the command to its
partition's stream with ``reply`` set and reads the outcome from a reply stream
of its own, which it removes afterwards.
"""

from __future__ import annotations

import asyncio
import uuid

from redis.asyncio import Redis

from session_store.commands import Command, Outcome, decode_outcome, encode
from session_store.keys import Keys


class NoAnswer(TimeoutError):
    """No worker answered in time (none running, or the partition is being taken over)."""


async def request(redis: Redis, keys: Keys, command: Command, timeout_s: float = 10.0) -> Outcome:
    command.gw = f"cli-{uuid.uuid4().hex[:12]}"
    command.conn = "cli"
    command.reply = True
    replies = keys.replies(command.gw)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        await redis.xadd(keys.commands(keys.partition(command.batch)), {"c": encode(command)})
        while (left := deadline - loop.time()) > 0:
            reply = await redis.xread({replies: "0-0"}, count=1, block=max(1, int(left * 1000)))
            for _, entries in reply or ():
                return decode_outcome(entries[0][1][b"o"])
        raise NoAnswer(f"no worker answered within {timeout_s:g} s: is a worker running?")
    finally:
        await redis.delete(replies)
