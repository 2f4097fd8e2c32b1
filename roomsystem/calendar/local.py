"""The room's own calendar: iCalendar objects in SQLite in the state directory.

The embedded default. Bookings come from ICS import and walk-up booking; with
``sample_bookings`` a new calendar starts with a few sample bookings for the demo.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, tzinfo
from pathlib import Path

import icalendar

from roomsystem.calendar import ics
from roomsystem.calendar.model import CalendarError, StaleReason
from roomsystem.calendar.objects import ObjectBackend, split_by_uid

DATABASE = "calendar.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    uid TEXT PRIMARY KEY,
    ics TEXT NOT NULL,
    rev INTEGER NOT NULL
)
"""


class LocalBackend(ObjectBackend):
    """A calendar kept on the appliance, in ``calendar.sqlite`` in the state directory."""

    name = "local"

    def __init__(
        self,
        path: Path,
        zone: tzinfo,
        room_hosts: tuple[str, ...] = (),
        sample_bookings: bool = False,
        clock_today: datetime | None = None,
    ) -> None:
        super().__init__(zone, room_hosts)
        self.path = path
        self._sample_bookings = sample_bookings
        self._today = clock_today
        self._db: sqlite3.Connection | None = None

    async def open(self) -> None:
        await self._call(self._open)

    def _open(self) -> None:
        new = not self.path.exists()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False)
            self._db.execute(_SCHEMA)
            self._db.commit()
        except sqlite3.Error as exc:
            raise CalendarError(StaleReason.BAD_RESPONSE, f"{self.path}: {exc}") from None
        if new and self._sample_bookings:
            for uid, calendar in split_by_uid(sample_calendar(self._today, self.zone)):
                self._create(uid, calendar)

    async def close(self) -> None:
        if self._db is not None:
            await self._call(self._db.close)
            self._db = None
        await super().close()

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise CalendarError(StaleReason.NOT_SYNCED, "the local calendar is not open")
        return self._db

    async def import_ics(self, text: str | bytes, where: str = "ICS import") -> int:
        """Add or replace the events in ``text``; the number of events (UIDs) stored."""
        calendar = ics.parse_calendar(text, where)
        objects = list(split_by_uid(calendar))
        # Check every event expands before storing any: a broken import changes nothing.
        for uid, obj in objects:
            start = datetime(1970, 1, 2, tzinfo=self.zone)
            ics.expand(obj, start, start + timedelta(days=1), self.zone, where=f"{where}: {uid}")
        await self._call(self._store_all, objects)
        return len(objects)

    # -- storage (worker thread)

    def _store_all(self, objects: list[tuple[str, icalendar.Calendar]]) -> None:
        with self.db:
            for uid, calendar in objects:
                self._put(uid, calendar)

    def _put(self, uid: str, calendar: icalendar.Calendar) -> None:
        self.db.execute(
            "INSERT INTO objects (uid, ics, rev) VALUES (?, ?, 1)"
            " ON CONFLICT(uid) DO UPDATE SET ics = excluded.ics, rev = objects.rev + 1",
            (uid, calendar.to_ical().decode()),
        )

    def _changes(self, full: bool) -> tuple[bool, dict[str, tuple[str, str] | None]]:
        rows = self.db.execute("SELECT uid, rev, ics FROM objects").fetchall()
        return True, {uid: (str(rev), text) for uid, rev, text in rows}

    def _read(self, uid: str) -> tuple[str, icalendar.Calendar]:
        row = self.db.execute("SELECT ics FROM objects WHERE uid = ?", (uid,)).fetchone()
        if row is None:
            raise CalendarError(StaleReason.BAD_RESPONSE, f"no event {uid!r} in the calendar")
        return uid, ics.parse_calendar(row[0], uid)

    def _write(self, key: str, calendar: icalendar.Calendar) -> None:
        with self.db:
            self._put(key, calendar)

    def _create(self, uid: str, calendar: icalendar.Calendar) -> None:
        self._write(uid, calendar)


def sample_calendar(today: datetime | None, zone: tzinfo) -> icalendar.Calendar:
    """A demo day: a booking under way, a private one, a Teams call and a daily stand-up."""
    now = today or datetime.now(zone)
    hour = now.astimezone(zone).replace(minute=0, second=0, microsecond=0)
    calendar = icalendar.Calendar()
    calendar.add("PRODID", ics.PRODID)
    calendar.add("VERSION", "2.0")

    def event(uid: str, subject: str, start: datetime, minutes: int, **extra: object) -> None:
        component = icalendar.Event()
        component.add("UID", f"sample-{uid}@roomsystem")
        component.add("DTSTAMP", hour)
        component.add("DTSTART", start)
        component.add("DTEND", start + timedelta(minutes=minutes))
        component.add("SUMMARY", subject)
        component.add("ORGANIZER", "mailto:facilities@example.org", parameters={"CN": "Facilities"})
        for key, value in extra.items():
            component.add(key.upper(), value)
        calendar.add_component(component)

    event("planning", "Quarterly planning", hour, 60)
    event(
        "one-to-one",
        "One-to-one",
        hour + timedelta(hours=1, minutes=30),
        30,
        **{"class": "PRIVATE"},
    )
    event(
        "customer-call",
        "Customer call",
        hour + timedelta(hours=3),
        45,
        location="https://teams.microsoft.com/l/meetup-join/19%3ademo",
    )
    # Relative to now like the others, so the room is free for a walk-up booking after the
    # planning meeting whenever the demo starts.
    standup = hour + timedelta(hours=2, minutes=15)
    event("standup", "Daily stand-up", standup, 15, rrule={"FREQ": "DAILY", "COUNT": 30})
    return calendar
