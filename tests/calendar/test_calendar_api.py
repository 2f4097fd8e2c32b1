"""The demo room's calendar through the API: sample bookings, walk-up, errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roomsystem.calendar.factory import calendar_service
from roomsystem.config import Settings
from roomsystem.daemon import Daemon
from tests.calendar.helpers import until_calendar


@pytest.fixture
async def room(settings: Settings) -> AsyncIterator[Daemon]:
    running = Daemon(settings, lambda s, bus: [calendar_service(s, bus)])
    await running.start()
    try:
        await asyncio.wait_for(running.room.ready.wait(), 10)
        await until_calendar(running.room.bus, lambda s: s.synced_at is not None)
        yield running
    finally:
        await running.stop()


async def call(
    daemon: Daemon, method: str, path: str, body: Any = None
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {daemon.room.api_token}"}
    async with aiohttp.ClientSession(daemon.url, headers=headers) as session:
        async with session.request(method, f"/api/v1/{path}", json=body) as response:
            return response.status, await response.json()


async def test_the_demo_room_shows_sample_bookings(room: Daemon) -> None:
    status, state = await call(room, "GET", "state")
    assert status == 200
    calendar = state["calendar"]
    assert calendar["backend"] == "local"
    assert calendar["stale"] is False
    subjects = {b["subject"] for b in calendar["bookings"]}
    assert {"Quarterly planning", "Private meeting", "Customer call"} <= subjects
    for booking in calendar["bookings"]:
        assert {"id", "subject", "start", "end", "private", "checked_in"} <= booking.keys()
        assert booking["start"][-6] in "+-" or booking["start"].endswith("Z")
    planning = next(b for b in calendar["bookings"] if b["subject"] == "Quarterly planning")
    assert calendar["current"] == planning["id"]
    teams = next(b for b in calendar["bookings"] if b["subject"] == "Customer call")
    assert teams["join_links"][0]["kind"] == "teams"


async def test_check_in_and_end_early_through_the_api(room: Daemon) -> None:
    status, entry = await call(room, "POST", "calendar/checkin", {})
    assert status == 200, entry
    assert entry["checked_in"] is True
    status, ended = await call(room, "POST", "calendar/end-early", {"booking": entry["id"]})
    assert status == 200, ended
    status, synced = await call(room, "POST", "calendar/sync", {})
    assert status == 200
    kept = next(b for b in synced["bookings"] if b["id"] == entry["id"])
    assert kept["end"] == ended["end"]
    assert synced["current"] is None
    status, walk_up = await call(room, "POST", "calendar/book", {"minutes": 15})
    assert status == 200, walk_up
    assert walk_up["walk_up"] is True


async def test_bad_requests_get_clear_errors(room: Daemon) -> None:
    status, body = await call(room, "POST", "calendar/book", {"minutes": 20})
    assert status == 422
    assert body["error"]["problems"][0]["field"] == "minutes"
    status, body = await call(room, "POST", "calendar/checkin", {"booking": "nope"})
    assert (status, body["error"]["message"]) == (404, "no booking 'nope' in the agenda")
    status, body = await call(room, "POST", "calendar/import", {"ics": "BEGIN:VCALENDAR\nx"})
    assert status == 422
    assert "ICS import" in body["error"]["message"]
    status, body = await call(room, "POST", "calendar/book", {"minutes": 60})
    assert status == 409
    assert "booked until" in body["error"]["message"]


async def test_ics_import_through_the_api(room: Daemon) -> None:
    ics = (
        "BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//t//EN\nBEGIN:VEVENT\nUID:imported@test\n"
        "DTSTAMP:20260101T000000Z\nDTSTART;VALUE=DATE:20991231\nSUMMARY:Far away\n"
        "END:VEVENT\nEND:VCALENDAR\n"
    )
    status, body = await call(room, "POST", "calendar/import", {"ics": ics})
    assert (status, body) == (200, {"events": 1})


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(["checkin", "book", "extend", "end-early", "import"]),
    body=st.dictionaries(
        st.sampled_from(["booking", "minutes", "subject", "ics", "x"]),
        st.one_of(st.none(), st.integers(), st.text(max_size=30), st.booleans()),
        max_size=3,
    ),
)
async def test_fuzzed_commands_never_break_the_room(room: Daemon, path: str, body: dict) -> None:
    status, answer = await call(room, "POST", f"calendar/{path}", body)
    assert status in (200, 404, 409, 422), answer
    if status != 200:
        assert answer["error"]["message"]
    service_state = (await call(room, "GET", "state"))[1]["lifecycle"]["services"][0]
    assert service_state["state"] == "running"
