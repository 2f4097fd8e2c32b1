"""The speakerphone's buttons and the API set the room's microphone and volume; a kernel
CEC adapter brings the display behind it into the room."""

from __future__ import annotations

import asyncio
import errno
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from evdev import InputEvent, ecodes

from roomsystem.bus import StateBus
from roomsystem.config import Settings
from roomsystem.daemon import Daemon
from roomsystem.devices.service import DevicesService
from roomsystem.lifecycle import Service
from roomsystem.meeting.service import MeetingService
from roomsystem.meeting.state import MeetingState
from tests.devices.test_devices_room import until_devices
from tests.devices.test_discovery import class_node, usb_device

EVENT_NODE = "/dev/input/event5"


class FakeKeyboard:
    """An evdev device node as `ButtonReader` reads it, fed by the test.

    There is no /dev/uinput here to make a real one; the events are real `InputEvent`s.
    """

    def __init__(self) -> None:
        self.events: asyncio.Queue[InputEvent | OSError] = asyncio.Queue()
        self.opened = 0
        self.reopened = asyncio.Event()

    def open(self, path: str) -> FakeKeyboard:
        assert path == EVENT_NODE
        self.opened += 1
        if self.opened > 1:
            self.reopened.set()
        return self

    async def async_read_loop(self) -> AsyncIterator[InputEvent]:
        while True:
            event = await self.events.get()
            if isinstance(event, OSError):
                raise event
            yield event

    def active_keys(self) -> list[int]:
        return []

    def tap(self, key: int, *, hold_repeats: int = 0) -> None:
        for value in (1, *([2] * hold_repeats), 0):
            self.events.put_nowait(InputEvent(0, 0, ecodes.EV_KEY, key, value))
            self.events.put_nowait(InputEvent(0, 0, ecodes.EV_SYN, ecodes.SYN_REPORT, 0))


def jabra(sysfs: Path) -> None:
    speaker = usb_device(sysfs, "1-2", "0b0e", "0420", "Jabra SPEAK 510 USB")
    class_node(sysfs, "sound", "card2", speaker / "1-2:1.0" / "sound", id="USB")
    hid = speaker / "1-2:1.3" / "0003:0B0E:0420.0001" / "input" / "input7"
    class_node(sysfs, "input", "event5", hid)


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    root = tmp_path / "sys"
    jabra(root)
    return root


@pytest.fixture
def keyboard() -> FakeKeyboard:
    return FakeKeyboard()


def devices_room(settings: Settings, sysfs: Path, keyboard: FakeKeyboard) -> Daemon:
    """A room that runs only the device layer, on a made-up sysfs tree."""
    devices = settings.devices.model_copy(update={"rediscover_s": 0.5, "poll_s": 0.5})

    def services(settings: Settings, bus: StateBus) -> list[Service]:
        return [DevicesService(devices, settings.lifecycle, bus, sysfs, keyboard.open)]

    return Daemon(settings, services)


@pytest.fixture
async def room(settings: Settings, sysfs: Path, keyboard: FakeKeyboard) -> AsyncIterator[Daemon]:
    daemon = devices_room(settings, sysfs, keyboard)
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()


async def post(daemon: Daemon, path: str, body: dict[str, object]) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {daemon.room.api_token}"}
    async with aiohttp.ClientSession(daemon.url, headers=headers) as session:
        async with session.post(f"/api/v1/{path}", json=body) as response:
            return response.status, await response.json()


async def test_the_mute_button_toggles_the_room_microphone(
    room: Daemon, keyboard: FakeKeyboard
) -> None:
    await until_devices(room, lambda s: any(d.id == "usb-1-2" for d in s.devices))
    keyboard.tap(ecodes.KEY_MICMUTE)
    state = await until_devices(room, lambda s: s.audio.mic_muted)
    assert state.audio.last_button is not None
    assert state.audio.last_button.action == "mute"
    assert state.audio.last_button.device == "usb-1-2"
    keyboard.tap(ecodes.KEY_MICMUTE)
    await until_devices(room, lambda s: not s.audio.mic_muted)


async def test_picking_up_starts_a_meeting_and_hanging_up_ends_it(
    settings: Settings, sysfs: Path, keyboard: FakeKeyboard
) -> None:
    devices = settings.devices.model_copy(update={"rediscover_s": 0.5, "poll_s": 0.5})

    def services(settings: Settings, bus: StateBus) -> list[Service]:
        return [
            DevicesService(devices, settings.lifecycle, bus, sysfs, keyboard.open),
            MeetingService(settings.meeting, bus),
        ]

    room = Daemon(settings, services)
    await room.start()
    try:
        await until_devices(room, lambda s: any(d.id == "usb-1-2" for d in s.devices))
        await asyncio.wait_for(room.room.ready.wait(), 10)  # the meeting service listens
        with room.room.bus.subscribe() as subscription:
            meetings: list[str] = []  # each meeting id the topic showed, in order; "" for none

            async def until_meetings(count: int) -> None:
                async with asyncio.timeout(5):
                    while len(meetings) < count:
                        change = await subscription.next()
                        if isinstance(change.value, MeetingState):
                            meetings.append(change.value.id)

            async def press(key: int, *, hold_repeats: int = 0) -> None:
                before = room.room.bus.get("devices")
                keyboard.tap(key, hold_repeats=hold_repeats)
                await until_devices(room, lambda s: s != before)

            await press(ecodes.KEY_HANGUP_PHONE)  # nothing to hang up
            await press(ecodes.KEY_PICKUP_PHONE)
            await until_meetings(1)
            # Held, or picked up again in the meeting: the same meeting goes on.
            await press(ecodes.KEY_PICKUP_PHONE, hold_repeats=3)
            await press(ecodes.KEY_HANGUP_PHONE)
            await until_meetings(2)
            assert meetings[0] != ""
            assert meetings[1] == ""
        # One meeting in all: the first hang-up and the held pick-up changed nothing.
        (meeting,) = (s for s in room.room.services if isinstance(s, MeetingService))
        assert list(meeting._ended_ids) == [meetings[0]]
    finally:
        await room.stop()


async def test_a_held_volume_key_keeps_stepping(room: Daemon, keyboard: FakeKeyboard) -> None:
    await until_devices(room, lambda s: any(d.id == "usb-1-2" for d in s.devices))
    keyboard.tap(ecodes.KEY_VOLUMEUP, hold_repeats=3)
    await until_devices(room, lambda s: s.audio.volume == 70)
    keyboard.tap(ecodes.KEY_VOLUMEDOWN)
    await until_devices(room, lambda s: s.audio.volume == 65)


async def test_the_panel_and_the_button_set_the_same_state(
    room: Daemon, keyboard: FakeKeyboard
) -> None:
    await until_devices(room, lambda s: any(d.id == "usb-1-2" for d in s.devices))
    status, body = await post(room, "devices/audio/mute", {"on": True})
    assert status == 200
    assert body["mic_muted"] is True
    keyboard.tap(ecodes.KEY_MICMUTE)
    await until_devices(room, lambda s: not s.audio.mic_muted)
    status, body = await post(room, "devices/audio/mute", {})
    assert (status, body["mic_muted"]) == (200, True)
    status, body = await post(room, "devices/audio/volume", {"level": 101})
    assert status == 422
    assert "level" in str(body)
    status, body = await post(room, "devices/audio/volume", {"level": 20})
    assert (status, body["volume"]) == (200, 20)


async def test_a_lost_node_is_read_again_and_an_unplugged_device_is_let_go(
    room: Daemon, keyboard: FakeKeyboard, sysfs: Path
) -> None:
    await until_devices(room, lambda s: any(d.id == "usb-1-2" for d in s.devices))
    keyboard.events.put_nowait(OSError(errno.ENODEV, "No such device"))
    await asyncio.wait_for(keyboard.reopened.wait(), 5)
    keyboard.tap(ecodes.KEY_MICMUTE)
    await until_devices(room, lambda s: s.audio.mic_muted)

    shutil.rmtree(sysfs / "bus")
    await until_devices(room, lambda s: not s.devices)
    tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith("buttons:")]
    assert tasks == []


async def test_a_kernel_cec_adapter_brings_in_the_display_behind_it(
    settings: Settings, tmp_path: Path, keyboard: FakeKeyboard
) -> None:
    sysfs = tmp_path / "sys"
    class_node(sysfs, "cec", "cec0", sysfs / "devices/platform/hdmi/cec")
    class_node(sysfs, "cec", "cec1", sysfs / "devices/platform/hdmi2/cec")
    daemon = devices_room(settings, sysfs, keyboard)
    await daemon.start()
    try:
        state = await until_devices(daemon, lambda s: bool(s.devices))
        (display,) = state.devices
        assert display.id == "cec-cec0"
        assert display.profile == "generic-cec-display"
        assert display.certified is False
        assert display.connection == "cec Linux"
    finally:
        await daemon.stop()
