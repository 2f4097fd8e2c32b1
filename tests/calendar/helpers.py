"""Shared pieces of the calendar tests: a clock the test moves, a bus, a service."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

from roomsystem.bus import StateBus
from roomsystem.calendar.backend import CalendarBackend
from roomsystem.calendar.service import CalendarService
from roomsystem.calendar.state import CalendarState
from roomsystem.config import CalendarSettings
from roomsystem.lifecycle import Phase
from roomsystem.meeting.state import MeetingState
from roomsystem.statedir import StateDir
from tests.util import POLICY

OSLO = "Europe/Oslo"


class Clock:
    """A clock that only moves when the test says so."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def room_bus() -> StateBus:
    return StateBus({"calendar": CalendarState(), "meeting": MeetingState(policy=POLICY)})


async def started(
    backend: CalendarBackend,
    state_dir: StateDir,
    clock: Clock,
    bus: StateBus | None = None,
    timezone: str = OSLO,
    **settings: object,
) -> CalendarService:
    """A calendar service through its setup phases and a first sync (no background loops)."""
    options: dict[str, object] = {"poll_seconds": 0.1, "timeout_s": 10.0, **settings}
    service = CalendarService(
        CalendarSettings.model_validate(options),
        timezone,
        state_dir,
        bus or room_bus(),
        backend,
        clock,
    )
    try:
        for phase in (Phase.PROFILES, Phase.CONNECT):
            await service.setup(phase)
        await service.sync()
    except BaseException:
        await service.close()
        raise
    return service


def calendar_of(bus: StateBus) -> CalendarState:
    state = bus.get("calendar")
    assert isinstance(state, CalendarState)
    return state


async def until_calendar(
    bus: StateBus, predicate: Callable[[CalendarState], bool], timeout: float = 5.0
) -> CalendarState:
    """The first calendar state (current or coming) for which ``predicate`` holds."""
    async with asyncio.timeout(timeout):
        with bus.subscribe() as subscription:
            state = subscription.snapshot.topics["calendar"]
            while True:
                assert isinstance(state, CalendarState)
                if predicate(state):
                    return state
                change = await subscription.next()
                if change.topic == "calendar":
                    state = change.value
