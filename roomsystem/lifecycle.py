"""Room lifecycle: phases, services and the supervisor that keeps each service going.

The room moves through ``config -> profiles -> discover -> connect -> ready``. In each
setup phase every service does its part (`Service.setup`); when all have done it or
failed, the room moves on. A service that fails is reported with the kind of error and
retried with exponential backoff from its first phase, in the background: it never
stops the room. Each supervisor owns exactly one task and cancels and awaits it on close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from roomsystem.commands import Command
from roomsystem.errors import ErrorKind, error_kind

logger = logging.getLogger(__name__)


class Phase(StrEnum):
    CONFIG = "config"
    PROFILES = "profiles"
    DISCOVER = "discover"
    CONNECT = "connect"
    READY = "ready"
    STOPPING = "stopping"


SETUP_PHASES = (Phase.PROFILES, Phase.DISCOVER, Phase.CONNECT)
_ORDER = {phase: index for index, phase in enumerate(Phase)}


class ServiceState(StrEnum):
    WAITING = "waiting"
    STARTING = "starting"
    RUNNING = "running"
    FAILED = "failed"
    STOPPED = "stopped"


class ServiceStatus(BaseModel):
    """How one service is doing, as the API and the panel show it."""

    model_config = ConfigDict(frozen=True)

    name: str
    state: ServiceState = ServiceState.WAITING
    phase: Phase | None = None
    error: str | None = None
    error_kind: ErrorKind | None = None
    failures: int = 0
    retry_at: datetime | None = None


class LifecycleState(BaseModel):
    """The room's phase and every service's status."""

    model_config = ConfigDict(frozen=True)

    phase: Phase = Phase.CONFIG
    started_at: datetime | None = None
    ready_at: datetime | None = None
    services: tuple[ServiceStatus, ...] = ()

    @property
    def degraded(self) -> bool:
        return any(s.state is ServiceState.FAILED for s in self.services)


class Service:
    """A part of the room (devices, calendar, meetings, ...), run by a `Supervisor`.

    Override what applies: `setup` for each setup phase, `run` for the long-running part
    (return or raise and the service is restarted), `close` to release what it holds.
    Raise `roomsystem.errors.RoomError` subclasses so the error kind is reported right.
    """

    name: ClassVar[str] = "service"

    async def setup(self, phase: Phase) -> None:
        """Do this service's part of ``phase`` (profiles, discover or connect)."""

    async def run(self) -> None:
        """Serve until cancelled. The default has nothing to do but wait."""
        await asyncio.Event().wait()

    async def close(self) -> None:
        """Release what setup and run took; called after every failure and at shutdown."""

    def commands(self) -> list[Command]:
        """The API commands this service offers."""
        return []


class Backoff:
    """Exponential delays with jitter: initial, 2x, 4x, ... up to maximum."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = max(initial, maximum)
        self._next = initial

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        # +-10% so that rooms restarted together do not retry in lockstep.
        return delay * random.uniform(0.9, 1.1)

    def reset(self) -> None:
        self._next = self.initial


class PhaseGate:
    """The room's current phase; services wait here until the room reaches theirs."""

    def __init__(self) -> None:
        self.phase = Phase.CONFIG
        self._changed = asyncio.Condition()

    async def advance(self, phase: Phase) -> None:
        async with self._changed:
            self.phase = phase
            self._changed.notify_all()

    async def reached(self, phase: Phase) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: _ORDER[self.phase] >= _ORDER[phase])


class Supervisor:
    """Runs one service through the setup phases and keeps it running."""

    def __init__(
        self,
        service: Service,
        gate: PhaseGate,
        report: Callable[[ServiceStatus], None],
        backoff: Backoff,
        setup_timeout: float,
        close_timeout: float = 0.5,
    ) -> None:
        self.service = service
        self._gate = gate
        self._report = report
        self._backoff = backoff
        self._setup_timeout = setup_timeout
        self._close_timeout = close_timeout
        self._settled = {phase: asyncio.Event() for phase in SETUP_PHASES}
        self._retry_now = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.status = ServiceStatus(name=service.name)

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name=f"service:{self.service.name}")

    async def settled(self, phase: Phase) -> None:
        """Wait until this service has done ``phase`` or failed."""
        await self._settled[phase].wait()

    def retry_now(self) -> bool:
        """Cut a failed service's backoff short; False if it is not waiting to retry."""
        if self.status.state is not ServiceState.FAILED:
            return False
        self._retry_now.set()
        return True

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._close_service()
        self._update(state=ServiceState.STOPPED, retry_at=None)

    async def _supervise(self) -> None:
        while True:
            try:
                await self._start_service()
                self._backoff.reset()
                await self.service.run()
                raise RuntimeError("stopped running")
            except Exception as exc:  # noqa: BLE001 - reported and retried: a service never stops the room
                await self._failed(exc)
            delay = self._backoff.next_delay()
            self._update(retry_at=datetime.now(UTC) + timedelta(seconds=delay))
            self._retry_now.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._retry_now.wait()

    async def _start_service(self) -> None:
        for phase in SETUP_PHASES:
            await self._gate.reached(phase)
            self._update(state=ServiceState.STARTING, phase=phase, retry_at=None)
            try:
                await asyncio.wait_for(self.service.setup(phase), self._setup_timeout)
            except TimeoutError:
                raise TimeoutError(f"{phase} took longer than {self._setup_timeout:g} s") from None
            self._settled[phase].set()
        self._update(state=ServiceState.RUNNING, phase=None, error=None, error_kind=None)

    async def _failed(self, exc: Exception) -> None:
        message = str(exc) or type(exc).__name__
        kind = error_kind(exc)
        failures = self.status.failures + 1
        # Loud once, then quiet: a device that stays away must not flood the journal.
        log = logger.warning if failures == 1 else logger.debug
        log(
            "%s failed (%s error): %s",
            self.service.name,
            kind,
            message,
            exc_info=kind is ErrorKind.INTERNAL,
        )
        self._update(state=ServiceState.FAILED, error=message, error_kind=kind, failures=failures)
        for event in self._settled.values():
            event.set()  # the room does not wait for a failed service
        await self._close_service()

    async def _close_service(self) -> None:
        try:
            await asyncio.wait_for(self.service.close(), self._close_timeout)
        except Exception:
            logger.exception("%s did not close cleanly", self.service.name)

    def _update(self, **changes: object) -> None:
        self.status = self.status.model_copy(update=changes)
        self._report(self.status)


def lifecycle_with(state: LifecycleState, status: ServiceStatus) -> LifecycleState:
    """``state`` with ``status`` replacing the service of the same name."""
    services = tuple(status if s.name == status.name else s for s in state.services)
    return state.model_copy(update={"services": services})


def initial_statuses(services: Sequence[Service]) -> tuple[ServiceStatus, ...]:
    return tuple(ServiceStatus(name=s.name) for s in services)
