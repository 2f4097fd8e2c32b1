"""iCalendar (RFC 5545) text to bookings and back, for the local calendar and CalDAV.

Recurring series are expanded into occurrences with recurring-ical-events, which honours
RRULE, RDATE, EXDATE and overridden occurrences (a VEVENT with RECURRENCE-ID).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

import icalendar
import recurring_ical_events

from roomsystem.calendar.links import find_join_links
from roomsystem.calendar.model import Booking, BookingStatus, CalendarError, StaleReason

CHECKED_IN = "X-ROOMSYSTEM-CHECKED-IN"
PRODID = "-//roomsystem//calendar//EN"
_STATUS = {
    "TENTATIVE": BookingStatus.TENTATIVE,
    "CONFIRMED": BookingStatus.CONFIRMED,
    "CANCELLED": BookingStatus.CANCELLED,
}


class IcsError(CalendarError):
    """iCalendar text that cannot be read."""

    def __init__(self, message: str) -> None:
        super().__init__(StaleReason.BAD_RESPONSE, message)


def parse_calendar(text: str | bytes, where: str) -> icalendar.Calendar:
    """``text`` as a calendar, or `IcsError` naming ``where`` it came from."""
    try:
        calendar = icalendar.Calendar.from_ical(text)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise IcsError(f"{where}: not valid iCalendar: {exc}") from None
    if not isinstance(calendar, icalendar.Calendar) or calendar.name != "VCALENDAR":
        raise IcsError(f"{where}: not a VCALENDAR")
    return calendar


def expand(
    calendar: icalendar.Calendar,
    start: datetime,
    end: datetime,
    zone: tzinfo,
    room_hosts: tuple[str, ...] = (),
    where: str = "calendar",
) -> list[Booking]:
    """The bookings of ``calendar`` that overlap ``start``..``end``, series expanded.

    Floating times and all-day dates are read in the room's time zone ``zone``.
    """
    try:
        events = recurring_ical_events.of(calendar).between(start, end)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise IcsError(f"{where}: cannot expand recurring events: {exc}") from None
    # The expanded copies all carry a RECURRENCE-ID: whether an event belongs to a series
    # is only told by the stored components.
    series = {
        str(c.get("UID"))
        for c in calendar.walk("VEVENT")
        if any(key in c for key in ("RRULE", "RDATE", "RECURRENCE-ID"))
    }
    bookings = []
    for event in events:
        if event.name != "VEVENT":
            continue
        try:
            bookings.append(_booking(event, zone, room_hosts, str(event.get("UID")) in series))
        except (ValueError, TypeError, KeyError) as exc:
            uid = str(event.get("UID", "?"))
            raise IcsError(f"{where}: event {uid!r}: {exc}") from None
    return bookings


def _booking(
    event: icalendar.Component, zone: tzinfo, room_hosts: tuple[str, ...], recurring: bool
) -> Booking:
    uid = str(event.get("UID") or "")
    if not uid:
        raise ValueError("has no UID")
    raw_start = event.decoded("DTSTART")
    start = as_aware(raw_start, zone)
    end = _end_of(event, raw_start, start, zone)
    occurrence = (
        as_aware(event.decoded("RECURRENCE-ID"), zone) if "RECURRENCE-ID" in event else None
    )
    if recurring and occurrence is None:
        occurrence = start
    location = str(event.get("LOCATION") or "")
    description = str(event.get("DESCRIPTION") or "")
    return Booking(
        id=f"{uid}/{occurrence.isoformat()}" if recurring and occurrence else uid,
        subject=str(event.get("SUMMARY") or ""),
        organizer=_address(event.get("ORGANIZER")),
        attendees=tuple(_address(a) for a in _as_list(event.get("ATTENDEE"))),
        start=start,
        end=end,
        location=location,
        private=str(event.get("CLASS") or "PUBLIC").upper() in ("PRIVATE", "CONFIDENTIAL"),
        all_day=not isinstance(raw_start, datetime),
        status=_STATUS.get(
            str(event.get("STATUS") or "CONFIRMED").upper(), BookingStatus.CONFIRMED
        ),
        series_id=uid if recurring else None,
        occurrence=occurrence if recurring else None,
        checked_in=CHECKED_IN in event,
        join_links=find_join_links(location, description, room_hosts=room_hosts),
    )


def _end_of(event: icalendar.Component, raw_start: date, start: datetime, zone: tzinfo) -> datetime:
    if "DTEND" in event:
        return as_aware(event.decoded("DTEND"), zone)
    if "DURATION" in event:
        return start + event.decoded("DURATION")
    # RFC 5545 3.6.1: no end means one day for a date, an instant for a date-time.
    if not isinstance(raw_start, datetime):
        return as_aware(raw_start + timedelta(days=1), zone)
    return start + timedelta(minutes=1)


def as_aware(value: date, zone: tzinfo) -> datetime:
    """A DATE as midnight in ``zone``, a floating DATE-TIME as ``zone`` time."""
    if not isinstance(value, datetime):
        return datetime.combine(value, time(), tzinfo=zone)
    if value.tzinfo is None:
        return value.replace(tzinfo=zone)
    return value


def _address(value: Any) -> str:
    if value is None:
        return ""
    name = getattr(value, "params", {}).get("CN")
    text = str(value)
    if text.lower().startswith("mailto:"):
        text = text[7:]
    return str(name) if name else text


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


# -- writing


def new_event(
    subject: str, start: datetime, end: datetime, organizer: str = "", uid: str | None = None
) -> icalendar.Calendar:
    """A calendar holding one new event, as a walk-up booking is stored."""
    calendar = icalendar.Calendar()
    calendar.add("PRODID", PRODID)
    calendar.add("VERSION", "2.0")
    event = icalendar.Event()
    event.add("UID", uid or f"{uuid.uuid4()}@roomsystem")
    event.add("DTSTAMP", datetime.now(start.tzinfo))
    event.add("DTSTART", start)
    event.add("DTEND", end)
    event.add("SUMMARY", subject)
    event.add("STATUS", "CONFIRMED")
    if organizer:
        event.add("ORGANIZER", f"mailto:{organizer}")
    calendar.add_component(event)
    return calendar


def occurrence_component(
    calendar: icalendar.Calendar, booking: Booking, zone: tzinfo
) -> icalendar.Component:
    """The VEVENT that holds ``booking`` alone, made as an override for a series occurrence.

    Changing one occurrence of a series must not change the others, so an occurrence
    gets its own VEVENT with RECURRENCE-ID (RFC 5545 3.8.4.4) before it is edited.
    """
    uid = booking.series_id or booking.id
    events = [c for c in calendar.walk("VEVENT") if str(c.get("UID")) == uid]
    if booking.occurrence is None:
        master = next((e for e in events if "RECURRENCE-ID" not in e), None)
        if master is None:
            raise IcsError(f"event {uid!r} is not in its calendar object")
        return master
    for event in events:
        if (
            "RECURRENCE-ID" in event
            and as_aware(event.decoded("RECURRENCE-ID"), zone) == booking.occurrence
        ):
            return event
    master = next((e for e in events if "RECURRENCE-ID" not in e), None)
    if master is None:
        raise IcsError(f"series {uid!r} has no master event")
    override = icalendar.Event()
    for key, value in master.property_items(recursive=False):
        if key in ("BEGIN", "END", "RRULE", "RDATE", "EXDATE", "DTSTART", "DTEND", "DURATION"):
            continue
        override.add(key, value)
    override.add("RECURRENCE-ID", booking.occurrence)
    override.add("DTSTART", booking.start)
    override.add("DTEND", booking.end)
    calendar.add_component(override)
    return override


def set_property(event: icalendar.Component, name: str, value: Any) -> None:
    if name in event:
        del event[name]
    event.add(name, value)
    sequence = int(event.get("SEQUENCE", 0))
    if "SEQUENCE" in event:
        del event["SEQUENCE"]
    event.add("SEQUENCE", sequence + 1)


def uids_of(calendar: icalendar.Calendar) -> Iterable[str]:
    return {str(c.get("UID")) for c in calendar.walk("VEVENT")}


def set_end(event: icalendar.Component, end: datetime) -> None:
    """Move the event's end, replacing a DURATION if it had one."""
    if "DURATION" in event:
        del event["DURATION"]
    set_property(event, "DTEND", end)


def end_series(calendar: icalendar.Calendar, series_id: str, before: datetime) -> None:
    """Stop the series ``series_id`` so that no occurrence starts at or after ``before``."""
    for event in calendar.walk("VEVENT"):
        if str(event.get("UID")) != series_id or "RRULE" not in event:
            continue
        rule = event["RRULE"]
        if not isinstance(rule, icalendar.vRecur):
            continue
        rule.pop("COUNT", None)
        start = event.decoded("DTSTART")
        last = before - timedelta(seconds=1)
        until: date
        if isinstance(start, datetime):
            # RFC 5545: UNTIL is UTC when DTSTART has a zone, floating when it has none.
            until = last.astimezone(UTC) if start.tzinfo else last.replace(tzinfo=None)
        else:
            until = last.date()
        rule["UNTIL"] = [until]
        set_property(event, "RRULE", rule)
