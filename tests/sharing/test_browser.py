"""The browser share page in real headless Chromium, with its fake screen capture."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Page

from tests.chromium import chromium
from tests.sharing.conftest import ShareRoom, eventually


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


async def share_page(browser: Browser, room: ShareRoom, key: str) -> Page:
    context = await browser.new_context(ignore_https_errors=True)
    page = await context.new_page()
    page.set_default_timeout(10_000)
    await page.goto(room.url)
    await page.fill("#name", "Grace's browser")
    await page.fill("#key", key)
    await page.click("#start")
    return page


@pytest.mark.timeout(60)
async def test_a_browser_shares_its_screen_with_the_key(
    share_room: ShareRoom, browser: Browser
) -> None:
    page = await share_page(browser, share_room, share_room.state.key.lower())
    await eventually(lambda: share_room.display.frames >= 5, 30, "frames from Chromium")
    assert share_room.state.sharer == "Grace's browser"
    await page.wait_for_function(
        "document.getElementById('status').textContent.includes('You are sharing')"
    )
    await page.click("#stop")
    await eventually(lambda: not share_room.state.active, 5, "share stopped")
    assert share_room.display.session_id is None
    await page.wait_for_function(
        "document.getElementById('status').textContent.includes('You stopped sharing')"
    )


@pytest.mark.timeout(60)
async def test_a_browser_with_a_wrong_key_is_told_and_shows_nothing(
    share_room: ShareRoom, browser: Browser
) -> None:
    wrong = "ZZZZZZ" if share_room.state.key != "ZZZZZZ" else "YYYYYY"
    page = await share_page(browser, share_room, wrong)
    await page.wait_for_function("document.getElementById('status').classList.contains('error')")
    assert "not the sharing key" in await page.inner_text("#status")
    assert share_room.display.frames == 0
    assert not share_room.state.active


@pytest.mark.timeout(60)
async def test_a_closed_browser_tab_frees_the_display(
    share_room: ShareRoom, browser: Browser
) -> None:
    page = await share_page(browser, share_room, share_room.state.key)
    await eventually(lambda: share_room.display.frames >= 3, 30, "frames from Chromium")
    await page.context.close()
    await eventually(lambda: not share_room.state.active, 3, "display freed")
