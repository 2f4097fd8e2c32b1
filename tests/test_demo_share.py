"""The whole room, as the demo runs it: `roomshare` finds it over mDNS (on loopback), shares
its test picture with the key the room shows, and the room display's composed picture shows
it; when the sender stops, the display goes back to its home screen within 2 s."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator

import numpy as np
import pytest

from roomsystem.config import Settings
from roomsystem.daemon import Daemon
from roomsystem.media.service import MediaService
from roomsystem.meeting.tls import CERT_FILE
from roomsystem.sharing.state import SharingState
from tests.meeting.conftest import until


@pytest.fixture
async def room(settings: Settings) -> AsyncIterator[Daemon]:
    daemon = Daemon(settings)
    await daemon.start()
    try:
        await asyncio.wait_for(daemon.room.ready.wait(), 15)
        yield daemon
    finally:
        await daemon.stop()


def media_of(daemon: Daemon) -> MediaService:
    return next(s for s in daemon.room.services if isinstance(s, MediaService))


def sharing_of(daemon: Daemon) -> SharingState:
    state = daemon.room.bus.get("sharing")
    assert isinstance(state, SharingState)
    return state


@pytest.mark.timeout(90)
async def test_roomshare_puts_its_test_picture_on_the_room_display(room: Daemon) -> None:
    media = media_of(room)
    await until(lambda: sharing_of(room).advertising, "the room announced over mDNS", 15)
    key = sharing_of(room).key
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "roomsystem.sharing.cli", "share", room.settings.room.name),
        *("--key", key, "--source", "test", "--size", "640x360", "--name", "Ada's laptop"),
        *("--interface", "127.0.0.1", "--cafile", str(room.settings.state_dir / CERT_FILE)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:

        def showing_the_share() -> bool:
            layout = media.display.layout()
            return layout is not None and layout.content_by == "Ada's laptop"

        await until(showing_the_share, "the share on the room display", 30)
        assert sharing_of(room).sharer == "Ada's laptop"
        layout = media.display.layout()
        picture = media.display.latest()
        assert layout is not None
        assert layout.content is not None
        assert picture is not None
        # The test picture's colour bars, not a flat placeholder, fill the content area.
        luma = picture.to_ndarray(format="gray")
        area = layout.content
        shown = luma[area.y : area.y + area.h, area.x : area.x + area.w]
        assert float(np.std(shown)) > 20

        process.send_signal(signal.SIGINT)
        await until(lambda: not showing_the_share(), "back to the home screen", 2)
        async with asyncio.timeout(10):
            _, stderr = await process.communicate()
        assert process.returncode == 0, stderr.decode()
        assert not sharing_of(room).active
        assert sharing_of(room).key != key  # a new key after each share
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()
