"""iCalendar to bookings: time zones across DST, series with exceptions, all-day, privacy."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomsystem.calendar import ics
from roomsystem.calendar.links import find_join_links
from roomsystem.calendar.model import BookingStatus, CalendarError

OSLO = ZoneInfo("Europe/Oslo")

# A weekly series on Mondays 09:00 Oslo time across the DST change of 29 March 2026,
# with one occurrence moved (30 March to 10:00) and one cancelled (13 April), an all-day
# event and a private booking.
SERIES = """\
BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//test//EN
BEGIN:VEVENT
UID:weekly@test
DTSTAMP:20260101T000000Z
DTSTART;TZID=Europe/Oslo:20260316T090000
DTEND;TZID=Europe/Oslo:20260316T100000
RRULE:FREQ=WEEKLY;COUNT=6
SUMMARY:Weekly sync
ORGANIZER;CN=Kari Nordmann:mailto:kari@example.org
ATTENDEE;CN=Ola:mailto:ola@example.org
LOCATION:https://meet.google.com/abc-defg-hij
END:VEVENT
BEGIN:VEVENT
UID:weekly@test
DTSTAMP:20260101T000000Z
RECURRENCE-ID;TZID=Europe/Oslo:20260330T090000
DTSTART;TZID=Europe/Oslo:20260330T100000
DTEND;TZID=Europe/Oslo:20260330T110000
SUMMARY:Weekly sync (moved)
END:VEVENT
BEGIN:VEVENT
UID:weekly@test
DTSTAMP:20260101T000000Z
RECURRENCE-ID;TZID=Europe/Oslo:20260413T090000
DTSTART;TZID=Europe/Oslo:20260413T090000
DTEND;TZID=Europe/Oslo:20260413T100000
STATUS:CANCELLED
SUMMARY:Weekly sync
END:VEVENT
BEGIN:VEVENT
UID:allday@test
DTSTAMP:20260101T000000Z
DTSTART;VALUE=DATE:20260327
DTEND;VALUE=DATE:20260328
SUMMARY:Offsite
END:VEVENT
BEGIN:VEVENT
UID:private@test
DTSTAMP:20260101T000000Z
DTSTART:20260325T120000Z
DTEND:20260325T130000Z
CLASS:PRIVATE
SUMMARY:Salary talk
DESCRIPTION:Join: https://acme.zoom.us/j/123456789?pwd=x and https://room.example.org/m/42
END:VEVENT
END:VCALENDAR
"""


def bookings():
    calendar = ics.parse_calendar(SERIES, "test.ics")
    start = datetime(2026, 3, 1, tzinfo=OSLO)
    return ics.expand(calendar, start, start + timedelta(days=60), OSLO, ("room.example.org",))


def test_a_series_keeps_its_local_time_across_the_dst_change() -> None:
    weekly = [b for b in bookings() if b.series_id == "weekly@test"]
    starts = [b.start.isoformat() for b in weekly]
    assert starts == [
        "2026-03-16T09:00:00+01:00",
        "2026-03-23T09:00:00+01:00",
        "2026-03-30T10:00:00+02:00",  # the moved occurrence, after the change to summer time
        "2026-04-06T09:00:00+02:00",
        "2026-04-13T09:00:00+02:00",
        "2026-04-20T09:00:00+02:00",
    ]
    assert all(b.end - b.start == timedelta(hours=1) for b in weekly)


def test_exception_and_cancelled_occurrence_are_their_own_bookings() -> None:
    weekly = {b.start.date().isoformat(): b for b in bookings() if b.series_id == "weekly@test"}
    moved = weekly["2026-03-30"]
    assert moved.subject == "Weekly sync (moved)"
    assert moved.occurrence == datetime(2026, 3, 30, 9, tzinfo=OSLO)
    assert moved.id == "weekly@test/2026-03-30T09:00:00+02:00"
    assert weekly["2026-04-13"].status is BookingStatus.CANCELLED
    assert weekly["2026-04-06"].status is BookingStatus.CONFIRMED
    assert len({b.id for b in weekly.values()}) == 6
    first = weekly["2026-03-16"]
    assert first.organizer == "Kari Nordmann"
    assert first.attendees == ("Ola",)
    assert [(link.kind, link.url) for link in first.join_links] == [
        ("meet", "https://meet.google.com/abc-defg-hij")
    ]


def test_all_day_events_span_the_local_day() -> None:
    offsite = next(b for b in bookings() if b.id == "allday@test")
    assert offsite.all_day
    assert offsite.start.isoformat() == "2026-03-27T00:00:00+01:00"
    assert offsite.end.isoformat() == "2026-03-28T00:00:00+01:00"


def test_private_bookings_and_join_links_of_the_room_and_others() -> None:
    private = next(b for b in bookings() if b.id == "private@test")
    assert private.private
    assert [link.kind for link in private.join_links] == ["zoom", "room"]


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("https://teams.microsoft.com/l/meetup-join/19%3a", ["teams"]),
        ("<https://company.webex.com/meet/pr123>.", ["webex"]),
        ("https://meet.jit.si/MyRoom, https://meet.jit.si/MyRoom", ["jitsi"]),
        ("http://zoom.us/j/1 (not https) https://evilzoom.us/j/1 https://example.org", []),
        ("https://us02web.zoom.us/j/85?pwd=abc", ["zoom"]),
    ],
)
def test_join_link_kinds(text: str, kinds: list[str]) -> None:
    assert [link.kind for link in find_join_links(text)] == kinds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not a calendar", "test.ics: not valid iCalendar"),
        (
            "BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:x\nDTSTART:garbage\nEND:VEVENT\nEND:VCALENDAR\n",
            "test.ics",
        ),
        ("BEGIN:VEVENT\nUID:x\nEND:VEVENT\n", "test.ics: not a VCALENDAR"),
    ],
)
def test_broken_ics_is_a_calendar_error_naming_the_source(text: str, message: str) -> None:
    start = datetime(2026, 1, 1, tzinfo=OSLO)

    def read() -> None:
        calendar = ics.parse_calendar(text, "test.ics")
        ics.expand(calendar, start, start + timedelta(days=1), OSLO, where="test.ics")

    with pytest.raises(CalendarError, match=message):
        read()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_any_text_either_parses_or_is_a_calendar_error(text: str) -> None:
    start = datetime(2026, 1, 1, tzinfo=OSLO)
    try:
        calendar = ics.parse_calendar("BEGIN:VCALENDAR\n" + text + "\nEND:VCALENDAR\n", "fuzz")
        ics.expand(calendar, start, start + timedelta(days=400), OSLO, where="fuzz")
    except CalendarError as exc:
        assert str(exc).startswith("fuzz")


def test_editing_one_occurrence_leaves_the_others() -> None:
    calendar = ics.parse_calendar(SERIES, "test.ics")
    start = datetime(2026, 3, 1, tzinfo=OSLO)
    window = (start, start + timedelta(days=60))
    target = next(b for b in bookings() if b.start.date().isoformat() == "2026-04-06")
    ics.set_end(
        ics.occurrence_component(calendar, target, OSLO), target.start + timedelta(minutes=5)
    )
    ics.end_series(calendar, "weekly@test", datetime(2026, 4, 15, tzinfo=OSLO))
    again = ics.expand(calendar, *window, OSLO)
    weekly = {b.start.date().isoformat(): b for b in again if b.series_id == "weekly@test"}
    assert weekly["2026-04-06"].end - weekly["2026-04-06"].start == timedelta(minutes=5)
    assert weekly["2026-03-23"].end - weekly["2026-03-23"].start == timedelta(hours=1)
    assert "2026-04-20" not in weekly  # the series ends before 15 April
    assert "2026-04-13" in weekly
