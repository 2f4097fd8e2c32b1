"""A sharing room on loopback: the service, its HTTPS share endpoint and loopback-only ICE."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web

from roomsystem.bus import StateBus
from roomsystem.config import RoomSettings, SharingSettings
from roomsystem.media.ice import use_host_addresses
from roomsystem.meeting.state import MeetingPolicy, MeetingState
from roomsystem.meeting.tls import ensure_self_signed, server_context
from roomsystem.sharing.endpoint import ShareEndpoint, add_share_routes
from roomsystem.sharing.service import FrameSink, SharingService
from roomsystem.sharing.state import SharingState
from roomsystem.state import RoomInfo
from roomsystem.statedir import StateDir

LOOPBACK = "127.0.0.1"


def room_bus(room_id: str = "0a1b2c3d-room") -> StateBus:
    """A bus with the topics the sharing service reads and writes."""
    policy = MeetingPolicy(
        waiting_room=True,
        join_before_host=False,
        mute_on_entry=True,
        video_off_on_entry=True,
        host_only_sharing=True,
    )
    return StateBus(
        {
            "room": RoomInfo(
                id=room_id,
                name="Demo Room",
                location="",
                timezone="UTC",
                version="0",
                started_at=datetime.now(UTC),
            ),
            "meeting": MeetingState(policy=policy),
            "sharing": SharingState(),
        }
    )


def loopback_settings(**changes: object) -> SharingSettings:
    base = {
        "mdns_interfaces": (LOOPBACK,),
        "mdns_refresh_s": 0.5,
        "stall_timeout_s": 1.0,
        "lockout_initial_s": 30.0,
    }
    return SharingSettings.model_validate({**base, **changes})


@pytest.fixture
def loopback_ice() -> Iterator[None]:
    """aiortc offers 127.0.0.1 as its only host candidate while the test runs."""
    undo = use_host_addresses([LOOPBACK])
    yield
    undo()


@dataclass
class ShareRoom:
    service: SharingService
    display: FrameSink
    endpoint: ShareEndpoint
    url: str
    bus: StateBus
    cafile: Path

    @property
    def state(self) -> SharingState:
        state = self.bus.get("sharing")
        assert isinstance(state, SharingState)
        return state


@pytest.fixture
def sharing_settings() -> SharingSettings:
    return loopback_settings()


@pytest.fixture
async def share_room(
    tmp_path: Path, sharing_settings: SharingSettings, loopback_ice: None
) -> AsyncIterator[ShareRoom]:
    """The sharing service running with its endpoint on an HTTPS site on 127.0.0.1."""
    bus = room_bus()
    display = FrameSink()
    service = SharingService(
        sharing_settings,
        RoomSettings(name="Demo Room"),
        bus,
        web_listen="127.0.0.1:0",
        display=display,
        addresses=lambda: [LOOPBACK],
    )
    app = web.Application()
    endpoint = add_share_routes(app, service)
    (tmp_path / "state").mkdir()
    state_dir = StateDir(tmp_path / "state")
    files = ensure_self_signed(state_dir, ["127.0.0.1", "localhost"])
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, LOOPBACK, 0, ssl_context=server_context(files)).start()
    port = runner.addresses[0][1]
    await service.set_web_port(port)
    running = asyncio.create_task(service.run())
    try:
        yield ShareRoom(service, display, endpoint, service.share_url, bus, files.cert)
    finally:
        await runner.cleanup()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await service.close()


def client_ssl(cafile: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cafile))


async def eventually(predicate: object, timeout: float = 10.0, what: str = "condition") -> None:
    """Wait (bounded) until ``predicate()`` is true."""
    assert callable(predicate)
    step = 0.02
    for _ in range(int(timeout / step) + 1):
        if predicate():
            return
        await asyncio.sleep(step)
    raise AssertionError(f"{what}: not reached within {timeout} s")
