"""Speakerphone buttons (Jabra, Poly, ...) read as Linux input events and mapped to room actions.

Sources:

- Linux ``Documentation/input/event-codes.rst``: an EV_KEY event's value is 0 for release,
  1 for press and 2 for autorepeat; EV_SYN/SYN_REPORT ends a packet; EV_SYN/SYN_DROPPED
  means the client's event buffer overflowed: discard events up to and including the next
  SYN_REPORT, then query the device's state (EVIOCGKEY: python-evdev
  ``InputDevice.active_keys()``).
- ``Documentation/input/input.rst`` and python-evdev's ``eventio_async``: a device that is
  unplugged fails its read with ENODEV.
- USB HID Usage Tables, Telephony Device page (0x0B): hid-input maps Phone Mute to
  KEY_MICMUTE; which key code a hook, hang-up or volume button sends depends on the device
  and kernel, so the key-to-action mapping comes from the device profile, e.g.
  ``{"KEY_MICMUTE": "mute", "KEY_VOLUMEUP": "volume_up", "KEY_VOLUMEDOWN": "volume_down",
  "KEY_PHONE": "hook"}``.

Key repeat is deliberate: a held key repeats only for the actions in ``repeating``
(volume, by default), where holding means "keep going"; a toggle such as mute or hook never
repeats, since a second toggle would undo the first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

from evdev import InputDevice, InputEvent, ecodes

from roomsystem.drivers.errors import LinkClosed

logger = logging.getLogger(__name__)

DEFAULT_REPEATING = frozenset({"volume_up", "volume_down"})
MAX_SPURIOUS_WAKEUPS = 100


class KeyValue(IntEnum):
    """The value of an EV_KEY event."""

    RELEASE = 0
    PRESS = 1
    REPEAT = 2


@dataclass(frozen=True, slots=True)
class ButtonPress:
    """A room action's button went down (``pressed``) or up; ``repeat`` for autorepeat."""

    action: str
    pressed: bool
    timestamp: float
    repeat: bool = False


def key_code(name: str) -> int:
    """The evdev code of a key name (``"KEY_MICMUTE"`` -> 248); ValueError for other names."""
    if not name.startswith(("KEY_", "BTN_")) or name not in ecodes.ecodes:
        raise ValueError(f"{name!r} is not an evdev key name (KEY_... or BTN_...)")
    return int(ecodes.ecodes[name])


class ButtonMapper:
    """Turns evdev events into `ButtonPress` events; holds no I/O.

    ``mapping`` goes from evdev key names to action names; keys not in it are ignored.
    A release, repeat or second press of a key whose press was never seen is ignored too,
    so an action never ends or repeats without having started.
    """

    def __init__(
        self, mapping: Mapping[str, str], *, repeating: Collection[str] = DEFAULT_REPEATING
    ) -> None:
        self._actions = {key_code(name): action for name, action in mapping.items()}
        self._repeating = frozenset(repeating)
        self._held: set[int] = set()
        self._dropping = False
        self.needs_resync = False

    @property
    def held_actions(self) -> list[str]:
        return sorted(self._actions[code] for code in self._held)

    def feed(self, event: InputEvent) -> list[ButtonPress]:
        """The button events that one input event makes (usually none or one)."""
        if event.type == ecodes.EV_SYN:
            self._synchronise(event.code)
            return []
        if self._dropping or event.type != ecodes.EV_KEY or event.code not in self._actions:
            return []
        return self._key(event.code, event.value, event.timestamp())

    def resync(self, active_keys: Iterable[int], timestamp: float) -> list[ButtonPress]:
        """After dropped events: bring the held keys in line with the device's state."""
        self.needs_resync = False
        active = {code for code in active_keys if code in self._actions}
        released = sorted(self._held - active)
        pressed = sorted(active - self._held)
        self._held = active
        return [ButtonPress(self._actions[code], False, timestamp) for code in released] + [
            ButtonPress(self._actions[code], True, timestamp) for code in pressed
        ]

    def _synchronise(self, code: int) -> None:
        if code == ecodes.SYN_DROPPED:
            self._dropping = True
        elif code == ecodes.SYN_REPORT and self._dropping:
            self._dropping = False
            self.needs_resync = True

    def _key(self, code: int, value: int, timestamp: float) -> list[ButtonPress]:
        action = self._actions[code]
        held = code in self._held
        if value == KeyValue.PRESS and not held:
            self._held.add(code)
            return [ButtonPress(action, True, timestamp)]
        if value == KeyValue.RELEASE and held:
            self._held.discard(code)
            return [ButtonPress(action, False, timestamp)]
        if value == KeyValue.REPEAT and held and action in self._repeating:
            return [ButtonPress(action, True, timestamp, repeat=True)]
        return []


class KeyEventSource(Protocol):
    """What `ButtonReader` needs of an `evdev.InputDevice`."""

    def async_read_loop(self) -> Any: ...

    def active_keys(self) -> Any: ...


class ButtonReader:
    """Reads a key device and hands each mapped `ButtonPress` to ``on_press``.

    `run` returns only by raising: `LinkClosed` when the device goes away (unplugged:
    ENODEV), or whatever ``on_press`` raises. The owner cancels the task to stop it.
    """

    def __init__(
        self,
        device: KeyEventSource,
        mapper: ButtonMapper,
        on_press: Callable[[ButtonPress], None],
        *,
        name: str = "input device",
    ) -> None:
        self.device = device
        self.name = name
        self._mapper = mapper
        self._on_press = on_press

    @classmethod
    def open(
        cls, path: str, mapper: ButtonMapper, on_press: Callable[[ButtonPress], None]
    ) -> ButtonReader:
        """A reader of the evdev node ``path`` (``/dev/input/eventN`` or a by-id link)."""
        try:
            device = InputDevice(path)
        except OSError as exc:
            raise LinkClosed(f"cannot open {path}: {exc.strerror or exc}") from None
        return cls(device, mapper, on_press, name=path)

    async def run(self) -> None:
        wakeups = 0
        while wakeups < MAX_SPURIOUS_WAKEUPS:
            try:
                async for event in self.device.async_read_loop():
                    wakeups = 0
                    self._handle(event)
            except BlockingIOError:
                # evdev reads after the fd polled readable; the event can be gone by then.
                wakeups += 1
                continue
            except OSError as exc:
                raise LinkClosed(f"{self.name}: {exc.strerror or exc} (unplugged?)") from None
            raise LinkClosed(f"{self.name}: the event stream ended")
        raise LinkClosed(f"{self.name}: readable {wakeups} times without an event")

    def close(self) -> None:
        """Close the device when it is an evdev `InputDevice` (the reader may own it)."""
        if isinstance(self.device, InputDevice):
            self.device.close()

    def _handle(self, event: InputEvent) -> None:
        for press in self._mapper.feed(event):
            self._on_press(press)
        if self._mapper.needs_resync:
            logger.info("%s: events were dropped; reading the key state", self.name)
            try:
                active = self.device.active_keys()
            except OSError as exc:
                raise LinkClosed(f"{self.name}: {exc.strerror or exc}") from None
            for press in self._mapper.resync(active, event.timestamp()):
                self._on_press(press)
