"""The touch panel against a running demo room, tapped through Kivy's own touch events.

Each test runs the panel in a subprocess with an offscreen window (no X server needed) and
drives it over its pilot channel; the room runs in the test's event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from controlpanel.pilot import PilotError, PilotProcess
from roomsystem.devices.state import DevicesState
from roomsystem.meeting.policy import JoinRequest
from roomsystem.meeting.service import MeetingService
from roomsystem.meeting.state import MeetingState, ParticipantInfo
from tests.controlpanel.conftest import DemoRoom
from tests.controlpanel.screens import check_screenshot, screenshot_dir

PANEL = (1280, 800)
PANEL_LARGE = (1920, 1080)


@asynccontextmanager
async def panel(
    room: DemoRoom, tmp_path: Path, size: tuple[int, int] = PANEL
) -> AsyncIterator[PilotProcess]:
    app = PilotProcess(
        "controlpanel.panel",
        [
            "--api",
            room.url,
            "--token-file",
            str(room.token_file()),
            "--size",
            f"{size[0]}x{size[1]}",
            "--admin-pin",
            "2468",
        ],
        tmp_path / "kivy",
    )
    await app.start()
    try:
        await app.request("wait", name="room_name", contains=room.settings.room.name, timeout=30)
        await app.request("wait_connected", timeout=10)
        await app.request("wait", name="meet_now", contains="Meet now")
        yield app
    finally:
        status = await app.stop()
        assert status == 0, app.log.decode()[-3000:]


async def until(room: DemoRoom, predicate: Callable[[], bool], timeout: float = 5) -> None:
    """Wait for the room's state to satisfy ``predicate``, change by change."""
    assert room.daemon is not None
    async with asyncio.timeout(timeout):
        with room.daemon.room.bus.subscribe() as subscription:
            while not predicate():
                await subscription.next()


def meeting(room: DemoRoom) -> MeetingState:
    state = room.topic("meeting")
    assert isinstance(state, MeetingState)
    return state


def meeting_service(room: DemoRoom) -> MeetingService:
    assert room.daemon is not None
    service = next(s for s in room.daemon.room.services if s.name == "meeting")
    assert isinstance(service, MeetingService)
    return service


def participant(room: DemoRoom, participant_id: str) -> ParticipantInfo:
    return next(p for p in meeting(room).participants if p.id == participant_id)


def devices(room: DemoRoom) -> DevicesState:
    state = room.topic("devices")
    assert isinstance(state, DevicesState)
    return state


async def shoot(app: PilotProcess, path: Path, size: tuple[int, int]) -> None:
    # One frame for the last change to reach the screen.
    await asyncio.sleep(0.15)
    reply = await app.request("screenshot", path=str(path))
    assert tuple(reply["size"]) == size
    check_screenshot(path, size)


async def assert_targets_large_enough(app: PilotProcess) -> None:
    reply = await app.request("targets", min=48)
    assert reply["buttons"] > 0
    assert reply["small"] == [], reply["small"]


@pytest.mark.timeout(120)
async def test_meeting_from_the_panel_alone(demo_room: DemoRoom, tmp_path: Path) -> None:
    shots = screenshot_dir(tmp_path)
    async with panel(demo_room, tmp_path) as app:
        assert (await app.request("screen"))["screen"] == "home"
        await shoot(app, shots / "panel-home.png", PANEL)
        await assert_targets_large_enough(app)

        await app.request("tap", name="meet_now")
        await until(demo_room, lambda: meeting(demo_room).in_meeting)
        await app.request("wait", name="meeting_id", contains=meeting(demo_room).passcode)
        assert (await app.request("screen"))["screen"] == "meeting"
        shown = await app.request("info", name="meeting_id")
        digits = shown["text"].split("Passcode")[0].replace(" ", "")
        assert meeting(demo_room).id in digits

        # Two people join from their browsers and wait; the room admits them from the panel.
        service = meeting_service(demo_room)
        running = meeting(demo_room)
        ada, grace = (
            service.join(JoinRequest(running.id, name, "127.0.0.1", passcode=running.passcode))
            for name in ("Ada", "Grace")
        )
        assert ada.waiting
        await app.request("wait", name=f"admit_{ada.id}", contains="Admit")
        await app.request("tap", name=f"admit_{ada.id}")
        await until(demo_room, lambda: not participant(demo_room, ada.id).waiting)
        await app.request("wait", name=f"cohost_{ada.id}", contains="Co-host")
        await app.request("tap", name=f"cohost_{ada.id}")
        await until(demo_room, lambda: participant(demo_room, ada.id).role == "co_host")
        await app.request("tap", name="admit_all")
        await until(demo_room, lambda: not participant(demo_room, grace.id).waiting)
        await app.request("wait", name=f"mute_{grace.id}", contains="Ask to unmute")
        service.set_muted(grace.id, False)
        await app.request("wait", name=f"mute_{grace.id}", contains="Mute")
        await app.request("tap", name=f"mute_{grace.id}")
        await until(demo_room, lambda: participant(demo_room, grace.id).muted)
        await app.request("tap", name="lock")
        await until(demo_room, lambda: meeting(demo_room).locked)
        await app.request("wait", name="lock", contains="Unlock")

        assert devices(demo_room).audio.mic_muted is False
        await app.request("tap", name="mic_mute")
        await until(demo_room, lambda: devices(demo_room).audio.mic_muted)
        await app.request("wait", name="mic_mute", contains="Mic muted")
        await app.request("tap", name="mic_mute")
        await until(demo_room, lambda: not devices(demo_room).audio.mic_muted)

        await app.request("tap", name="volume_up")
        await until(demo_room, lambda: devices(demo_room).audio.volume == 60)
        await app.request("tap", name="preset_2")
        await app.request("wait", name="toast", not_contains="\u2026")
        assert (await app.request("info", name="toast"))["text"] == ""
        await shoot(app, shots / "panel-meeting.png", PANEL)
        await assert_targets_large_enough(app)

        await app.request("tap", name=f"remove_{grace.id}")
        await until(demo_room, lambda: len(meeting(demo_room).participants) == 1)
        await app.request("tap", name="end_meeting")
        await until(demo_room, lambda: not meeting(demo_room).in_meeting)
        await app.request("wait", name="meet_now", contains="Meet now")
        assert (await app.request("screen"))["screen"] == "home"


@pytest.mark.timeout(120)
async def test_agenda_and_settings_behind_the_pin(demo_room: DemoRoom, tmp_path: Path) -> None:
    shots = screenshot_dir(tmp_path)
    async with panel(demo_room, tmp_path) as app:
        await app.request("tap", name="nav_agenda")
        await app.request("wait", name="agenda_title", contains="Today")
        await shoot(app, shots / "panel-agenda.png", PANEL)

        await app.request("tap", name="nav_settings")
        with pytest.raises(PilotError, match="cannot tap"):
            await app.request("tap", name="display_off")
        for key in "1111":
            await app.request("tap", name=f"pin_{key}")
        await app.request("tap", name="pin_ok")
        await app.request("wait", name="pin", contains="Wrong PIN")
        await shoot(app, shots / "panel-settings-pin.png", PANEL)
        await assert_targets_large_enough(app)
        for key in "2468":
            await app.request("tap", name=f"pin_{key}")
        await app.request("tap", name="pin_ok")
        await app.request("wait", name="versions", contains=demo_room.url)
        await shoot(app, shots / "panel-settings.png", PANEL)
        await assert_targets_large_enough(app)

        await app.request("tap", name="display_off")
        display = next(d for d in devices(demo_room).devices if d.kind == "display")
        await until(
            demo_room,
            lambda: (
                next(d for d in devices(demo_room).devices if d.id == display.id).power is False
            ),
        )
        await app.request("tap", name="settings_lock")
        assert (await app.request("screen"))["screen"] == "home"
        await app.request("tap", name="nav_settings")
        await app.request("wait", name="pin", contains="Enter the admin PIN")
        assert not (await app.request("info", name="display_off"))["shown"]
        await app.request("tap", name="nav_home")


@pytest.mark.timeout(120)
async def test_panel_survives_a_daemon_restart(demo_room: DemoRoom, tmp_path: Path) -> None:
    shots = screenshot_dir(tmp_path)
    async with panel(demo_room, tmp_path) as app:
        assert (await app.request("info", name="mic_mute"))["disabled"] is False
        await demo_room.stop()
        await app.request("wait", name="banner_0", contains="unreachable", timeout=10)
        # Nothing stale may look live while the room is away.
        for control in ("mic_mute", "meet_now", "volume_up"):
            assert (await app.request("info", name=control))["disabled"] is True, control
        with pytest.raises(PilotError, match="cannot tap"):
            await app.request("tap", name="meet_now")
        await shoot(app, shots / "panel-unreachable.png", PANEL)

        await demo_room.start()
        await app.request("wait_connected", timeout=15)
        assert (await app.request("screen"))["banner"] == ""
        await app.request("tap", name="meet_now")
        await until(demo_room, lambda: meeting(demo_room).in_meeting)
        await app.request("wait", name="meeting_id", contains="Passcode")
        await app.request("tap", name="mic_mute")
        await until(demo_room, lambda: devices(demo_room).audio.mic_muted)


@pytest.mark.timeout(120)
async def test_layout_at_1920x1080(demo_room: DemoRoom, tmp_path: Path) -> None:
    shots = screenshot_dir(tmp_path)
    async with panel(demo_room, tmp_path, size=PANEL_LARGE) as app:
        await shoot(app, shots / "panel-home-1080p.png", PANEL_LARGE)
        await assert_targets_large_enough(app)
        await app.request("tap", name="meet_now")
        await app.request("wait", name="meeting_id", contains="Passcode")
        await shoot(app, shots / "panel-meeting-1080p.png", PANEL_LARGE)
        await assert_targets_large_enough(app)
