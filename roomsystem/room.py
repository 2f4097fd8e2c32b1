"""The composition root: builds the room's services from the settings and runs its lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict

from roomsystem import __version__
from roomsystem.appliance.alerts import AlertsState
from roomsystem.appliance.channels import build_alerts_service
from roomsystem.bus import StateBus
from roomsystem.calendar.factory import calendar_service
from roomsystem.calendar.state import CalendarState
from roomsystem.commands import Arguments, Command, CommandError
from roomsystem.config import Settings
from roomsystem.devices.service import DevicesService
from roomsystem.devices.state import DevicesState
from roomsystem.lifecycle import (
    SETUP_PHASES,
    Backoff,
    LifecycleState,
    Phase,
    PhaseGate,
    Service,
    ServiceStatus,
    Supervisor,
    initial_statuses,
    lifecycle_in,
    lifecycle_with,
)
from roomsystem.media.service import MediaService
from roomsystem.media.state import MediaState
from roomsystem.meeting.service import MeetingService
from roomsystem.meeting.state import MeetingPolicy, MeetingState
from roomsystem.pairing.service import Pairing
from roomsystem.pairing.state import PairingState
from roomsystem.sharing.service import SharingService
from roomsystem.sharing.state import SharingState
from roomsystem.state import RoomInfo
from roomsystem.statedir import StateDir

logger = logging.getLogger(__name__)

IDENTITY_FILE = "room.json"


class RoomIdentity(BaseModel):
    """Kept in the state directory so the room keeps its id across restarts."""

    model_config = ConfigDict(frozen=True)

    id: str


class RetryArguments(Arguments):
    service: str


class RetryResult(BaseModel):
    service: str
    state: str


ServiceFactory = Callable[[Settings, StateBus], Sequence[Service]]


def build_services(settings: Settings, bus: StateBus) -> list[Service]:
    """The services this configuration asks for."""
    media = MediaService(settings.media, settings.webrtc, bus, state_dir=settings.state_dir)
    return [
        DevicesService(settings.devices, settings.lifecycle, bus),
        media,
        MeetingService(settings.meeting, bus, recorder=media.recorder),
        SharingService(
            settings.sharing,
            settings.room,
            bus,
            web_listen=settings.web.listen,
            display=media.share_display,
        ),
        calendar_service(settings, bus),
        build_alerts_service(settings.alerts, bus),
    ]


class Room:
    """One meeting room: its state bus, its services and their lifecycle."""

    def __init__(self, settings: Settings, services: ServiceFactory = build_services) -> None:
        self.settings = settings
        self.state_dir = StateDir(settings.state_dir)
        self.bus = StateBus(self._initial_state())
        self.services = list(services(settings, self.bus))
        names = [s.name for s in self.services]
        if len(set(names)) != len(names):
            raise ValueError(f"service names must be unique: {names}")
        self.bus.publish("lifecycle", LifecycleState(services=initial_statuses(self.services)))
        self.pairing = Pairing(self.bus, self.state_dir)
        self.gate = PhaseGate()
        self.ready = asyncio.Event()
        lifecycle = settings.lifecycle
        self._supervisors = {
            s.name: Supervisor(
                s,
                self.gate,
                self._report_service,
                Backoff(lifecycle.retry_initial_s, lifecycle.retry_max_s),
                lifecycle.setup_timeout_s,
            )
            for s in self.services
        }
        self._lifecycle_task: asyncio.Task[None] | None = None
        self.api_token = ""

    def _initial_state(self) -> dict[str, BaseModel]:
        room = self.settings.room
        meeting = self.settings.meeting
        return {
            "room": RoomInfo(
                id="",
                name=room.name,
                location=room.location,
                timezone=room.timezone,
                version=__version__,
                started_at=datetime.now(UTC),
            ),
            "lifecycle": LifecycleState(),
            "devices": DevicesState(),
            "meeting": MeetingState(
                policy=MeetingPolicy(
                    waiting_room=meeting.waiting_room,
                    join_before_host=meeting.join_before_host,
                    mute_on_entry=meeting.mute_on_entry,
                    video_off_on_entry=meeting.video_off_on_entry,
                    host_only_sharing=meeting.host_only_sharing,
                )
            ),
            "sharing": SharingState(enabled=self.settings.sharing.enabled),
            "calendar": CalendarState(backend=self.settings.calendar.backend),
            "alerts": AlertsState(),
            "pairing": PairingState(),
            "media": MediaState(),
        }

    @property
    def lifecycle(self) -> LifecycleState:
        state = self.bus.get("lifecycle")
        assert isinstance(state, LifecycleState)
        return state

    def open(self) -> None:
        """Take the state directory and load what the room kept; fails fast on errors."""
        self.state_dir.lock()
        try:
            identity = self.state_dir.load(IDENTITY_FILE, RoomIdentity)
            if identity is None:
                identity = RoomIdentity(id=str(uuid.uuid4()))
                self.state_dir.save(IDENTITY_FILE, identity)
            self.api_token = self.state_dir.api_token()
            self.pairing.load()
        except BaseException:
            self.state_dir.unlock()
            raise
        room = self.bus.get("room").model_copy(update={"id": identity.id})
        self.bus.publish("room", room)

    def start(self) -> None:
        """Start the lifecycle in the background; await `ready` to know it is done."""
        now = datetime.now(UTC)
        started = self.lifecycle.model_copy(update={"started_at": now})
        self.bus.publish("lifecycle", lifecycle_in(started, Phase.CONFIG, now))
        for supervisor in self._supervisors.values():
            supervisor.start()
        self._lifecycle_task = asyncio.create_task(self._run_phases(), name="room:lifecycle")

    async def _run_phases(self) -> None:
        for phase in SETUP_PHASES:
            await self._enter(phase)
            await asyncio.gather(*(s.settled(phase) for s in self._supervisors.values()))
        await self._enter(Phase.READY, ready_at=datetime.now(UTC))
        problems = [s.name for s in self.lifecycle.services if s.error]
        if problems:
            logger.warning("room ready without: %s", ", ".join(problems))
        else:
            logger.info("room ready")
        self.ready.set()

    async def _enter(self, phase: Phase, **extra: object) -> None:
        logger.debug("phase %s", phase)
        entered = lifecycle_in(self.lifecycle.model_copy(update=extra), phase)
        self.bus.publish("lifecycle", entered)
        await self.gate.advance(phase)

    def _report_service(self, status: ServiceStatus) -> None:
        self.bus.publish("lifecycle", lifecycle_with(self.lifecycle, status))

    async def stop(self) -> None:
        """Cancel and await every task the room owns, close services, release the state dir."""
        self.bus.publish("lifecycle", lifecycle_in(self.lifecycle, Phase.STOPPING))
        if self._lifecycle_task is not None:
            self._lifecycle_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lifecycle_task
            self._lifecycle_task = None
        await asyncio.gather(*(s.close() for s in self._supervisors.values()))
        self.pairing.close()
        self.state_dir.unlock()

    def commands(self) -> list[Command]:
        """The room's own commands and every service's."""
        own = [
            Command(
                path="services/retry",
                summary="Retry a failed service now instead of waiting for its backoff.",
                arguments=RetryArguments,
                result=RetryResult,
                handler=self._retry_service,
            )
        ]
        own += self.pairing.commands()
        return own + [command for service in self.services for command in service.commands()]

    async def announce_api(self, host: str, port: int) -> None:
        """Panels find the API (listening on ``host:port``) through the sharing service's
        mDNS record."""
        for service in self.services:
            if isinstance(service, SharingService):
                await service.set_api_address(host, port)

    async def _retry_service(self, args: RetryArguments) -> RetryResult:
        supervisor = self._supervisors.get(args.service)
        if supervisor is None:
            known = ", ".join(self._supervisors) or "none"
            raise CommandError(404, f"no service {args.service!r} (services: {known})")
        if not supervisor.retry_now():
            raise CommandError(
                409, f"{args.service} has not failed (it is {supervisor.status.state})"
            )
        return RetryResult(service=args.service, state=supervisor.status.state)
