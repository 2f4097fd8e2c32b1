"""Backends that store each booking as an iCalendar object: the local calendar and CalDAV.

Both keep one VCALENDAR per UID (a series with its overridden occurrences together, as
CalDAV requires), so every change is: read the object, edit it with `ics`, write it back.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo

import icalendar

from roomsystem.calendar import ics
from roomsystem.calendar.backend import SyncResult, ThreadedBackend
from roomsystem.calendar.model import Booking

Edit = Callable[[icalendar.Calendar], None]


@dataclass
class _Expanded:
    """One stored object, parsed, and its bookings for the last window asked for."""

    version: str
    calendar: icalendar.Calendar
    window: tuple[datetime, datetime] | None = None
    bookings: list[Booking] = field(default_factory=list)


class ObjectBackend(ThreadedBackend):
    """Sync and edits for a store of iCalendar objects; subclasses do the storage."""

    def __init__(self, zone: tzinfo, room_hosts: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.zone = zone
        self.room_hosts = room_hosts
        self._objects: dict[str, _Expanded] = {}

    # -- storage, run in the worker thread

    @abstractmethod
    def _changes(self, full: bool) -> tuple[bool, dict[str, tuple[str, str] | None]]:
        """(was it full, {key: (version, ics text) or None when deleted}) since last time."""

    @abstractmethod
    def _read(self, uid: str) -> tuple[str, icalendar.Calendar]:
        """(key, calendar) of the object holding ``uid``."""

    @abstractmethod
    def _write(self, key: str, calendar: icalendar.Calendar) -> None:
        """Store ``calendar`` under ``key`` (replacing it)."""

    @abstractmethod
    def _create(self, uid: str, calendar: icalendar.Calendar) -> None:
        """Store a new object."""

    # -- the backend

    async def sync(self, start: datetime, end: datetime, full: bool = False) -> SyncResult:
        was_full, changes = await self._call(self._changes, full)
        if was_full:
            self._objects = {k: v for k, v in self._objects.items() if k in changes}
        for key, change in changes.items():
            if change is None:
                self._objects.pop(key, None)
                continue
            version, text = change
            known = self._objects.get(key)
            if known is None or known.version != version:
                self._objects[key] = _Expanded(version, ics.parse_calendar(text, key))
        bookings = [
            b for key, obj in self._objects.items() for b in self._expand(key, obj, start, end)
        ]
        bookings.sort(key=lambda b: (b.start, b.id))
        return SyncResult(bookings=bookings, full=was_full, fetched=len(changes))

    def _expand(self, key: str, obj: _Expanded, start: datetime, end: datetime) -> list[Booking]:
        if obj.window != (start, end):
            obj.bookings = ics.expand(obj.calendar, start, end, self.zone, self.room_hosts, key)
            obj.window = (start, end)
        return obj.bookings

    async def book(self, subject: str, start: datetime, end: datetime) -> Booking:
        calendar = ics.new_event(subject, start, end)
        uid = next(iter(ics.uids_of(calendar)))
        await self._call(self._create, uid, calendar)
        return ics.expand(calendar, start, end, self.zone, self.room_hosts)[0]

    async def set_end(self, booking: Booking, end: datetime) -> None:
        await self._edit_occurrence(booking, lambda event: ics.set_end(event, end))

    async def release(self, booking: Booking, message: str) -> None:
        def cancel(event: icalendar.Component) -> None:
            ics.set_property(event, "STATUS", "CANCELLED")
            ics.set_property(event, "COMMENT", message)

        await self._edit_occurrence(booking, cancel)

    async def end_series(self, booking: Booking, message: str) -> None:
        if booking.series_id is None:
            await self.release(booking, message)
            return
        series_id = booking.series_id
        await self._edit(series_id, lambda cal: ics.end_series(cal, series_id, booking.start))

    async def check_in(self, booking: Booking, at: datetime) -> None:
        stamp = at.astimezone(UTC)
        await self._edit_occurrence(booking, lambda e: ics.set_property(e, ics.CHECKED_IN, stamp))

    async def _edit_occurrence(
        self, booking: Booking, change: Callable[[icalendar.Component], None]
    ) -> None:
        def edit(calendar: icalendar.Calendar) -> None:
            change(ics.occurrence_component(calendar, booking, self.zone))

        await self._edit(booking.series_id or booking.id, edit)

    async def _edit(self, uid: str, edit: Edit) -> None:
        def read_edit_write() -> None:
            key, calendar = self._read(uid)
            edit(calendar)
            self._write(key, calendar)

        await self._call(read_edit_write)


def split_by_uid(calendar: icalendar.Calendar) -> Iterable[tuple[str, icalendar.Calendar]]:
    """One calendar per UID, each with the time zones it may refer to (for ICS import)."""
    zones = list(calendar.walk("VTIMEZONE"))
    by_uid: dict[str, icalendar.Calendar] = {}
    for event in calendar.walk("VEVENT"):
        uid = str(event.get("UID") or "")
        if not uid:
            raise ics.IcsError("an event has no UID")
        target = by_uid.get(uid)
        if target is None:
            target = icalendar.Calendar()
            target.add("PRODID", ics.PRODID)
            target.add("VERSION", "2.0")
            for zone in zones:
                target.add_component(zone)
            by_uid[uid] = target
        target.add_component(event)
    return by_uid.items()
