"""The devices service: profiles, discovery, one coordinator per device, and room behaviour.

Phases: *profiles* loads and checks the profiles (a broken one is reported and skipped),
*discover* finds USB devices in sysfs and adds the configured network and serial devices,
*connect* starts a coordinator per device and gives each a first chance to answer. While
the room runs, USB is rescanned so that a replug is noticed within seconds, and the display
follows the room: on for a meeting or a share, standby after a configurable idle time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from roomsystem.bus import StateBus
from roomsystem.commands import Arguments, Command, CommandError
from roomsystem.config import AddedDevice, DevicesSettings, LifecycleSettings
from roomsystem.devices.buttons import ButtonWatcher, InputOpener, open_input_device
from roomsystem.devices.controls import Connection, open_control
from roomsystem.devices.coordinator import Coordinator, DeviceOffline
from roomsystem.devices.discovery import CecAdapter, UsbDevice, scan_cec, scan_usb
from roomsystem.devices.profiles import (
    DEFAULT_PROFILES_DIR,
    Candidate,
    Profile,
    ProfileSet,
    load_profiles,
)
from roomsystem.devices.state import (
    ButtonEvent,
    DeviceKind,
    DevicesState,
    DeviceStatus,
    RoomAudio,
)
from roomsystem.drivers.camera import Direction
from roomsystem.drivers.errors import DeviceRejected, DriverError
from roomsystem.drivers.hid import ButtonPress
from roomsystem.errors import ConfigError
from roomsystem.lifecycle import Backoff, Phase, Service
from roomsystem.meeting.state import MeetingState
from roomsystem.sharing.state import SharingState

logger = logging.getLogger(__name__)

FIRST_CONTACT_S = 3.0
VOLUME_STEP = 5


class _DeviceArgs(Arguments):
    device: str | None = Field(
        default=None, description="device id; default: the first of its kind"
    )


class PresetArgs(_DeviceArgs):
    action: Literal["recall", "set", "reset"] = "recall"
    number: int = Field(ge=0, le=255)


class MoveArgs(_DeviceArgs):
    direction: Literal[
        "up", "down", "left", "right", "up_left", "up_right", "down_left", "down_right", "stop"
    ]
    speed: int = Field(default=8, ge=1, le=24)


class PositionArgs(_DeviceArgs):
    pan: int | None = None
    tilt: int | None = None
    zoom: int | None = Field(default=None, ge=0)
    speed: int = Field(default=12, ge=1, le=24)


class PowerArgs(_DeviceArgs):
    on: bool


class InputArgs(_DeviceArgs):
    source: str = Field(min_length=1, max_length=32)


class VolumeArgs(_DeviceArgs):
    level: int = Field(ge=0, le=100)


class MuteArgs(_DeviceArgs):
    on: bool


class ReconnectArgs(Arguments):
    device: str


class MicMuteArgs(Arguments):
    on: bool | None = Field(default=None, description="true or false; omitted: toggle")


class RoomVolumeArgs(Arguments):
    level: int = Field(ge=0, le=100)


class DevicesService(Service):
    """Owns every device coordinator and publishes the ``devices`` topic."""

    name = "devices"

    def __init__(
        self,
        settings: DevicesSettings,
        lifecycle: LifecycleSettings,
        bus: StateBus,
        sysfs: Path = Path("/sys"),
        open_input: InputOpener = open_input_device,
    ) -> None:
        self.settings = settings
        self._lifecycle = lifecycle
        self._bus = bus
        self._sysfs = sysfs
        self.profiles = ProfileSet.empty()
        self.coordinators: dict[str, Coordinator] = {}
        self.audio = RoomAudio()
        self._buttons = ButtonWatcher(self._button_pressed, settings.rediscover_s, open_input)

    # -- phases

    async def setup(self, phase: Phase) -> None:
        if phase is Phase.PROFILES:
            self._load_profiles()
        elif phase is Phase.DISCOVER:
            await self._sync_coordinators(start=False)
        elif phase is Phase.CONNECT:
            for coordinator in self.coordinators.values():
                coordinator.start()
            await self._first_contact()

    def _load_profiles(self) -> None:
        root = self.settings.profiles_dir or DEFAULT_PROFILES_DIR
        if not root.is_dir():
            raise ConfigError(f"profiles directory {root} does not exist")
        self.profiles = load_profiles(root)  # logs each broken profile it skips
        self._publish()

    async def _first_contact(self) -> None:
        """Give every device a moment to answer, so 'ready' shows which ones are there."""
        deadline = time.monotonic() + FIRST_CONTACT_S
        with self._bus.subscribe() as subscription:
            while not all(c.status.online or c.status.error for c in self.coordinators.values()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await subscription.next()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._rediscover(), name="devices:rediscover")
            tasks.create_task(self._follow_the_room(), name="devices:automation")

    async def close(self) -> None:
        await self._buttons.close()
        coordinators, self.coordinators = list(self.coordinators.values()), {}
        await asyncio.gather(*(c.close() for c in coordinators))

    # -- discovery

    async def _rediscover(self) -> None:
        while True:
            await asyncio.sleep(self.settings.rediscover_s)
            await self._sync_coordinators(start=True)

    async def _sync_coordinators(self, start: bool) -> None:
        wanted = {status.id: (status, connection) for status, connection in self._wanted()}
        for gone in set(self.coordinators) - set(wanted):
            coordinator = self.coordinators.pop(gone)
            logger.info("%s was unplugged", coordinator.status.name)
            await self._buttons.forget(gone)
            await coordinator.close()
        for device_id, (status, connection) in wanted.items():
            if device_id in self.coordinators:
                continue
            logger.info("found %s (%s)", status.name, status.connection)
            coordinator = self._coordinator(status, connection)
            self.coordinators[device_id] = coordinator
            profile = self.profiles.get(status.profile)
            if profile is not None:
                self._buttons.watch(device_id, connection.inputs, profile.buttons)
            if start:
                coordinator.start()
        self._publish()

    def _wanted(self) -> list[tuple[DeviceStatus, Connection]]:
        found = [self._added(device) for device in self.settings.add]
        if self.settings.discover_usb:
            found += [entry for usb in scan_usb(self._sysfs) if (entry := self._usb(usb))]
        if self.settings.discover_cec:
            found += [self._cec(adapter) for adapter in scan_cec(self._sysfs)]
        return [entry for entry in found if entry is not None]

    def _added(self, device: AddedDevice) -> tuple[DeviceStatus, Connection] | None:
        profile = self.profiles.get(device.profile)
        if profile is None:
            logger.error("device %s: no profile named %r", device.id, device.profile)
            return None
        control = profile.control
        connection = Connection(
            protocol=control.protocol,
            serial=device.serial,
            host=device.host,
            port=device.port or control.port,
            baudrate=control.baudrate,
            address=device.address if device.address is not None else control.address,
            timeout_s=control.timeout_s,
            password_file=device.password_file,
        )
        return self._status(device.id, device.name, profile, connection), connection

    def _usb(self, usb: UsbDevice) -> tuple[DeviceStatus, Connection] | None:
        candidate = Candidate(
            kind=None, usb_id=usb.usb_id, bcd_device=usb.bcd_device, names=usb.names
        )
        profile = self.profiles.match(candidate)
        if profile is None:
            return None
        control = profile.control
        connection = Connection(
            protocol=control.protocol,
            serial=usb.serial[0] if usb.serial else None,
            video=usb.video[0] if usb.video else None,
            baudrate=control.baudrate,
            address=control.address,
            timeout_s=control.timeout_s,
            inputs=usb.inputs,
        )
        name = usb.product or f"{profile.device.vendor} {profile.device.model}"
        return self._status(f"usb-{usb.sysfs_name}", name, profile, connection), connection

    def _cec(self, adapter: CecAdapter) -> tuple[DeviceStatus, Connection] | None:
        """The display behind a kernel CEC adapter, driven with the generic CEC profile."""
        profile = next(
            (
                p
                for p in self.profiles.profiles
                if p.generic and p.device.kind == "display" and p.control.protocol == "cec"
            ),
            None,
        )
        if profile is None or adapter.port is None:
            if adapter.port is None:
                logger.debug("%s: libCEC drives only the first kernel adapter", adapter.node)
            return None
        connection = Connection(
            protocol="cec", serial=adapter.port, timeout_s=profile.control.timeout_s
        )
        name = f"Display on {adapter.node}"
        return self._status(f"cec-{adapter.name}", name, profile, connection), connection

    def _status(
        self, device_id: str, name: str, profile: Profile, connection: Connection
    ) -> DeviceStatus:
        display = profile.display
        camera = profile.camera
        return DeviceStatus(
            id=device_id,
            kind=DeviceKind(profile.device.kind),
            name=name or f"{profile.device.vendor} {profile.device.model}",
            profile=profile.name,
            certified=profile.device.certified,
            connection=connection.describe(),
            inputs=tuple(display.inputs) if display else (),
            presets=camera.presets if camera else 0,
        )

    def _coordinator(self, status: DeviceStatus, connection: Connection) -> Coordinator:
        connect: Callable[[], Awaitable[Any]] | None = None
        if connection.controllable:

            async def connect() -> Any:
                return await open_control(connection)

        return Coordinator(
            status,
            connect,
            lambda _: self._publish(),
            self.settings.poll_s,
            Backoff(self._lifecycle.retry_initial_s, self._lifecycle.retry_max_s),
        )

    def _publish(self) -> None:
        devices = tuple(sorted((c.status for c in self.coordinators.values()), key=lambda s: s.id))
        self._bus.publish(
            "devices",
            DevicesState(
                devices=devices, profile_errors=tuple(self.profiles.errors), audio=self.audio
            ),
        )

    # -- the room's microphone and speaker

    def _button_pressed(self, device_id: str, press: ButtonPress) -> None:
        if not press.pressed:
            return
        audio = self.audio
        if press.action == "mute" and not press.repeat:
            audio = audio.model_copy(update={"mic_muted": not audio.mic_muted})
        elif press.action in ("volume_up", "volume_down"):
            step = VOLUME_STEP if press.action == "volume_up" else -VOLUME_STEP
            audio = audio.model_copy(update={"volume": min(100, max(0, audio.volume + step))})
        event = ButtonEvent(
            device=device_id, action=press.action, at=datetime.now(UTC), repeat=press.repeat
        )
        self._set_audio(audio.model_copy(update={"last_button": event}))

    def _set_audio(self, audio: RoomAudio) -> None:
        self.audio = audio
        self._publish()

    async def _mic_mute(self, args: MicMuteArgs) -> RoomAudio:
        muted = not self.audio.mic_muted if args.on is None else args.on
        self._set_audio(self.audio.model_copy(update={"mic_muted": muted}))
        return self.audio

    async def _room_volume(self, args: RoomVolumeArgs) -> RoomAudio:
        self._set_audio(self.audio.model_copy(update={"volume": args.level}))
        return self.audio

    # -- room behaviour

    async def _follow_the_room(self) -> None:
        """Display on for a meeting or a share; standby after the idle time; camera home."""
        busy_since: float | None = None
        idle_since = time.monotonic()
        standby_after = self.settings.display_standby_after_min * 60
        with self._bus.subscribe() as subscription:
            while True:
                busy = self._room_busy()
                if busy and busy_since is None:
                    busy_since = time.monotonic()
                    await self._room_became_busy()
                elif not busy and busy_since is not None:
                    busy_since, idle_since = None, time.monotonic()
                timeout = None
                if not busy and standby_after:
                    timeout = idle_since + standby_after - time.monotonic()
                    if timeout <= 0:
                        await self._standby_displays()
                        idle_since, timeout = float("inf"), None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await subscription.next()

    def _room_busy(self) -> bool:
        meeting, sharing = self._bus.get("meeting"), self._bus.get("sharing")
        assert isinstance(meeting, MeetingState)
        assert isinstance(sharing, SharingState)
        return meeting.in_meeting or sharing.active

    async def _room_became_busy(self) -> None:
        for coordinator in self._of_kind(DeviceKind.DISPLAY):
            await self._quietly(coordinator, lambda d: d.set_power(True))
        meeting = self._bus.get("meeting")
        if isinstance(meeting, MeetingState) and meeting.in_meeting:
            for coordinator in self._of_kind(DeviceKind.CAMERA):
                await self._quietly(coordinator, lambda c: c.home())

    async def _standby_displays(self) -> None:
        for coordinator in self._of_kind(DeviceKind.DISPLAY):
            await self._quietly(coordinator, lambda d: d.set_power(False))

    async def _quietly(
        self, coordinator: Coordinator, action: Callable[[Any], Awaitable[Any]]
    ) -> None:
        with contextlib.suppress(DeviceOffline, DriverError):
            await coordinator.call(action)

    def _of_kind(self, kind: DeviceKind) -> list[Coordinator]:
        return [c for c in self.coordinators.values() if c.status.kind is kind and c.status.online]

    # -- commands

    def commands(self) -> list[Command]:
        def command(path: str, summary: str, arguments: type[Arguments], handler: Any) -> Command:
            return Command(f"devices/{path}", summary, arguments, DeviceStatus, handler)

        return [
            command(
                "camera/preset", "Recall, store or clear a camera preset.", PresetArgs, self._preset
            ),
            command(
                "camera/move",
                "Start moving the camera in a direction, or stop.",
                MoveArgs,
                self._move,
            ),
            command(
                "camera/position",
                "Move the camera to a pan/tilt/zoom position.",
                PositionArgs,
                self._position,
            ),
            command(
                "camera/home", "Move the camera to its home position.", _DeviceArgs, self._home
            ),
            command(
                "display/power", "Switch the display on or to standby.", PowerArgs, self._power
            ),
            command(
                "display/input",
                "Switch the display to an input, e.g. hdmi1.",
                InputArgs,
                self._input,
            ),
            command(
                "display/volume", "Set the display's volume (0-100).", VolumeArgs, self._volume
            ),
            command("display/mute", "Mute or unmute the display.", MuteArgs, self._mute),
            Command(
                "devices/audio/mute",
                "Mute or unmute the room's microphone (no value: toggle).",
                MicMuteArgs,
                RoomAudio,
                self._mic_mute,
            ),
            Command(
                "devices/audio/volume",
                "Set the room's speaker volume (0-100).",
                RoomVolumeArgs,
                RoomAudio,
                self._room_volume,
            ),
            command(
                "reconnect",
                "Reconnect a device now instead of after its backoff.",
                ReconnectArgs,
                self._reconnect,
            ),
        ]

    def _find(self, device: str | None, kind: DeviceKind) -> Coordinator:
        if device is None:
            of_kind = [c for c in self.coordinators.values() if c.status.kind is kind]
            if not of_kind:
                raise CommandError(404, f"this room has no {kind}")
            return sorted(of_kind, key=lambda c: c.id)[0]
        coordinator = self.coordinators.get(device)
        if coordinator is None or coordinator.status.kind is not kind:
            known = (
                ", ".join(c.id for c in self.coordinators.values() if c.status.kind is kind)
                or "none"
            )
            raise CommandError(404, f"no {kind} {device!r} (cameras/displays here: {known})")
        return coordinator

    async def _run_on(
        self, device: str | None, kind: DeviceKind, action: Callable[[Any], Awaitable[Any]]
    ) -> DeviceStatus:
        coordinator = self._find(device, kind)
        try:
            await coordinator.call(action)
        except DeviceOffline as exc:
            raise CommandError(409, str(exc)) from None
        except DeviceRejected as exc:
            raise CommandError(409, f"{coordinator.status.name} refused: {exc}") from None
        except ValueError as exc:
            raise CommandError(422, str(exc)) from None
        except DriverError as exc:
            raise CommandError(504, f"{coordinator.status.name}: {exc}") from None
        return coordinator.status

    async def _preset(self, args: PresetArgs) -> DeviceStatus:
        coordinator = self._find(args.device, DeviceKind.CAMERA)
        presets = coordinator.status.presets
        if args.number >= presets:
            allowed = f"0 to {presets - 1}" if presets else "none: it has no presets"
            raise CommandError(
                422, f"{coordinator.status.name} presets are {allowed}, got {args.number}"
            )
        method = {"recall": "preset_recall", "set": "preset_set", "reset": "preset_reset"}[
            args.action
        ]
        return await self._run_on(
            args.device, DeviceKind.CAMERA, lambda c: getattr(c, method)(args.number)
        )

    async def _move(self, args: MoveArgs) -> DeviceStatus:
        if args.direction == "stop":
            return await self._run_on(args.device, DeviceKind.CAMERA, lambda c: c.pan_tilt_stop())
        direction = Direction(args.direction)
        return await self._run_on(
            args.device,
            DeviceKind.CAMERA,
            lambda c: c.pan_tilt_drive(direction, args.speed, args.speed),
        )

    async def _position(self, args: PositionArgs) -> DeviceStatus:
        async def move(camera: Any) -> None:
            if args.pan is not None or args.tilt is not None:
                now = await camera.status()
                pan = args.pan if args.pan is not None else now.pan or 0
                tilt = args.tilt if args.tilt is not None else now.tilt or 0
                await camera.pan_tilt_absolute(pan, tilt, args.speed, args.speed)
            if args.zoom is not None:
                await camera.zoom_absolute(args.zoom)

        return await self._run_on(args.device, DeviceKind.CAMERA, move)

    async def _home(self, args: _DeviceArgs) -> DeviceStatus:
        return await self._run_on(args.device, DeviceKind.CAMERA, lambda c: c.home())

    async def _power(self, args: PowerArgs) -> DeviceStatus:
        return await self._run_on(args.device, DeviceKind.DISPLAY, lambda d: d.set_power(args.on))

    async def _input(self, args: InputArgs) -> DeviceStatus:
        coordinator = self._find(args.device, DeviceKind.DISPLAY)
        if coordinator.status.inputs and args.source not in coordinator.status.inputs:
            allowed = ", ".join(coordinator.status.inputs)
            raise CommandError(
                422, f"{coordinator.status.name} has no input {args.source!r} (inputs: {allowed})"
            )
        return await self._run_on(
            args.device, DeviceKind.DISPLAY, lambda d: d.set_input_source(args.source)
        )

    async def _volume(self, args: VolumeArgs) -> DeviceStatus:
        return await self._run_on(
            args.device, DeviceKind.DISPLAY, lambda d: d.set_volume(args.level)
        )

    async def _mute(self, args: MuteArgs) -> DeviceStatus:
        return await self._run_on(args.device, DeviceKind.DISPLAY, lambda d: d.set_mute(args.on))

    async def _reconnect(self, args: ReconnectArgs) -> DeviceStatus:
        coordinator = self.coordinators.get(args.device)
        if coordinator is None:
            raise CommandError(404, f"no device {args.device!r}")
        coordinator.reconnect_now()
        return coordinator.status


def _kind_of(usb: UsbDevice) -> str | None:
    """What a USB device is by the nodes it made, for the generic fallback profiles."""
    if usb.video:
        return DeviceKind.CAMERA
    if usb.sound_cards:
        return DeviceKind.AUDIO
    return None
