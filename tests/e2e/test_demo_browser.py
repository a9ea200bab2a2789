"""The quick start's demo in a real browser: two tabs share one batch session."""

from __future__ import annotations

import pytest

from tests.browser_support.browser import Chromium

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


async def test_two_tabs_share_the_demo_batch_session(make_stack, chromium: Chromium, tmp_path):
    stack = make_stack(gateways=2, workers=1, demo="true")
    first, second = stack.gateway_urls  # the tabs even use different gateways
    other = await chromium.call("newPage")
    await chromium.goto(f"{first}/demo")
    await chromium.goto(f"{second}/demo", page=other)
    for page in (0, other):
        await chromium.wait_for("#conn.on", page=page)
    for _ in range(3):
        await chromium.click("#inc")
    await chromium.fill("#item", "hello from the second tab", page=other)
    await chromium.click("#add-form button[type=submit]", page=other)
    await chromium.wait_until("() => document.getElementById('counter').textContent === '3'",
                              page=other)
    await chromium.wait_until("() => document.querySelectorAll('#items li').length === 1")
    assert "hello from the second tab" in await chromium.text("#items")
    await chromium.screenshot(tmp_path / "demo-tab-2.png", page=other)
