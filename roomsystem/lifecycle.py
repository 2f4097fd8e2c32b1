"""Room lifecycle: phases, services and the supervisor that keeps each service going.

The room moves through ``config -> profiles -> discover -> connect -> ready``. In each
setup phase every service does its part (`Service.setup`); when all have done it or
failed, the room moves on. A service that fails is reported with the kind of error and
retried with exponential backoff from its first phase, in the background: it never
stops the room. Each supervisor owns exactly one task and cancels and awaits it on close.

The lifecycle keeps a short history for support: each phase the room entered and each
time a service failed, was retried, ran or stopped. Only changes are kept, and only the
last `HISTORY_KEPT`: a service that fails the same way on every retry adds one failure
and one retry, however long it keeps trying.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

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
HISTORY_KEPT = 50


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


class PhaseEntered(BaseModel):
    """History: the room entered ``phase``."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["phase"] = "phase"
    at: datetime
    phase: Phase


ServiceChange = Literal["failed", "retrying", "running", "stopped"]


class ServiceChanged(BaseModel):
    """History: a service failed (in ``phase``, with the error), was retried, ran or stopped."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["service"] = "service"
    at: datetime
    service: str
    change: ServiceChange
    phase: Phase | None = None
    error_kind: ErrorKind | None = None
    error: str | None = None
    failures: int = 0
    # The same failure again since (see `history_with`): how often, and when last.
    repeats: int = 0
    last_at: datetime | None = None


HistoryEntry = Annotated[PhaseEntered | ServiceChanged, Field(discriminator="kind")]


class WebStatus(BaseModel):
    """Whether the meeting site (the HTTPS site participants join at) listens, and where.

    ``error`` says why it does not; not listening without an error means the room hosts
    no meetings, or has not started the site yet.
    """

    model_config = ConfigDict(frozen=True)

    listening: bool = False
    url: str = ""
    error: str | None = None


class LifecycleState(BaseModel):
    """The room's phase, every service's status, the meeting site's and recent changes."""

    model_config = ConfigDict(frozen=True)

    phase: Phase = Phase.CONFIG
    started_at: datetime | None = None
    ready_at: datetime | None = None
    services: tuple[ServiceStatus, ...] = ()
    web: WebStatus = WebStatus()
    # Oldest first, at most HISTORY_KEPT entries.
    history: tuple[HistoryEntry, ...] = ()

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


def lifecycle_with(
    state: LifecycleState, status: ServiceStatus, at: datetime | None = None
) -> LifecycleState:
    """``state`` with ``status`` replacing the service of the same name, and in the
    history if that is a change worth keeping (see `history_with`)."""
    services = tuple(status if s.name == status.name else s for s in state.services)
    history = state.history
    entry = service_change(status, at or datetime.now(UTC))
    if entry is not None:
        history = history_with(history, entry)
    return state.model_copy(update={"services": services, "history": history})


def lifecycle_in(state: LifecycleState, phase: Phase, at: datetime | None = None) -> LifecycleState:
    """``state`` in ``phase``, the move kept in the history."""
    history = state.history
    entered = [entry.phase for entry in history if isinstance(entry, PhaseEntered)]
    if not entered or entered[-1] is not phase:
        history = with_entry(history, PhaseEntered(at=at or datetime.now(UTC), phase=phase))
    return state.model_copy(update={"phase": phase, "history": history})


def with_entry(
    history: tuple[HistoryEntry, ...], entry: HistoryEntry, kept: int = HISTORY_KEPT
) -> tuple[HistoryEntry, ...]:
    """``history`` with ``entry`` added, and the oldest dropped beyond ``kept``."""
    return (*history, entry)[-kept:]


def service_change(status: ServiceStatus, at: datetime) -> ServiceChanged | None:
    """What ``status`` means for the history; None for a first start, which the
    phases already tell."""
    change: ServiceChange
    if status.state is ServiceState.FAILED:
        change = "failed"
    elif status.state is ServiceState.RUNNING:
        change = "running"
    elif status.state is ServiceState.STOPPED:
        change = "stopped"
    elif status.state is ServiceState.STARTING and status.failures:
        change = "retrying"
    else:
        return None
    failed = change == "failed"
    return ServiceChanged(
        at=at,
        service=status.name,
        change=change,
        phase=status.phase if failed else None,
        error_kind=status.error_kind if failed else None,
        error=status.error if failed else None,
        failures=status.failures,
    )


def history_with(
    history: tuple[HistoryEntry, ...], entry: ServiceChanged
) -> tuple[HistoryEntry, ...]:
    """``history`` with what ``entry`` changes about its service.

    A failure like the service's last one, with nothing but retries and runs since, is
    the same trouble again: it is counted on that entry (``repeats``, ``last_at``), and
    the retries and runs that follow add nothing. So a service that fails, or runs and
    crashes, every few seconds cannot flood the history.
    """
    own = [e for e in history if isinstance(e, ServiceChanged) and e.service == entry.service]
    if entry.change == "failed":
        return _with_failure(history, _last_failure(own), entry)
    last = own[-1].change if own else None
    news = last in (None, "failed") if entry.change == "retrying" else last != entry.change
    return with_entry(history, entry) if news else history


def _last_failure(own: Sequence[ServiceChanged]) -> ServiceChanged | None:
    """The service's last failure, unless it stopped since."""
    for earlier in reversed(own):
        if earlier.change == "stopped":
            return None
        if earlier.change == "failed":
            return earlier
    return None


def _with_failure(
    history: tuple[HistoryEntry, ...], last: ServiceChanged | None, failure: ServiceChanged
) -> tuple[HistoryEntry, ...]:
    if last is None or (last.error_kind, last.error) != (failure.error_kind, failure.error):
        return with_entry(history, failure)
    if failure.failures <= last.failures:
        return history  # the same failure once more, with its retry time added
    counted = last.model_copy(
        update={"repeats": last.repeats + 1, "last_at": failure.at, "failures": failure.failures}
    )
    return tuple(counted if entry is last else entry for entry in history)


def initial_statuses(services: Sequence[Service]) -> tuple[ServiceStatus, ...]:
    return tuple(ServiceStatus(name=s.name) for s in services)
