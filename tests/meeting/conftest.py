"""Fixtures for meeting tests: a room that hosts meetings on loopback, and real Chromium."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page, expect

from roomsystem.bus import StateBus
from roomsystem.config import Settings
from roomsystem.daemon import Daemon
from roomsystem.lifecycle import Service
from roomsystem.media.service import MediaService
from roomsystem.meeting.service import MeetingService
from roomsystem.meeting.site import WebSite
from tests.chromium import chromium

# Media on two shared cores can take longer than Playwright's 5 s default to show.
expect.set_options(timeout=10_000)


@pytest.fixture
def meeting_settings(settings: Settings) -> Settings:
    web = settings.web.model_copy(update={"listen": "127.0.0.1:0"})
    # A smaller picture than a room's 720p keeps two cores free enough for Chromium.
    media = settings.media.model_copy(update={"video_size": "640x360"})
    # aioice never offers 127.0.0.1 by itself; tests offer only it.
    webrtc = settings.webrtc.model_copy(update={"ice_host_addresses": ("127.0.0.1",)})
    return settings.model_copy(update={"web": web, "webrtc": webrtc, "media": media})


def meeting_services(settings: Settings, bus: StateBus) -> list[Service]:
    """The room's real media (capture from test sources, encode once, mix, compose) and
    meetings."""
    media = MediaService(
        settings.media, settings.webrtc, bus, state_dir=settings.state_dir, write_snapshots=False
    )
    return [media, MeetingService(settings.meeting, bus, recorder=media.recorder)]


@pytest.fixture
async def meeting_room(meeting_settings: Settings) -> AsyncIterator[Daemon]:
    """A started daemon that hosts meetings, with its HTTPS site on loopback."""
    running = Daemon(meeting_settings, meeting_services)
    await running.start()
    try:
        await asyncio.wait_for(running.room.ready.wait(), 10)
        yield running
    finally:
        await running.stop()
        current = asyncio.current_task()
        leftover = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        assert not leftover, f"tasks left running: {leftover}"


@pytest.fixture
def site(meeting_room: Daemon) -> WebSite:
    assert meeting_room.web is not None
    return meeting_room.web


async def until(
    condition: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 10
) -> None:
    """Wait until ``condition`` holds (media counters have no event to wait on)."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                outcome = condition()
                if not isinstance(outcome, bool):
                    outcome = await outcome
                if outcome:
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {timeout:g} s: {what}") from None


class Api:
    """The room's local API, as the panel uses it."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def command(self, path: str, expect: int = 200, **arguments: Any) -> dict[str, Any]:
        async with self.session.post(f"/api/v1/{path}", json=arguments) as response:
            body: dict[str, Any] = await response.json()
            assert response.status == expect, body
            return body

    async def meeting(self) -> dict[str, Any]:
        async with self.session.get("/api/v1/state") as response:
            state: dict[str, Any] = await response.json()
            return state["meeting"]


@pytest.fixture
async def api(meeting_room: Daemon) -> AsyncIterator[Api]:
    headers = {"Authorization": f"Bearer {meeting_room.room.api_token}"}
    async with aiohttp.ClientSession(meeting_room.url, headers=headers) as session:
        yield Api(session)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest.fixture
def new_page(browser: Browser) -> Any:
    """Open a page in a fresh browser context (a separate person) that accepts the room's certificate."""

    async def open_page() -> Page:
        context = await browser.new_context(ignore_https_errors=True)
        page = await context.new_page()
        page.set_default_timeout(10_000)
        return page

    return open_page
