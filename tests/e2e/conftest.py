"""End-to-end fixtures: stacks of real gateway and worker processes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from services.participant import Participant
from tests.browser_support.browser import (
    Chromium,
    require_browser,
)
from tests.e2e.stack import Stack

pytestmark = pytest.mark.e2e


@pytest.fixture
def make_stack(redis_url: str, database_url: str, make_prefix: Callable[[], str]
               ) -> Iterator[Callable[..., Stack]]:
    """Start a stack with its own key prefix; every stack is stopped after the test."""
    stacks: list[Stack] = []

    def start(**kwargs: Any) -> Stack:
        stack = Stack(redis_url, database_url, make_prefix(), **kwargs).start()
        stacks.append(stack)
        return stack

    yield start
    for stack in stacks:
        stack.stop()


@pytest.fixture
async def chromium(tmp_path: Path) -> AsyncIterator[Chromium]:
    await require_browser()
    async with Chromium.launch(tmp_path) as browser:
        yield browser
        problems = [entry for entry in await browser.logs() if entry["type"] == "pageerror"]
        assert not problems, f"errors in the pages: {problems}"


@pytest.fixture
def new_batch_id() -> Callable[[], str]:
    return lambda: f"b-{uuid.uuid4().hex[:10]}"


async def join(stack: Stack, batch_id: str, gateway: int = 0, **ws: Any) -> Participant:
    ticket = await stack.participant(batch_id, gateway)
    participant = await Participant(ticket["ws_url"], run_id=ticket["run_id"]).connect(**ws)
    await participant.wait_ready()
    return participant
