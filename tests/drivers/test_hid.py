"""Speakerphone buttons: the pure key mapper fed `evdev.InputEvent`s, and the reader on
event sources with evdev's `async_read_loop` interface (a scripted one, and evdev's own
asyncio reader over a pipe)."""

from __future__ import annotations

import asyncio
import collections
import errno
import os
from collections.abc import AsyncIterator, Iterator

import pytest
from evdev import InputEvent, ecodes
from evdev.eventio_async import EventIO
from hypothesis import given
from hypothesis import strategies as st

from roomsystem.drivers.errors import LinkClosed
from roomsystem.drivers.hid import ButtonMapper, ButtonPress, ButtonReader, key_code

JABRA = {
    "KEY_MICMUTE": "mute",
    "KEY_VOLUMEUP": "volume_up",
    "KEY_VOLUMEDOWN": "volume_down",
    "KEY_PHONE": "hook",
}


def key(name: str, value: int, at: float = 1.0) -> InputEvent:
    seconds = int(at)
    return InputEvent(seconds, round((at - seconds) * 1e6), ecodes.EV_KEY, key_code(name), value)


def syn(code: int = ecodes.SYN_REPORT, at: float = 1.0) -> InputEvent:
    return InputEvent(int(at), 0, ecodes.EV_SYN, code, 0)


def feed_all(mapper: ButtonMapper, events: list[InputEvent]) -> list[ButtonPress]:
    return [press for event in events for press in mapper.feed(event)]


# -- the mapper


def test_key_names() -> None:
    assert key_code("KEY_MICMUTE") == 248
    assert key_code("BTN_0") == 256
    for bad in ("KEY_NO_SUCH_KEY", "EV_KEY", "micmute"):
        with pytest.raises(ValueError, match="not an evdev key name"):
            key_code(bad)
    with pytest.raises(ValueError, match="KEY_MUTEE"):
        ButtonMapper({"KEY_MUTEE": "mute"})


def test_press_and_release_with_timestamps() -> None:
    mapper = ButtonMapper(JABRA)
    presses = feed_all(
        mapper,
        [
            InputEvent(1700000000, 250000, ecodes.EV_MSC, ecodes.MSC_SCAN, 0xB002F),
            key("KEY_MICMUTE", 1, at=1700000000.25),
            syn(),
            key("KEY_MICMUTE", 0, at=1700000000.5),
            syn(),
        ],
    )
    assert presses == [
        ButtonPress("mute", True, 1700000000.25),
        ButtonPress("mute", False, 1700000000.5),
    ]


def test_unknown_keys_are_ignored() -> None:
    mapper = ButtonMapper(JABRA)
    assert feed_all(mapper, [key("KEY_A", 1), key("KEY_A", 0), key("KEY_PLAYPAUSE", 1)]) == []


def test_repeat_only_for_repeating_actions() -> None:
    mapper = ButtonMapper(JABRA)
    presses = feed_all(
        mapper,
        [
            key("KEY_VOLUMEUP", 1, 1.0),
            key("KEY_VOLUMEUP", 2, 1.25),
            key("KEY_VOLUMEUP", 2, 1.3),
            key("KEY_VOLUMEUP", 0, 1.4),
            key("KEY_MICMUTE", 1, 2.0),
            key("KEY_MICMUTE", 2, 2.25),
            key("KEY_MICMUTE", 0, 2.5),
        ],
    )
    assert presses == [
        ButtonPress("volume_up", True, 1.0),
        ButtonPress("volume_up", True, 1.25, repeat=True),
        ButtonPress("volume_up", True, 1.3, repeat=True),
        ButtonPress("volume_up", False, 1.4),
        ButtonPress("mute", True, 2.0),
        ButtonPress("mute", False, 2.5),
    ]


def test_repeating_can_be_chosen_by_the_profile() -> None:
    mapper = ButtonMapper(JABRA, repeating=())
    assert feed_all(mapper, [key("KEY_VOLUMEUP", 1), key("KEY_VOLUMEUP", 2)]) == [
        ButtonPress("volume_up", True, 1.0)
    ]


def test_events_without_a_seen_press_are_ignored() -> None:
    mapper = ButtonMapper(JABRA)
    # The reader started while the hook key was held: no release, no repeat, no double press.
    assert feed_all(mapper, [key("KEY_PHONE", 2), key("KEY_PHONE", 0)]) == []
    assert feed_all(mapper, [key("KEY_PHONE", 1), key("KEY_PHONE", 1)]) == [
        ButtonPress("hook", True, 1.0)
    ]
    assert mapper.held_actions == ["hook"]


def test_dropped_events_are_discarded_until_report_then_resynced() -> None:
    mapper = ButtonMapper(JABRA)
    feed_all(mapper, [key("KEY_MICMUTE", 1), syn()])
    lost = [syn(ecodes.SYN_DROPPED), key("KEY_MICMUTE", 0), key("KEY_VOLUMEDOWN", 1), syn()]
    assert feed_all(mapper, lost) == []
    assert mapper.needs_resync
    presses = mapper.resync([key_code("KEY_VOLUMEDOWN"), key_code("KEY_A")], 3.0)
    assert presses == [ButtonPress("mute", False, 3.0), ButtonPress("volume_down", True, 3.0)]
    assert not mapper.needs_resync
    assert mapper.held_actions == ["volume_down"]


events = st.builds(
    InputEvent,
    st.integers(0, 2**31),
    st.integers(0, 999999),
    st.sampled_from([ecodes.EV_KEY, ecodes.EV_SYN, ecodes.EV_MSC, ecodes.EV_REL]),
    st.sampled_from([0, 3, 113, 114, 115, 169, 248]),
    st.integers(-1, 3),
)


@given(st.lists(events, max_size=60))
def test_mapper_fuzz_keeps_actions_consistent(stream: list[InputEvent]) -> None:
    mapper = ButtonMapper(JABRA)
    down: set[str] = set()
    for event in stream:
        for press in mapper.feed(event):
            if press.repeat:
                assert press.action in down
                assert press.action.startswith("volume")
            elif press.pressed:
                assert press.action not in down
                down.add(press.action)
            else:
                assert press.action in down
                down.remove(press.action)
    assert sorted(down) == mapper.held_actions


# -- the reader


class ScriptedDevice:
    """Offers `async_read_loop` like evdev's InputDevice, playing back a script."""

    def __init__(self, *steps: InputEvent | BaseException, active: list[int] | None = None):
        self._steps = collections.deque(steps)
        self.active = active or []

    async def _loop(self) -> AsyncIterator[InputEvent]:
        while self._steps:
            step = self._steps.popleft()
            if isinstance(step, BaseException):
                raise step
            yield step

    def async_read_loop(self) -> AsyncIterator[InputEvent]:
        return self._loop()

    def active_keys(self) -> list[int]:
        return self.active


async def read_until_closed(device: object, mapper: ButtonMapper) -> tuple[list[ButtonPress], str]:
    presses: list[ButtonPress] = []
    reader = ButtonReader(device, mapper, presses.append, name="Jabra Speak 510")  # type: ignore[arg-type]
    with pytest.raises(LinkClosed) as closed:
        async with asyncio.timeout(2):
            await reader.run()
    return presses, str(closed.value)


async def test_reader_maps_events_until_unplugged() -> None:
    device = ScriptedDevice(
        key("KEY_MICMUTE", 1),
        syn(),
        key("KEY_MICMUTE", 0),
        OSError(errno.ENODEV, "No such device"),
    )
    presses, closed = await read_until_closed(device, ButtonMapper(JABRA))
    assert [p.pressed for p in presses] == [True, False]
    assert closed == "Jabra Speak 510: No such device (unplugged?)"


async def test_reader_resyncs_after_dropped_events() -> None:
    device = ScriptedDevice(
        key("KEY_PHONE", 1),
        syn(ecodes.SYN_DROPPED),
        key("KEY_PHONE", 0),
        syn(at=5.0),
        active=[],
    )
    presses, closed = await read_until_closed(device, ButtonMapper(JABRA))
    assert presses == [ButtonPress("hook", True, 1.0), ButtonPress("hook", False, 5.0)]
    assert "stream ended" in closed


async def test_reader_survives_spurious_wakeups() -> None:
    device = ScriptedDevice(BlockingIOError(), key("KEY_VOLUMEUP", 1), BlockingIOError())
    presses, closed = await read_until_closed(device, ButtonMapper(JABRA))
    assert presses == [ButtonPress("volume_up", True, 1.0)]
    assert "stream ended" in closed


async def test_reader_gives_up_on_endless_wakeups() -> None:
    device = ScriptedDevice(*[BlockingIOError() for _ in range(200)])
    _, closed = await read_until_closed(device, ButtonMapper(JABRA))
    assert "without an event" in closed


def test_open_missing_device() -> None:
    with pytest.raises(LinkClosed, match="cannot open /dev/input/event99"):
        ButtonReader.open("/dev/input/event99", ButtonMapper(JABRA), print)


class PipeInputDevice(EventIO):
    """evdev's asyncio reader (`EventIO.async_read_loop`) on a pipe instead of /dev/input."""

    def __init__(self) -> None:
        self.fd, self._wake = os.pipe()
        os.set_blocking(self.fd, False)
        self._queued: collections.deque[InputEvent] = collections.deque()
        self.unplugged = False

    def push(self, *events: InputEvent) -> None:
        self._queued.extend(events)
        os.write(self._wake, b"!")

    def unplug(self) -> None:
        self.unplugged = True
        os.write(self._wake, b"!")

    def read(self) -> Iterator[InputEvent]:
        os.read(self.fd, 4096)
        if self.unplugged:
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
        batch, self._queued = list(self._queued), collections.deque()
        return iter(batch)

    def active_keys(self) -> list[int]:
        return []

    def close(self) -> None:
        super().close()
        os.close(self.fd)
        os.close(self._wake)


async def test_reader_on_evdevs_own_async_read_loop() -> None:
    device = PipeInputDevice()
    presses: asyncio.Queue[ButtonPress] = asyncio.Queue()
    reader = ButtonReader(device, ButtonMapper(JABRA), presses.put_nowait, name="pipe")
    task = asyncio.create_task(reader.run())
    try:
        device.push(key("KEY_VOLUMEDOWN", 1, 7.5), syn(), key("KEY_VOLUMEDOWN", 2, 7.75))
        async with asyncio.timeout(2):
            assert await presses.get() == ButtonPress("volume_down", True, 7.5)
            assert await presses.get() == ButtonPress("volume_down", True, 7.75, repeat=True)
        device.push(key("KEY_VOLUMEDOWN", 0, 8.0))
        async with asyncio.timeout(2):
            assert await presses.get() == ButtonPress("volume_down", False, 8.0)
        device.unplug()
        with pytest.raises(LinkClosed, match="pipe: No such device"):
            async with asyncio.timeout(2):
                await task
    finally:
        task.cancel()
        device.close()
