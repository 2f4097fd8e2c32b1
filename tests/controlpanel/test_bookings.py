"""Book now and Check in on the panel's Home screen, tapped through Kivy's own touch events.

The room's local calendar starts empty (no sample bookings) and each test puts in the
bookings it needs with the room's ``calendar/import`` command, placed relative to now, so
the tests do not depend on the time of day. No-shows are released, so bookings wait for
check-in.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from controlpanel.pilot import PilotError, PilotProcess
from roomsystem.calendar.state import BookingEntry, CalendarState
from roomsystem.config import Settings
from tests.conftest import loopback_demo_settings
from tests.controlpanel.conftest import DemoRoom
from tests.controlpanel.screens import screenshot_dir
from tests.controlpanel.test_panel import PANEL, panel, shoot, until

RELEASE_AFTER_MIN = 10
CHECKIN_BEFORE_MIN = 5
COUNTDOWN = re.compile(r"^Released in (\d+):(\d\d) without check-in$")


@pytest.fixture
def checkin_before_min() -> int:
    """Minutes before its start that a booking can be checked in to (a test may change it)."""
    return CHECKIN_BEFORE_MIN


@pytest.fixture
def settings(tmp_path: Path, checkin_before_min: int) -> Settings:
    """The demo room with an empty local calendar that releases bookings nobody checks in to."""
    base = loopback_demo_settings(tmp_path / "state")
    calendar = base.calendar.model_copy(
        update={
            "sample_bookings": False,
            "release_no_shows": True,
            "release_after_min": RELEASE_AFTER_MIN,
            "checkin_before_min": checkin_before_min,
        }
    )
    return base.model_copy(update={"calendar": calendar})


def calendar(room: DemoRoom) -> CalendarState:
    state = room.topic("calendar")
    assert isinstance(state, CalendarState)
    return state


def booking(room: DemoRoom, booking_id: str) -> BookingEntry | None:
    return next((b for b in calendar(room).bookings if b.id == booking_id), None)


def ics_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def one_event(
    uid: str,
    summary: str,
    start: datetime,
    minutes: int,
    private: bool = False,
    organizer: str = "Dana Scully",
) -> str:
    """An iCalendar file with one event, as a calendar client exports it."""
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//roomsystem tests//bookings//EN",
        "BEGIN:VEVENT",
        f"UID:{uid}",
        f"DTSTAMP:{ics_time(datetime.now(UTC))}",
        f"DTSTART:{ics_time(start)}",
        f"DTEND:{ics_time(start + timedelta(minutes=minutes))}",
        f"SUMMARY:{summary}",
        f"ORGANIZER;CN={organizer}:mailto:dana@example.org",
        *(["CLASS:PRIVATE"] if private else []),
        "END:VEVENT",
        "END:VCALENDAR",
    ]
    return "\r\n".join(lines) + "\r\n"


async def command(room: DemoRoom, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """Send a command to the room's API as any client does; its answer (must be 200)."""
    headers = {"Authorization": f"Bearer {room.token}"}
    async with aiohttp.ClientSession(room.url, headers=headers) as session:
        async with session.post(f"/api/v1/{path}", json=body) as response:
            answer: dict[str, Any] = await response.json()
            assert response.status == 200, answer
            return answer


async def import_booking(room: DemoRoom, uid: str, ics: str) -> BookingEntry:
    """Import ``ics`` and wait until the room's agenda has its booking."""
    assert await command(room, "calendar/import", {"ics": ics}) == {"events": 1}
    await until(room, lambda: booking(room, uid) is not None)
    found = booking(room, uid)
    assert found is not None
    return found


async def wait_for(app: PilotProcess, seconds: float, **fields: Any) -> dict[str, Any]:
    """The pilot's ``wait`` (which gives up after 5 s), repeated for up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await app.request("wait", **fields)
        except PilotError as exc:
            if "timed out" not in str(exc) or time.monotonic() > deadline:
                raise


async def disabled(app: PilotProcess, name: str) -> bool:
    return bool((await app.request("info", name=name))["disabled"])


def countdown_seconds(text: str) -> int:
    match = COUNTDOWN.match(text)
    assert match, text
    return int(match[1]) * 60 + int(match[2])


@pytest.mark.timeout(120)
async def test_book_now_for_30_minutes(demo_room: DemoRoom, tmp_path: Path) -> None:
    async with panel(demo_room, tmp_path) as app:
        assert calendar(demo_room).bookings == ()
        await app.request("wait", name="now", contains="Free for the rest of the day")
        for minutes in (15, 30, 60):
            assert not await disabled(app, f"book_{minutes}"), minutes
        assert await disabled(app, "check_in")
        assert await disabled(app, "start")

        tapped = datetime.now(UTC)
        await app.request("tap", name="book_30")
        await until(demo_room, lambda: calendar(demo_room).current is not None)
        state = calendar(demo_room)
        walk_up = booking(demo_room, str(state.current))
        assert walk_up is not None
        assert walk_up.walk_up
        assert walk_up.checked_in
        assert walk_up.subject == "Walk-up meeting"
        assert walk_up.release_at is None
        assert abs(walk_up.end - (tapped + timedelta(minutes=30))) <= timedelta(minutes=1)
        assert walk_up.start <= datetime.now(UTC) < walk_up.end

        span = f"{walk_up.start:%H:%M}\u2013{walk_up.end:%H:%M}"  # the room's zone is UTC
        shown = await app.request("wait", name="now", contains="Walk-up meeting")
        assert span in shown["text"], shown["text"]
        # The room is taken now: no more Book now, and nothing to check in to.
        for minutes in (15, 30, 60):
            assert await disabled(app, f"book_{minutes}"), minutes
        assert await disabled(app, "check_in")
        assert (await app.request("info", name="checkin_countdown"))["text"] == ""
        assert (await app.request("info", name="start"))["text"] == "Start: Walk-up meeting"
        assert not await disabled(app, "start")


@pytest.mark.timeout(120)
async def test_check_in_to_a_booking_about_to_start(demo_room: DemoRoom, tmp_path: Path) -> None:
    shots = screenshot_dir(tmp_path)
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=2)
    uid = "design-review@example.org"
    review = await import_booking(demo_room, uid, one_event(uid, "Design review", start, 30))
    assert not review.checked_in
    assert review.release_at == start + timedelta(minutes=RELEASE_AFTER_MIN)

    async with panel(demo_room, tmp_path) as app:
        await app.request("wait", name="next_0", contains="Design review")
        await app.request("wait", name="now", contains=f"Free until {start:%H:%M}")
        shown = await app.request("wait", name="checkin_countdown", contains="Released in")
        left = countdown_seconds(shown["text"])
        expected = (review.release_at - datetime.now(UTC)).total_seconds()
        assert abs(left - expected) <= 3, (shown["text"], expected)
        assert not await disabled(app, "check_in")
        # Free for a minute only: too short for any walk-up booking.
        for minutes in (15, 30, 60):
            assert await disabled(app, f"book_{minutes}"), minutes
        await shoot(app, shots / "panel-home-checkin.png", PANEL)

        await app.request("tap", name="check_in")
        await until(demo_room, lambda: (b := booking(demo_room, uid)) is not None and b.checked_in)
        checked = booking(demo_room, uid)
        assert checked is not None
        assert checked.release_at is None
        await app.request("wait", name="checkin_countdown", not_contains="Released")
        assert await disabled(app, "check_in")
        assert (await app.request("info", name="next_0"))["text"].endswith("Design review")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("checkin_before_min", [0])
async def test_a_booking_starts_while_the_panel_looks_on(
    demo_room: DemoRoom, tmp_path: Path
) -> None:
    # Check-in opens as the booking starts, a few seconds from now; the room itself
    # changes nothing at that moment, so only the panel's clock can show it.
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=8)
    uid = "standup@example.org"
    await import_booking(demo_room, uid, one_event(uid, "Team stand-up", start, 15))

    async with panel(demo_room, tmp_path) as app:
        await app.request("wait", name="next_0", contains="Team stand-up")
        if datetime.now(UTC) < start - timedelta(seconds=1):
            assert (await app.request("info", name="now"))["text"].startswith("Free until")
            assert await disabled(app, "check_in")
            assert await disabled(app, "start")
        await wait_for(app, 20, name="now", contains="Team stand-up")
        assert datetime.now(UTC) >= start
        shown = await app.request("wait", name="checkin_countdown", contains="Released in")
        assert countdown_seconds(shown["text"]) > (RELEASE_AFTER_MIN - 1) * 60
        assert not await disabled(app, "check_in")
        assert not await disabled(app, "start")
        assert (await app.request("info", name="next_0"))["text"] == ""
        for minutes in (15, 30, 60):
            assert await disabled(app, f"book_{minutes}"), minutes

        await app.request("tap", name="check_in")
        await until(demo_room, lambda: (b := booking(demo_room, uid)) is not None and b.checked_in)
        await app.request("wait", name="checkin_countdown", not_contains="Released")
        assert await disabled(app, "check_in")


@pytest.mark.timeout(120)
async def test_a_private_booking_shows_no_details(demo_room: DemoRoom, tmp_path: Path) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    uid = "salaries@example.org"
    entry = await import_booking(
        demo_room, uid, one_event(uid, "Salary review", start, 30, private=True)
    )
    assert (entry.subject, entry.organizer, entry.private) == ("Private meeting", "", True)

    async with panel(demo_room, tmp_path) as app:
        shown = await app.request("wait", name="now", contains="Private meeting")
        assert "Salary review" not in shown["text"]
        assert "Dana" not in shown["text"]
        assert (await app.request("info", name="start"))["text"] == "Start: Private meeting"
        # It started a minute ago and nobody has checked in yet.
        assert countdown_seconds((await app.request("info", name="checkin_countdown"))["text"])
        assert not await disabled(app, "check_in")
