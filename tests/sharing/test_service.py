"""The sharing service in a room: snapshot, key rotation, meeting flag, API commands."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from roomsystem.bus import StateBus
from roomsystem.commands import CommandError
from roomsystem.config import LifecycleSettings, RoomSettings, Settings, SharingSettings
from roomsystem.daemon import Daemon
from roomsystem.meeting.state import MeetingState
from roomsystem.sharing.discover import browse
from roomsystem.sharing.service import FrameSink, Refusal, ShareRefused, SharingService
from roomsystem.sharing.state import SharingState
from tests.sharing.conftest import LOOPBACK, eventually, loopback_settings, room_bus


def make_service(bus: StateBus, settings: SharingSettings | None = None) -> SharingService:
    return SharingService(
        settings or loopback_settings(),
        RoomSettings(name="Room 4.12"),
        bus,
        web_listen="127.0.0.1:8443",
        display=FrameSink(),
        addresses=lambda: [LOOPBACK],
    )


def sharing_of(bus: StateBus) -> SharingState:
    state = bus.get("sharing")
    assert isinstance(state, SharingState)
    return state


@contextlib.asynccontextmanager
async def running(service: SharingService) -> AsyncIterator[SharingService]:
    task = asyncio.create_task(service.run())
    try:
        yield service
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await service.close()


async def test_the_snapshot_shows_the_key_and_the_share() -> None:
    bus = room_bus()
    service = make_service(bus)
    idle = sharing_of(bus)
    assert not idle.active
    assert len(idle.key) == 6
    assert idle.key_required
    assert idle.share_url == "https://127.0.0.1:8443/share"
    session = await service.begin_share("  Ada's   laptop ", "10.0.0.5", idle.key.lower())
    assert not isinstance(session, ShareRefused)
    busy = sharing_of(bus)
    assert (busy.active, busy.sharer, busy.address) == (True, "Ada's laptop", "10.0.0.5")
    assert busy.session == session.id
    assert busy.since == session.started_at
    service.end_share(session, "done")
    service.end_share(session, "done twice")  # idempotent
    assert session.end_reason == "done"
    after = sharing_of(bus)
    assert not after.active
    assert after.key != idle.key


async def test_a_share_during_a_meeting_is_marked_as_forwarded() -> None:
    bus = room_bus()
    service = make_service(bus)
    async with running(service):
        session = await service.begin_share("Ada", "10.0.0.5", sharing_of(bus).key)
        assert not isinstance(session, ShareRefused)
        assert not sharing_of(bus).in_meeting
        meeting = bus.get("meeting")
        assert isinstance(meeting, MeetingState)
        bus.publish("meeting", meeting.model_copy(update={"in_meeting": True}))
        await eventually(lambda: sharing_of(bus).in_meeting, 5, "in meeting")
        service.end_share(session)
        assert not sharing_of(bus).in_meeting


async def test_the_key_rotates_on_its_timer() -> None:
    bus = room_bus()
    service = make_service(bus, loopback_settings(key_rotate_min=0.01))  # 0.6 s
    first = sharing_of(bus).key
    due = sharing_of(bus).key_rotates_at
    assert due is not None
    seq = bus.seq
    service._publish()  # nothing changed, so nothing is sent
    assert bus.seq == seq
    async with running(service):
        await eventually(lambda: sharing_of(bus).key != first, 5, "rotated")
    later = sharing_of(bus).key_rotates_at
    assert later is not None
    assert later > due


@pytest.mark.parametrize(
    ("settings", "name", "reason"),
    [
        (loopback_settings(enabled=False), "Ada", Refusal.DISABLED),
        (loopback_settings(), "   ", Refusal.BAD_NAME),
        (loopback_settings(), "A" * 65, Refusal.BAD_NAME),
        (loopback_settings(), "bell\x07", Refusal.BAD_NAME),
    ],
)
async def test_refusals_name_their_reason(
    settings: SharingSettings, name: str, reason: Refusal
) -> None:
    bus = room_bus()
    service = make_service(bus, settings)
    refused = await service.begin_share(name, "10.0.0.5", sharing_of(bus).key)
    assert isinstance(refused, ShareRefused)
    assert refused.reason is reason
    assert refused.message
    assert not sharing_of(bus).active


async def test_without_a_required_key_any_key_shares_and_none_is_shown() -> None:
    bus = room_bus()
    service = make_service(bus, loopback_settings(require_key=False))
    assert sharing_of(bus).key == ""
    session = await service.begin_share("Ada", "10.0.0.5", "")
    assert not isinstance(session, ShareRefused)
    await service.close()
    assert session.end_reason == "the room stopped"


async def test_a_pairing_code_cannot_be_rotated_from_the_panel() -> None:
    bus = room_bus()
    service = make_service(bus, loopback_settings(pairing_code="Room412"))
    assert sharing_of(bus).key == "ROOM412"
    rotate = service.commands()[2]
    with pytest.raises(CommandError, match="fixed pairing code"):
        await rotate.handler(rotate.arguments())


@pytest.fixture
def room_settings(tmp_path: Path) -> Settings:
    base = Settings()
    return base.model_copy(
        update={
            "state_dir": tmp_path / "state",
            "room": RoomSettings(name="Room 4.12"),
            "api": base.api.model_copy(update={"listen": "127.0.0.1:0"}),
            "sharing": loopback_settings(),
            "lifecycle": LifecycleSettings(
                retry_initial_s=0.05, retry_max_s=0.2, setup_timeout_s=2
            ),
        }
    )


@pytest.mark.timeout(30)
async def test_in_the_daemon_the_room_is_announced_and_the_api_stops_a_share(
    room_settings: Settings,
) -> None:
    made: list[SharingService] = []

    def services(settings: Settings, bus: StateBus) -> list[SharingService]:
        made.append(make_service(bus, settings.sharing))
        return made

    daemon = Daemon(room_settings, services)
    await daemon.start()
    try:
        await asyncio.wait_for(daemon.room.ready.wait(), 10)
        service = made[0]
        await eventually(lambda: sharing_of(daemon.room.bus).advertising, 10, "announced")
        rooms = await browse(LOOPBACK, wait_s=1.0)
        room_id = daemon.room.bus.get("room").model_dump()["id"]
        assert [(r.name, r.room_id) for r in rooms] == [("Room 4-12", room_id)]
        assert sharing_of(daemon.room.bus).advertised_name == "Room 4-12"
        session = await service.begin_share("Ada", "10.0.0.5", sharing_of(daemon.room.bus).key)
        assert not isinstance(session, ShareRefused)
        headers = {"Authorization": f"Bearer {daemon.room.api_token}"}
        async with aiohttp.ClientSession(daemon.url, headers=headers) as client:
            async with client.get("/api/v1/state") as reply:
                state = (await reply.json())["sharing"]
            assert state["active"] is True
            assert state["sharer"] == "Ada"
            async with client.post("/api/v1/sharing/stop", json={}) as reply:
                assert reply.status == 200, await reply.text()
                assert await reply.json() == {"stopped": True, "sharer": "Ada"}
            async with client.post("/api/v1/sharing/confirm", json={"accept": True}) as reply:
                assert reply.status == 409
        assert session.ended.is_set()
        assert not sharing_of(daemon.room.bus).active
    finally:
        await daemon.stop()
    assert not sharing_of(daemon.room.bus).advertising
    current = asyncio.current_task()
    assert not [t for t in asyncio.all_tasks() if t is not current and not t.done()]


async def test_a_share_that_never_sends_a_picture_ends_by_itself() -> None:
    bus = room_bus()
    service = make_service(bus)
    service.first_frame_timeout_s = 0.3
    session = await service.begin_share("Ada", "10.0.0.5", sharing_of(bus).key)
    assert not isinstance(session, ShareRefused)
    async with asyncio.timeout(3):
        await session.ended.wait()
    assert session.end_reason == "no picture came from the sender"
    assert not sharing_of(bus).active
    await service.close()
