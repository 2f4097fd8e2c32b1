"""The calendar service on the local calendar: check-in, no-show release, walk-up, cache."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from roomsystem.calendar.local import LocalBackend
from roomsystem.calendar.model import BookingStatus, CalendarError, StaleReason
from roomsystem.calendar.service import CalendarService
from roomsystem.calendar.state import PRIVATE_SUBJECT
from roomsystem.commands import CommandError
from roomsystem.lifecycle import Phase
from roomsystem.meeting.state import MeetingState
from roomsystem.statedir import StateDir
from tests.calendar.helpers import (
    OSLO,
    POLICY,
    Clock,
    calendar_of,
    room_bus,
    started,
    until_calendar,
)

ZONE = ZoneInfo(OSLO)
DAY = datetime(2026, 3, 27, tzinfo=ZONE)

ROOM_DAY = """\
BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//test//EN
BEGIN:VEVENT
UID:review@test
DTSTAMP:20260101T000000Z
DTSTART;TZID=Europe/Oslo:20260327T100000
DTEND;TZID=Europe/Oslo:20260327T110000
SUMMARY:Design review
ORGANIZER;CN=Kari:mailto:kari@example.org
END:VEVENT
BEGIN:VEVENT
UID:secret@test
DTSTAMP:20260101T000000Z
DTSTART;TZID=Europe/Oslo:20260327T113000
DTEND;TZID=Europe/Oslo:20260327T120000
CLASS:PRIVATE
SUMMARY:Salary talk
ATTENDEE;CN=Ola:mailto:ola@example.org
END:VEVENT
BEGIN:VEVENT
UID:standup@test
DTSTAMP:20260101T000000Z
DTSTART;TZID=Europe/Oslo:20260323T090000
DTEND;TZID=Europe/Oslo:20260323T091500
RRULE:FREQ=DAILY;COUNT=10
SUMMARY:Stand-up
END:VEVENT
END:VCALENDAR
"""


@pytest.fixture
def clock() -> Clock:
    return Clock(DAY.replace(hour=8))


@pytest.fixture
def state_dir(tmp_path: Path) -> StateDir:
    directory = StateDir(tmp_path / "state")
    directory.ensure()
    return directory


@pytest.fixture
async def service(state_dir: StateDir, clock: Clock) -> AsyncIterator[CalendarService]:
    backend = LocalBackend(state_dir.path / "calendar.sqlite", ZONE)
    running = await started(backend, state_dir, clock, release_no_shows=True)
    await backend.import_ics(ROOM_DAY)
    await running.sync()
    try:
        yield running
    finally:
        await running.close()


def ids(service: CalendarService) -> list[str]:
    return [b.id for b in service.state().bookings]


async def test_bookings_in_the_snapshot_have_iso_times_with_offsets(service) -> None:
    state = service.state()
    review = next(b for b in state.bookings if b.id == "review@test")
    dumped = review.model_dump(mode="json")
    assert dumped["start"] == "2026-03-27T10:00:00+01:00"
    assert dumped["end"] == "2026-03-27T11:00:00+01:00"
    assert (dumped["subject"], dumped["private"], dumped["checked_in"]) == (
        "Design review",
        False,
        False,
    )
    assert state.stale is False
    assert state.stale_reason is None
    assert state.synced_at is not None
    assert state.next == "standup@test/2026-03-27T09:00:00+01:00"
    assert state.current is None


async def test_private_bookings_hide_subject_and_attendees(service) -> None:
    secret = next(b for b in service.state().bookings if b.id == "secret@test")
    assert (secret.subject, secret.organizer, secret.attendees) == (PRIVATE_SUBJECT, "", ())


async def test_check_in_opens_five_minutes_before_start(service, clock: Clock) -> None:
    clock.now = DAY.replace(hour=9, minute=54)
    with pytest.raises(CommandError, match="open from 09:55 to 10:10") as refused:
        await service.check_in("review@test")
    assert refused.value.status == 409
    clock.advance(minutes=2)
    entry = await service.check_in(None)  # the next booking is the one to check in to
    assert (entry.id, entry.checked_in, entry.release_at) == ("review@test", True, None)
    clock.advance(minutes=30)
    assert await service.check_releases() == []
    assert calendar_of(service._bus).bookings[2].checked_in


async def test_a_no_show_is_released_in_the_calendar(service, clock: Clock) -> None:
    clock.now = DAY.replace(hour=10, minute=9)
    review = next(b for b in service.state().bookings if b.id == "review@test")
    assert review.release_at == DAY.replace(hour=10, minute=10)
    assert await service.check_releases() == []
    clock.advance(minutes=1)
    assert await service.check_releases() == ["review@test"]
    assert "review@test" not in ids(service)
    # The calendar itself has it cancelled, and a new sync does not bring it back.
    start, end = service.window()
    stored = await service.backend.sync(start, end)
    assert next(b for b in stored.bookings if b.id == "review@test").status is (
        BookingStatus.CANCELLED
    )
    await service.sync()
    assert "review@test" not in ids(service)
    with pytest.raises(CommandError, match="no booking 'review@test'"):
        await service.check_in("review@test")


async def test_repeated_no_shows_decline_the_rest_of_the_series(
    state_dir: StateDir, clock: Clock
) -> None:
    backend = LocalBackend(state_dir.path / "calendar.sqlite", ZONE)
    clock.now = datetime(2026, 3, 23, 8, tzinfo=ZONE)
    service = await started(
        backend, state_dir, clock, release_no_shows=True, decline_series_after=2, sync_days=20
    )
    try:
        await backend.import_ics(ROOM_DAY)
        await service.sync()
        standups = [i for i in ids(service) if i.startswith("standup@test")]
        assert len(standups) == 10
        for day in (23, 24):
            clock.now = datetime(2026, 3, day, 9, 10, tzinfo=ZONE)
            assert await service.check_releases() == [f"standup@test/2026-03-{day}T09:00:00+01:00"]
        await service.sync()
        assert [i for i in ids(service) if i.startswith("standup@test")] == []
    finally:
        await service.close()


async def test_checking_in_resets_the_no_show_count(state_dir: StateDir, clock: Clock) -> None:
    backend = LocalBackend(state_dir.path / "calendar.sqlite", ZONE)
    clock.now = datetime(2026, 3, 23, 8, tzinfo=ZONE)
    service = await started(
        backend, state_dir, clock, release_no_shows=True, decline_series_after=2, sync_days=20
    )
    try:
        await backend.import_ics(ROOM_DAY)
        await service.sync()
        clock.now = datetime(2026, 3, 23, 9, 10, tzinfo=ZONE)
        assert len(await service.check_releases()) == 1
        clock.now = datetime(2026, 3, 24, 9, 1, tzinfo=ZONE)
        await service.check_in(None)
        clock.now = datetime(2026, 3, 25, 9, 10, tzinfo=ZONE)
        assert len(await service.check_releases()) == 1
        await service.sync()
        assert len([i for i in ids(service) if i.startswith("standup@test")]) == 8
    finally:
        await service.close()


async def test_release_is_off_unless_configured(state_dir: StateDir, clock: Clock) -> None:
    backend = LocalBackend(state_dir.path / "calendar.sqlite", ZONE)
    service = await started(backend, state_dir, clock)
    try:
        await backend.import_ics(ROOM_DAY)
        await service.sync()
        clock.now = DAY.replace(hour=10, minute=30)
        assert await service.check_releases() == []
        assert all(b.release_at is None for b in service.state().bookings)
        assert service.state().current == "review@test"
    finally:
        await service.close()


async def test_walk_up_booking_fits_before_the_next_booking(service, clock: Clock) -> None:
    clock.now = DAY.replace(hour=9, minute=20, second=31)
    entry = await service.book(30, "Walk-up meeting")
    assert (entry.start.isoformat(), entry.end.isoformat()) == (
        "2026-03-27T09:20:00+01:00",
        "2026-03-27T09:50:00+01:00",
    )
    assert entry.walk_up
    assert entry.checked_in
    assert entry.release_at is None
    with pytest.raises(CommandError, match="booked until 09:50"):
        await service.book(15, "Another")
    await service.sync()
    assert service.state().current == entry.id  # stored in the calendar, not only shown
    with pytest.raises(CommandError, match="cannot extend: the room is free only until 10:00"):
        await service.extend(None, 15)
    clock.advance(minutes=5)
    ended = await service.end_early(None)
    assert ended.end.isoformat() == "2026-03-27T09:25:31+01:00"
    await service.sync()
    stored = next(b for b in service.state().bookings if b.id == entry.id)
    assert stored.end == ended.end
    clock.now = DAY.replace(hour=9, minute=40)
    with pytest.raises(CommandError, match="free only until 10:00"):
        await service.book(60, "Long one")
    assert (await service.book(15, "Short one")).end.isoformat() == "2026-03-27T09:55:00+01:00"


async def test_extend_and_end_early_of_a_booked_meeting(service, clock: Clock) -> None:
    clock.now = DAY.replace(hour=10, minute=50)
    assert (await service.extend(None, 30)).end.isoformat() == "2026-03-27T11:30:00+01:00"
    with pytest.raises(CommandError, match="free only until 11:30"):
        await service.extend("review@test", 15)
    clock.now = DAY.replace(hour=11, minute=5)
    await service.end_early("review@test")
    await service.sync()
    review = next(b for b in service.state().bookings if b.id == "review@test")
    assert review.end.isoformat() == "2026-03-27T11:05:00+01:00"
    with pytest.raises(CommandError, match="not under way"):
        await service.end_early("secret@test")


async def test_starting_the_booked_meeting_counts_as_check_in(
    state_dir: StateDir, clock: Clock
) -> None:
    backend = LocalBackend(state_dir.path / "calendar.sqlite", ZONE)
    bus = room_bus()
    service = await started(backend, state_dir, clock, bus, release_no_shows=True)
    await backend.import_ics(ROOM_DAY)
    await service.sync()
    clock.now = DAY.replace(hour=10, minute=2)
    watcher = asyncio.create_task(service._follow_meetings())
    try:
        await asyncio.sleep(0)
        bus.publish(
            "meeting",
            MeetingState(policy=POLICY, in_meeting=True, booking_id="review@test"),
        )
        await until_calendar(bus, lambda s: s.bookings[2].checked_in)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await service.close()


class BrokenBackend(LocalBackend):
    """The local calendar, with a sync that fails as a remote server can."""

    async def sync(self, start, end, full=False):
        raise CalendarError(StaleReason.UNREACHABLE, "calendar.example.org: connection refused")


async def test_the_kept_agenda_survives_a_restart_and_an_outage(
    service, state_dir: StateDir, clock: Clock
) -> None:
    clock.now = DAY.replace(hour=10, minute=1)
    await service.check_in("review@test")
    before = ids(service)
    await service.close()
    broken = BrokenBackend(state_dir.path / "calendar.sqlite", ZONE)
    broken.name = "local"
    again = CalendarService(service.settings, OSLO, state_dir, room_bus(), broken, clock)
    await again.setup(Phase.PROFILES)
    assert ids(again) == before
    assert again.state().stale_reason is StaleReason.NOT_SYNCED
    with pytest.raises(CalendarError):
        await again.sync()
    state = again.state()
    assert ids(again) == before
    assert (state.stale, state.stale_reason) == (True, StaleReason.UNREACHABLE)
    assert "connection refused" in (state.stale_message or "")
    assert next(b for b in state.bookings if b.id == "review@test").checked_in
    await again.close()


async def test_a_server_returning_too_many_bookings_is_capped(
    state_dir: StateDir, clock: Clock
) -> None:
    backend = LocalBackend(state_dir.path / "calendar.sqlite", ZONE)
    service = await started(backend, state_dir, clock, max_bookings=10)
    try:
        events = "".join(
            f"BEGIN:VEVENT\nUID:e{i}\nDTSTAMP:20260101T000000Z\n"
            f"DTSTART:20260327T{10 + i // 60:02d}{i % 60:02d}00Z\nDURATION:PT1M\nEND:VEVENT\n"
            for i in range(50)
        )
        await backend.import_ics(f"BEGIN:VCALENDAR\nVERSION:2.0\n{events}END:VCALENDAR\n")
        await service.sync()
        state = service.state()
        assert len(state.bookings) == 10
        assert state.stale_reason is StaleReason.TOO_MANY
        assert "returned 50 bookings" in (state.stale_message or "")
    finally:
        await service.close()


async def test_a_broken_import_changes_nothing(service) -> None:
    before = ids(service)
    broken = ROOM_DAY.replace("UID:review@test", "UID:other").replace(
        "DTSTART;TZID=Europe/Oslo:20260327T113000", "DTSTART:tomorrow"
    )
    with pytest.raises(CalendarError, match="ICS import"):
        await service.backend.import_ics(broken)
    await service.sync()
    assert ids(service) == before


def test_sample_bookings_show_a_demo_day(tmp_path: Path) -> None:
    from roomsystem.calendar.local import sample_calendar

    calendar = sample_calendar(datetime(2026, 3, 27, 8, 20, tzinfo=UTC), ZONE)
    subjects = {str(e.get("SUMMARY")) for e in calendar.walk("VEVENT")}
    assert {"Quarterly planning", "One-to-one", "Customer call", "Daily stand-up"} == subjects
    assert timedelta(0) < timedelta(hours=1)


async def test_all_day_events_neither_block_nor_get_released(service, clock: Clock) -> None:
    await service.backend.import_ics(
        "BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//t//EN\nBEGIN:VEVENT\nUID:offsite@test\n"
        "DTSTAMP:20260101T000000Z\nDTSTART;VALUE=DATE:20260327\nDTEND;VALUE=DATE:20260328\n"
        "SUMMARY:Offsite\nEND:VEVENT\nEND:VCALENDAR\n"
    )
    await service.sync()
    clock.now = DAY.replace(hour=8, minute=30)
    offsite = next(b for b in service.state().bookings if b.id == "offsite@test")
    assert offsite.all_day
    assert offsite.release_at is None
    assert offsite.start.isoformat() == "2026-03-27T00:00:00+01:00"
    assert service.state().current is None
    assert (await service.book(15, "Quick chat")).walk_up
    clock.now = DAY.replace(hour=23)
    assert "offsite@test" not in await service.check_releases()
