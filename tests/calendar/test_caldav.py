"""CalDAV against a real Radicale server: what the room sees and what it writes back."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import icalendar
import pytest
from caldav.davclient import DAVClient

from roomsystem.calendar.caldav_backend import CalDavBackend
from roomsystem.calendar.factory import calendar_service
from roomsystem.calendar.model import CalendarError, StaleReason
from roomsystem.calendar.service import CalendarService
from roomsystem.config import CalendarSettings, Settings
from roomsystem.daemon import Daemon
from roomsystem.errors import ConfigError
from roomsystem.statedir import StateDir
from tests.calendar.helpers import OSLO, Clock, started, until_calendar
from tests.calendar.radicale import USER, make_calendar, radicale

ZONE = ZoneInfo(OSLO)
DAY = datetime(2026, 3, 27, tzinfo=ZONE)
_names = itertools.count()

REVIEW = """\
BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//Outlook//EN
BEGIN:VEVENT
UID:review@example.org
DTSTAMP:20260101T000000Z
DTSTART;TZID=Europe/Oslo:20260327T100000
DTEND;TZID=Europe/Oslo:20260327T110000
SUMMARY:Design review
ORGANIZER;CN=Kari:mailto:kari@example.org
LOCATION:https://teams.microsoft.com/l/meetup-join/19%3areview
END:VEVENT
END:VCALENDAR
"""

STANDUP = """\
BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//Outlook//EN
BEGIN:VEVENT
UID:standup@example.org
DTSTAMP:20260101T000000Z
DTSTART;TZID=Europe/Oslo:20260323T090000
DTEND;TZID=Europe/Oslo:20260323T091500
RRULE:FREQ=DAILY;COUNT=10
SUMMARY:Stand-up
END:VEVENT
END:VCALENDAR
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with radicale(tmp_path_factory.mktemp("radicale")) as base:
        yield base


@pytest.fixture
def calendar_url(server: str) -> str:
    return make_calendar(server, f"room-{next(_names)}")


@pytest.fixture
def staff(calendar_url: str) -> Iterator[object]:
    """The calendar as facilities staff see it: another CalDAV client, not the room's."""
    client = DAVClient(
        url=calendar_url, username=USER, password="x", enable_rfc6764=False, require_tls=False
    )
    try:
        yield client.calendar(url=calendar_url)
    finally:
        client.close()


def caldav_settings(url: str, **extra: object) -> CalendarSettings:
    return CalendarSettings.model_validate(
        {"backend": "caldav", "url": url, "timeout_s": 5.0, **extra}
    )


@pytest.fixture
def clock() -> Clock:
    return Clock(DAY.replace(hour=8))


@pytest.fixture
async def service(
    calendar_url: str, tmp_path: Path, clock: Clock
) -> AsyncIterator[CalendarService]:
    state_dir = StateDir(tmp_path / "state")
    state_dir.ensure()
    backend = CalDavBackend(caldav_settings(calendar_url), ZONE)
    running = await started(backend, state_dir, clock, release_no_shows=True, sync_days=20)
    try:
        yield running
    finally:
        await running.close()


def stored_event(staff, uid: str, recurrence: str | None = None) -> icalendar.Component:
    data = staff.object_by_uid(uid).data
    for event in icalendar.Calendar.from_ical(data).walk("VEVENT"):
        rid = event.get("RECURRENCE-ID")
        if (rid is None and recurrence is None) or (
            rid is not None and rid.dt.isoformat() == recurrence
        ):
            return event
    raise AssertionError(f"no event {uid} {recurrence} in {data}")


async def test_a_booking_made_in_the_calendar_appears_in_the_snapshot(service, staff) -> None:
    assert service.state().bookings == ()
    staff.save_event(ical=REVIEW)
    await service.sync()
    (review,) = service.state().bookings
    assert review.model_dump(mode="json")["start"] == "2026-03-27T10:00:00+01:00"
    assert (review.subject, review.organizer) == ("Design review", "Kari")
    assert review.join_links[0].kind == "teams"


async def test_check_in_release_and_end_early_are_written_to_radicale(
    service, staff, clock: Clock
) -> None:
    staff.save_event(ical=REVIEW)
    staff.save_event(ical=STANDUP)
    await service.sync()
    # The stand-up nobody came to is released: that occurrence alone is cancelled.
    clock.now = DAY.replace(hour=9, minute=10)
    assert await service.check_releases() == ["standup@example.org/2026-03-27T09:00:00+01:00"]
    cancelled = stored_event(staff, "standup@example.org", "2026-03-27T09:00:00+01:00")
    assert str(cancelled["STATUS"]) == "CANCELLED"
    assert "Nobody checked in" in str(cancelled["COMMENT"])
    assert "STATUS" not in stored_event(staff, "standup@example.org")
    # The review is checked in, then ended early.
    clock.now = DAY.replace(hour=9, minute=57)
    await service.check_in("review@example.org")
    assert "X-ROOMSYSTEM-CHECKED-IN" in stored_event(staff, "review@example.org")
    clock.now = DAY.replace(hour=10, minute=20, second=5)
    await service.end_early(None)
    end = stored_event(staff, "review@example.org").decoded("DTEND")
    assert end == DAY.replace(hour=10, minute=20, second=5)
    await service.sync()
    review = next(b for b in service.state().bookings if b.id == "review@example.org")
    assert review.checked_in
    assert review.end == end
    assert service.state().current is None


async def test_walk_up_and_extend_go_to_radicale(service, staff, clock: Clock) -> None:
    clock.now = DAY.replace(hour=8, minute=30)
    booked = await service.book(30, "Walk-up meeting")
    await service.extend(booked.id, 15)
    event = stored_event(staff, booked.id)
    assert str(event["SUMMARY"]) == "Walk-up meeting"
    assert event.decoded("DTEND") == DAY.replace(hour=9, minute=15)


async def test_incremental_sync_fetches_only_what_changed(
    service, staff, calendar_url: str
) -> None:
    for number in range(12):
        staff.save_event(ical=REVIEW.replace("review@", f"r{number}@"))
    backend = service.backend
    start, end = service.window()
    full = await backend.sync(start, end, full=True)
    assert (full.full, full.fetched, len(full.bookings)) == (True, 12, 12)
    changed = staff.object_by_uid("r3@example.org")
    changed.data = changed.data.replace("Design review", "Renamed")
    changed.save()
    staff.object_by_uid("r4@example.org").delete()
    result = await backend.sync(start, end)
    assert (result.full, result.fetched) == (False, 2)
    subjects = sorted(b.subject for b in result.bookings)
    assert subjects == ["Design review"] * 10 + ["Renamed"]


async def test_a_server_outage_keeps_the_agenda_and_says_why(tmp_path: Path, clock: Clock) -> None:
    state_dir = StateDir(tmp_path / "state")
    state_dir.ensure()
    with radicale(tmp_path / "own") as base:
        url = make_calendar(base, "room")
        client = DAVClient(url=url, username=USER, password="x", enable_rfc6764=False)
        client.calendar(url=url).save_event(ical=REVIEW)
        client.close()
        service = await started(CalDavBackend(caldav_settings(url), ZONE), state_dir, clock)
        assert len(service.state().bookings) == 1
    try:
        with pytest.raises(CalendarError, match=r"Connection refused|connect"):
            await service.sync()
        state = service.state()
        assert (state.stale, state.stale_reason) == (True, StaleReason.UNREACHABLE)
        assert len(state.bookings) == 1
    finally:
        await service.close()


async def test_credentials_come_from_a_private_file(tmp_path: Path, calendar_url: str) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    os.chmod(secret, 0o644)
    settings = caldav_settings(calendar_url, username=USER, password_file=str(secret))
    backend = CalDavBackend(settings, ZONE)
    with pytest.raises(ConfigError, match="readable by others"):
        await backend.open()
    os.chmod(secret, 0o600)
    await backend.open()
    start, end = DAY, DAY.replace(hour=23)
    assert (await backend.sync(start, end)).bookings == []
    await backend.close()


async def test_the_room_shows_a_radicale_booking_within_seconds(
    settings: Settings, calendar_url: str, staff
) -> None:
    configured = settings.model_copy(
        update={"calendar": caldav_settings(calendar_url, poll_seconds=0.5)}
    )
    daemon = Daemon(configured, lambda s, bus: [calendar_service(s, bus)])
    await daemon.start()
    try:
        now = datetime.now(ZONE).replace(second=0, microsecond=0)
        review = REVIEW.replace(
            "DTSTART;TZID=Europe/Oslo:20260327T100000",
            f"DTSTART;TZID=Europe/Oslo:{(now - timedelta(minutes=2)):%Y%m%dT%H%M%S}",
        ).replace(
            "DTEND;TZID=Europe/Oslo:20260327T110000",
            f"DTEND;TZID=Europe/Oslo:{(now + timedelta(hours=1)):%Y%m%dT%H%M%S}",
        )
        staff.save_event(ical=review)
        state = await until_calendar(daemon.room.bus, lambda s: bool(s.bookings))
        (booking,) = state.bookings
        assert booking.id == "review@example.org"
        assert state.current == booking.id
        headers = {"Authorization": f"Bearer {daemon.room.api_token}"}
        async with aiohttp.ClientSession(daemon.url, headers=headers) as api:
            async with api.post("/api/v1/calendar/checkin", json={}) as response:
                assert response.status == 200, await response.text()
            async with api.post("/api/v1/calendar/end-early", json={}) as response:
                assert response.status == 200, await response.text()
                ended = datetime.fromisoformat((await response.json())["end"])
        stored = stored_event(staff, "review@example.org")
        assert "X-ROOMSYSTEM-CHECKED-IN" in stored
        assert stored.decoded("DTEND") == ended
    finally:
        await daemon.stop()


async def test_a_name_that_does_not_resolve_is_unreachable() -> None:
    backend = CalDavBackend(caldav_settings("http://calendar.invalid/room/"), ZONE)
    try:
        await backend.open()
        with pytest.raises(CalendarError, match=r"calendar\.invalid") as caught:
            await backend.sync(DAY, DAY.replace(hour=23))
        assert caught.value.reason is StaleReason.UNREACHABLE
    finally:
        await backend.close()
