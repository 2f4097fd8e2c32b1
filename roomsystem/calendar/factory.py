"""The calendar service for a configuration: the backend it names, built lazily."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from roomsystem.bus import StateBus
from roomsystem.calendar.backend import CalendarBackend
from roomsystem.calendar.local import DATABASE, LocalBackend
from roomsystem.calendar.service import CalendarService
from roomsystem.config import Settings
from roomsystem.statedir import StateDir


def make_backend(settings: Settings) -> CalendarBackend:
    calendar = settings.calendar
    zone = ZoneInfo(settings.room.timezone)
    room_hosts = (settings.web.public_host,) if settings.web.public_host else ()
    # The client libraries are imported only for the backend in use: they are large.
    if calendar.backend == "caldav":
        from roomsystem.calendar.caldav_backend import CalDavBackend

        return CalDavBackend(calendar, zone, room_hosts)
    if calendar.backend == "ews":
        from roomsystem.calendar.ews import EwsBackend

        return EwsBackend(calendar, zone, room_hosts)
    if calendar.backend == "graph":
        from roomsystem.calendar.graph import GraphBackend

        return GraphBackend(calendar, zone, room_hosts)
    return LocalBackend(
        settings.state_dir / DATABASE,
        zone,
        room_hosts,
        sample_bookings=calendar.sample_bookings,
    )


def calendar_service(settings: Settings, bus: StateBus) -> CalendarService:
    return CalendarService(
        settings.calendar,
        settings.room.timezone,
        StateDir(settings.state_dir),
        bus,
        make_backend(settings),
    )
