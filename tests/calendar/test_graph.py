"""Graph through msal and aiohttp against a fake identity platform and Graph over HTTPS."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from roomsystem.calendar.graph import GraphBackend, parse_page
from roomsystem.calendar.model import CalendarError, StaleReason
from roomsystem.calendar.service import CalendarService
from roomsystem.config import CalendarSettings
from roomsystem.statedir import StateDir
from tests.calendar.fake_graph import (
    CLIENT_ID,
    SECRET,
    TENANT,
    FakeGraph,
    make_certificate,
    server_context,
)
from tests.calendar.helpers import OSLO, Clock, started

ZONE = ZoneInfo(OSLO)


def at(hour: int, minute: int = 0, day: int = 27) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=ZONE)


@pytest.fixture
async def graph(tmp_path: Path) -> AsyncIterator[tuple[FakeGraph, Path]]:
    cert, key = make_certificate(tmp_path)
    fake = FakeGraph()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(cert, key))
    await site.start()
    fake.base = f"https://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield fake, cert
    finally:
        await runner.cleanup()


def graph_settings(
    fake: FakeGraph, cert: Path, tmp_path: Path, secret: str = SECRET
) -> CalendarSettings:
    secret_file = tmp_path / "graph-secret"
    secret_file.write_text(secret)
    os.chmod(secret_file, 0o600)
    return CalendarSettings.model_validate(
        {
            "backend": "graph",
            "url": f"{fake.base}/v1.0",
            "mailbox": fake.mailbox,
            "graph_tenant": TENANT,
            "graph_client_id": CLIENT_ID,
            "graph_authority": fake.base,
            "password_file": str(secret_file),
            "ca_file": str(cert),
            "timeout_s": 5.0,
        }
    )


@pytest.fixture
def clock() -> Clock:
    return Clock(at(8))


@pytest.fixture
async def service(graph, tmp_path: Path, clock: Clock) -> AsyncIterator[CalendarService]:
    fake, cert = graph
    fake.add(
        "Design review",
        at(10),
        at(11),
        id="review",
        onlineMeeting={"joinUrl": "https://teams.microsoft.com/l/meetup-join/19%3areview"},
        attendees=[{"emailAddress": {"name": "Ola", "address": "ola@contoso.com"}}],
    )
    fake.add("Salary", at(12), at(13), id="secret", sensitivity="private")
    fake.add_series("Stand-up", at(9, day=23), 15, 10)
    state_dir = StateDir(tmp_path / "state")
    state_dir.ensure()
    backend = GraphBackend(graph_settings(fake, cert, tmp_path), ZONE)
    running = await started(
        backend, state_dir, clock, release_no_shows=True, decline_series_after=2
    )
    try:
        yield running
    finally:
        await running.close()


async def test_calendar_view_delta_fills_the_snapshot(service, graph) -> None:
    fake, _ = graph
    today = [b for b in service.state().bookings if b.start.date() == at(0).date()]
    assert [(b.subject, b.start.isoformat()) for b in today] == [
        ("Stand-up", "2026-03-27T09:00:00+01:00"),
        ("Design review", "2026-03-27T10:00:00+01:00"),
        ("Private meeting", "2026-03-27T12:00:00+01:00"),
    ]
    review = today[1]
    assert review.attendees == ("Ola",)
    assert [(link.kind, link.url) for link in review.join_links] == [
        ("teams", "https://teams.microsoft.com/l/meetup-join/19%3areview")
    ]
    standups = [b for b in service.state().bookings if b.series_id]
    assert "2026-03-30T09:00:00+02:00" in {b.start.isoformat() for b in standups}
    assert fake.tokens_issued == 1


async def test_delta_link_returns_only_changes(service, graph) -> None:
    fake, _ = graph
    fake.page_size = 3
    start, end = service.window()
    full = await service.backend.sync(start, end, full=True)
    assert full.full
    pages = [r for r in fake.requests if r.endswith("/calendarView/delta")]
    assert len(pages) >= 3  # followed @odata.nextLink
    fake.update(
        "review",
        subject="Design review (moved)",
        start={"dateTime": "2026-03-27T13:00:00.0000000", "timeZone": "UTC"},
        end={"dateTime": "2026-03-27T14:00:00.0000000", "timeZone": "UTC"},
    )
    fake.remove("secret")
    changed = await service.backend.sync(start, end)
    assert (changed.full, changed.fetched) == (False, 2)
    await service.sync()
    ids = {b.id: b for b in service.state().bookings}
    assert "secret" not in ids
    assert ids["review"].start == at(14)
    assert fake.tokens_issued == 1  # msal's cache kept the token


async def test_no_show_declines_with_a_comment_and_series_after_two(
    service, graph, clock: Clock
) -> None:
    fake, _ = graph
    clock.now = at(10, 10)
    assert await service.check_releases() == ["review"]
    assert "Nobody checked in" in fake.declined["review"]
    for day in (27, 28):
        clock.now = at(9, 10, day=day)
        assert len(await service.check_releases()) == 1
    master = next(i for i in fake.declined if i.startswith("AAMkADmaster") and i.endswith("="))
    assert "last 2 meetings" in fake.declined[master]
    await service.sync()
    assert not [b for b in service.state().bookings if b.series_id]


async def test_walk_up_and_end_early_as_the_room(service, graph, clock: Clock) -> None:
    fake, _ = graph
    clock.now = at(8, 5)
    booked = await service.book(15, "Walk-up meeting")
    assert fake.events[booked.id]["organizer"]["emailAddress"]["address"] == fake.mailbox
    await service.extend(None, 15)
    clock.now = at(8, 20)
    await service.end_early(None)
    assert fake.events[booked.id]["end"]["dateTime"] == "2026-03-27T07:20:00.0000000"
    await service.sync()
    assert next(b for b in service.state().bookings if b.id == booked.id).end == at(8, 20)


async def test_a_walk_up_ended_as_it_began_is_cancelled_by_the_room(
    service, graph, clock: Clock
) -> None:
    fake, _ = graph
    clock.now = at(8, 5)
    booked = await service.book(30, "Walk-up meeting")
    ended = await service.end_early(None)  # still 08:05: nothing of it is kept
    assert ended.status == "cancelled"
    assert fake.cancelled == {booked.id: "Ended early."}
    assert booked.id not in fake.events
    assert fake.declined == {}
    await service.sync()
    assert booked.id not in {b.id for b in service.state().bookings}


async def test_a_released_meeting_of_others_is_declined_not_cancelled(
    service, graph, clock: Clock
) -> None:
    fake, _ = graph
    clock.now = at(10, 10)
    assert await service.check_releases() == ["review"]
    assert "review" in fake.declined
    assert fake.cancelled == {}
    assert fake.accepted == {}  # accept_bookings is off by default


async def test_only_the_organizer_cancels_and_never_answers_itself(service, graph, clock) -> None:
    fake, _ = graph
    backend = service.backend
    assert isinstance(backend, GraphBackend)
    with pytest.raises(CalendarError, match="need to be an organizer") as refused:
        await backend.cancel("review", "no")
    assert refused.value.reason is StaleReason.BAD_RESPONSE
    clock.now = at(8, 5)
    booked = await service.book(15, "Walk-up meeting")
    with pytest.raises(CalendarError, match="HTTP 400 ErrorInvalidRequest"):
        await backend.accept(booked.id, "yes")
    with pytest.raises(CalendarError, match="HTTP 404 ErrorItemNotFound"):
        await backend.accept("gone", "yes")
    assert fake.accepted == {}
    assert "review" in fake.events


async def test_the_room_accepts_new_bookings_once_when_set_to(
    graph, tmp_path: Path, clock: Clock
) -> None:
    fake, cert = graph
    fake.add("Design review", at(10), at(11), id="review")
    fake.add(
        "Answered",
        at(12),
        at(13),
        id="answered",
        responseStatus={"response": "accepted", "time": "2026-03-20T10:00:00Z"},
    )
    fake.add("Called off", at(14), at(15), id="off", isCancelled=True)
    settings = graph_settings(fake, cert, tmp_path).model_copy(update={"accept_bookings": True})
    state_dir = StateDir(tmp_path / "state")
    state_dir.ensure()
    service = await started(GraphBackend(settings, ZONE), state_dir, clock)
    try:
        assert fake.accepted == {"review": "The room is booked for you."}
        assert fake.events["review"]["responseStatus"]["response"] == "accepted"
        clock.now = at(8, 5)
        booked = await service.book(15, "Walk-up meeting")
        fake.add("Late addition", at(16), at(17), id="late")
        await service.sync()
        await service.sync()
        assert sorted(fake.accepted) == ["late", "review"]  # never its own, never twice
        assert booked.id not in fake.accepted
        accepts = [r for r in fake.requests if r.endswith("/accept")]
        assert len(accepts) == 2
    finally:
        await service.close()


async def test_throttling_and_malformed_json_keep_the_agenda(service, graph) -> None:
    fake, _ = graph
    before = [b.id for b in service.state().bookings]
    fake.throttle_for = 1
    with pytest.raises(CalendarError) as throttled:
        await service.sync()
    assert (throttled.value.reason, throttled.value.retry_after_s) == (StaleReason.THROTTLED, 3.0)
    fake.garbage_for = 1
    with pytest.raises(CalendarError, match=r"unexpected JSON at value\.0\.id") as garbled:
        await service.sync()
    assert garbled.value.reason is StaleReason.BAD_RESPONSE
    state = service.state()
    assert [b.id for b in state.bookings] == before
    assert state.stale_reason is StaleReason.BAD_RESPONSE


async def test_a_wrong_client_secret_is_an_auth_error(graph, tmp_path: Path) -> None:
    fake, cert = graph
    backend = GraphBackend(graph_settings(fake, cert, tmp_path, secret="wrong"), ZONE)
    await backend.open()
    try:
        with pytest.raises(CalendarError, match="invalid_client") as caught:
            await backend.sync(at(0), at(0) + timedelta(days=1))
        assert caught.value.reason is StaleReason.AUTH
        assert "wrong" not in str(caught.value)
    finally:
        await backend.close()


async def test_an_untrusted_certificate_is_refused(graph, tmp_path: Path) -> None:
    fake, cert = graph
    settings = graph_settings(fake, cert, tmp_path).model_copy(update={"ca_file": None})
    backend = GraphBackend(settings, ZONE)
    try:
        with pytest.raises(CalendarError, match="CERTIFICATE_VERIFY_FAILED") as caught:
            await backend.open()  # msal reads the authority's OpenID configuration here
        assert caught.value.reason is StaleReason.UNREACHABLE
    finally:
        await backend.close()


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)
TIMES = st.text(max_size=30) | st.sampled_from(
    ["2026-03-27T09:00:00.0000000", "2026-03-27T10:00:00.0000000", "2026-13-01T00:00:00"]
)
EVENT_KEYS = st.sampled_from(
    [
        "id",
        "subject",
        "start",
        "end",
        "isAllDay",
        "type",
        "originalStart",
        "organizer",
        "attendees",
        "@removed",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        JSON,
        st.fixed_dictionaries({"value": st.lists(st.dictionaries(EVENT_KEYS, JSON), max_size=3)}),
        st.fixed_dictionaries(
            {
                "value": st.lists(
                    st.fixed_dictionaries(
                        {
                            "id": st.text(min_size=1, max_size=5),
                            "start": st.fixed_dictionaries({"dateTime": TIMES}),
                            "end": st.fixed_dictionaries({"dateTime": TIMES}),
                        }
                    ),
                    max_size=2,
                )
            }
        ),
    )
)
def test_any_json_is_a_page_of_bookings_or_a_clear_error(data: object) -> None:
    backend = GraphBackend(
        CalendarSettings(backend="graph", mailbox="r@x", graph_tenant="t", graph_client_id="c"),
        ZONE,
    )
    try:
        page = parse_page(data, "calendarView")
        for event in page.value:
            if event.removed is None:
                backend.booking(event)
    except CalendarError as exc:
        assert exc.reason is StaleReason.BAD_RESPONSE
        assert str(exc).startswith(("calendarView:", "Graph event"))
