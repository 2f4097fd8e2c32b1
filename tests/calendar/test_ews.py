"""EWS through exchangelib against a fake Exchange that speaks EWS's SOAP on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web

from roomsystem.calendar import service as calendar_service
from roomsystem.calendar.ews import EwsBackend
from roomsystem.calendar.model import CalendarError, StaleReason
from roomsystem.calendar.service import CalendarService
from roomsystem.config import CalendarSettings
from roomsystem.statedir import StateDir
from tests.calendar.fake_ews import OAUTH_CLIENT, OAUTH_SECRET, OAUTH_TENANT, FakeEws
from tests.calendar.fake_graph import make_certificate, server_context
from tests.calendar.helpers import OSLO, Clock, started

ZONE = ZoneInfo(OSLO)
DAY = datetime(2026, 3, 27, tzinfo=ZONE)


def at(hour: int, minute: int = 0, day: int = 27) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=ZONE)


@pytest.fixture
async def ews() -> AsyncIterator[tuple[FakeEws, str]]:
    fake = FakeEws()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield fake, f"http://127.0.0.1:{port}/EWS/Exchange.asmx"
    finally:
        await runner.cleanup()


def ews_settings(url: str, tmp_path: Path, password: str = "s3cret") -> CalendarSettings:
    secret = tmp_path / "ews-password"
    secret.write_text(password + "\n")
    os.chmod(secret, 0o600)
    return CalendarSettings.model_validate(
        {
            "backend": "ews",
            "url": url,
            "username": "svc-room",
            "password_file": str(secret),
            "mailbox": "room-412@example.org",
            "ews_auth": "basic",
            "timeout_s": 5.0,
        }
    )


@pytest.fixture
def clock() -> Clock:
    return Clock(at(8))


@pytest.fixture
async def service(ews, tmp_path: Path, clock: Clock) -> AsyncIterator[CalendarService]:
    fake, url = ews
    fake.add(
        uid="review@example.org",
        subject="Design review",
        start=at(10),
        end=at(11),
        location="https://teams.microsoft.com/l/meetup-join/19%3areview",
    )
    fake.add(
        uid="standup@example.org",
        subject="Stand-up",
        start=at(9, day=23),
        end=at(9, 15, day=23),
        kind="RecurringMaster",
        every=timedelta(days=1),
        count=10,
    )
    fake.add(
        uid="secret@example.org", subject="Salary", start=at(12), end=at(13), sensitivity="Private"
    )
    state_dir = StateDir(tmp_path / "state")
    state_dir.ensure()
    backend = EwsBackend(ews_settings(url, tmp_path), ZONE)
    running = await started(
        backend, state_dir, clock, release_no_shows=True, decline_series_after=2
    )
    try:
        yield running
    finally:
        await running.close()


async def test_the_calendar_view_comes_expanded_into_the_snapshot(service, ews) -> None:
    fake, _ = ews
    state = service.state()
    today = [b for b in state.bookings if b.start.date() == DAY.date()]
    assert [(b.id, b.subject) for b in today] == [
        ("standup@example.org/2026-03-27T09:00:00+01:00", "Stand-up"),
        ("review@example.org", "Design review"),
        ("secret@example.org", "Private meeting"),
    ]
    review = today[1]
    assert review.model_dump(mode="json")["start"] == "2026-03-27T10:00:00+01:00"
    assert review.organizer == "Kari Nordmann"
    assert review.join_links[0].kind == "teams"
    assert "FindItem" in fake.requests


async def test_a_series_across_the_dst_change_keeps_its_local_time(service) -> None:
    standups = [b for b in service.state().bookings if b.series_id == "standup@example.org"]
    starts = {b.start.isoformat() for b in standups}
    # EWS sends UTC (08:00Z before the change, 07:00Z after): the room shows 09:00 local.
    assert {"2026-03-28T09:00:00+01:00", "2026-03-29T09:00:00+02:00"} <= starts
    assert {b.start.astimezone(UTC).hour for b in standups} == {8, 7}
    assert all(b.end - b.start == timedelta(minutes=15) for b in standups)


async def test_incremental_sync_uses_sync_folder_items(service, ews) -> None:
    fake, _ = ews
    fake.requests.clear()
    await service.sync()
    assert fake.requests == ["SyncFolderItems"]
    review = next(i for i in fake.items.values() if i.uid == "review@example.org")
    fake.update(review.id, subject="Design review (moved)", start=at(14), end=at(15))
    fake.requests.clear()
    await service.sync()
    assert fake.requests == ["SyncFolderItems"]
    moved = next(b for b in service.state().bookings if b.id == "review@example.org")
    assert (moved.subject, moved.start) == ("Design review (moved)", at(14))
    secret = next(i for i in fake.items.values() if i.uid == "secret@example.org")
    fake.delete(secret.id)
    await service.sync()
    assert "secret@example.org" not in {b.id for b in service.state().bookings}
    # A changed series needs the server's expansion: a new calendar view.
    standup = next(i for i in fake.items.values() if i.uid == "standup@example.org")
    fake.update(standup.id, subject="Daily stand-up")
    fake.requests.clear()
    await service.sync()
    assert "FindItem" in fake.requests
    assert {b.subject for b in service.state().bookings if b.series_id} == {"Daily stand-up"}


async def test_no_show_is_declined_with_a_message(service, ews, clock: Clock) -> None:
    fake, _ = ews
    clock.now = at(10, 10)
    assert await service.check_releases() == ["review@example.org"]
    review = next(i for i in fake.items.values() if i.uid == "review@example.org")
    assert review.cancelled
    assert "Nobody checked in" in (review.declined or "")
    await service.sync()
    assert "review@example.org" not in {b.id for b in service.state().bookings}


async def test_repeated_no_shows_decline_the_series(service, ews, clock: Clock) -> None:
    fake, _ = ews
    for day in (27, 28):
        clock.now = at(9, 10, day=day)
        assert len(await service.check_releases()) == 1
    master = next(i for i in fake.items.values() if i.uid == "standup@example.org")
    assert master.cancelled
    assert "last 2 meetings" in (master.declined or "")
    await service.sync()
    assert not [b for b in service.state().bookings if b.series_id]


async def test_walk_up_extend_and_end_early(service, ews, clock: Clock) -> None:
    fake, _ = ews
    clock.now = at(8, 10)
    booked = await service.book(30, "Walk-up meeting")
    created = next(i for i in fake.items.values() if i.subject == "Walk-up meeting")
    assert (created.start, created.end) == (at(8, 10), at(8, 40))
    assert booked.id == created.uid
    await service.extend(None, 15)
    assert fake.items[created.id].end == at(8, 55)
    clock.now = at(8, 20)
    await service.end_early(None)
    assert fake.items[created.id].end == at(8, 20)
    await service.sync()
    entry = next(b for b in service.state().bookings if b.id == booked.id)
    assert entry.walk_up
    assert entry.end == at(8, 20)


async def test_throttling_is_reported_with_the_servers_back_off(service, ews) -> None:
    fake, _ = ews
    fake.busy_for = 1
    with pytest.raises(CalendarError) as caught:
        await service.sync()
    assert caught.value.reason is StaleReason.THROTTLED
    assert caught.value.retry_after_s == 2.5
    state = service.state()
    assert (state.stale_reason, len(state.bookings) > 0) == (StaleReason.THROTTLED, True)
    await service.sync()
    assert service.state().stale is False


async def test_soap_faults_and_wrong_passwords_are_clear(ews, tmp_path: Path) -> None:
    fake, url = ews
    backend = EwsBackend(ews_settings(url, tmp_path), ZONE)
    await backend.open()
    fake.fault_for = 1
    with pytest.raises(
        CalendarError, match=r"ErrorInternalServerError|internal server error"
    ) as caught:
        await backend.sync(DAY, DAY + timedelta(days=1), full=True)
    assert caught.value.reason is StaleReason.BAD_RESPONSE
    await backend.close()
    wrong = EwsBackend(ews_settings(url, tmp_path, password="wrong"), ZONE)
    with pytest.raises(CalendarError) as refused:
        await wrong.open()
    assert refused.value.reason is StaleReason.AUTH
    await wrong.close()


async def test_an_unreachable_server(tmp_path: Path) -> None:
    backend = EwsBackend(ews_settings("http://127.0.0.1:9/EWS/Exchange.asmx", tmp_path), ZONE)
    with pytest.raises(CalendarError) as caught:
        await backend.open()
    assert caught.value.reason is StaleReason.UNREACHABLE
    await backend.close()


async def test_a_garbled_answer_keeps_the_agenda(service, ews) -> None:
    fake, _ = ews
    before = [b.id for b in service.state().bookings]
    fake.garbage_for = 1
    with pytest.raises(CalendarError) as caught:
        await service.sync()
    assert caught.value.reason is StaleReason.BAD_RESPONSE
    assert [b.id for b in service.state().bookings] == before
    assert service.state().stale_reason is StaleReason.BAD_RESPONSE


async def wait_until(condition: Callable[[], bool], within_s: float) -> float:
    """Seconds until ``condition`` held; fails after ``within_s``."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    for _ in range(int(within_s / 0.02)):
        if condition():
            return loop.time() - began
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {within_s} s")


def subject_of(service: CalendarService, booking_id: str) -> str:
    return next((b.subject for b in service.state().bookings if b.id == booking_id), "")


@pytest.fixture
async def pushed(
    ews, tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[CalendarService]:
    """A running service (background loops) that polls only every 30 s."""
    monkeypatch.setattr(calendar_service, "PUSH_RETRY_S", (0.3, 1.0))
    fake, url = ews
    fake.add(uid="review@example.org", subject="Design review", start=at(10), end=at(11))
    state_dir = StateDir(tmp_path / "state")
    state_dir.ensure()
    service = await started(EwsBackend(ews_settings(url, tmp_path), ZONE), state_dir, clock)
    service.settings = service.settings.model_copy(update={"poll_seconds": 30.0})
    running = asyncio.create_task(service.run())
    try:
        yield service
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await service.close()


async def test_a_streamed_change_reaches_the_snapshot_before_the_poll(pushed, ews) -> None:
    fake, _ = ews
    await wait_until(lambda: bool(fake.subscriptions), 5)
    await asyncio.sleep(0.6)  # a keep-alive (ConnectionStatus OK) passes without a sync
    syncs = fake.requests.count("SyncFolderItems")
    assert fake.requests.count("GetStreamingEvents") == 1
    item = next(iter(fake.items))
    fake.update(item, subject="Design review (moved)")
    took = await wait_until(
        lambda: subject_of(pushed, "review@example.org") == "Design review (moved)", 5
    )
    assert took < 2.0  # the poll would take 30 s
    assert fake.requests.count("SyncFolderItems") == syncs + 1  # incremental, not a full read


async def test_a_refused_subscription_falls_back_to_polling_and_retries(
    ews, tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(calendar_service, "PUSH_RETRY_S", (0.3, 1.0))
    fake, url = ews
    fake.refuse_subscribe = 2
    fake.add(uid="review@example.org", subject="Design review", start=at(10), end=at(11))
    state_dir = StateDir(tmp_path / "state")
    state_dir.ensure()
    service = await started(
        EwsBackend(ews_settings(url, tmp_path), ZONE), state_dir, clock, poll_seconds=0.2
    )
    running = asyncio.create_task(service.run())
    try:
        # Refused twice: the poll still brings changes.
        fake.update(next(iter(fake.items)), subject="Polled")
        await wait_until(lambda: subject_of(service, "review@example.org") == "Polled", 5)
        await wait_until(lambda: bool(fake.subscriptions), 5)  # the third try is taken
        assert fake.requests.count("Subscribe") == 3
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await service.close()
    assert not fake.subscriptions  # closing unsubscribed


async def test_a_broken_stream_reconnects_and_catches_up(pushed, ews) -> None:
    fake, _ = ews
    await wait_until(lambda: bool(fake.subscriptions), 5)
    fake.break_streams()
    fake.update(next(iter(fake.items)), subject="Changed while the stream was down")
    await wait_until(
        lambda: subject_of(pushed, "review@example.org") == "Changed while the stream was down",
        5,
    )
    await wait_until(lambda: fake.requests.count("Subscribe") == 2, 5)
    assert pushed.state().stale is False


async def test_streaming_can_be_turned_off(ews, tmp_path: Path, clock: Clock) -> None:
    fake, url = ews
    settings = ews_settings(url, tmp_path).model_copy(update={"ews_streaming": False})
    state_dir = StateDir(tmp_path / "state")
    state_dir.ensure()
    service = await started(EwsBackend(settings, ZONE), state_dir, clock)
    running = asyncio.create_task(service.run())
    try:
        await asyncio.sleep(0.5)
        assert "Subscribe" not in fake.requests
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await service.close()


@pytest.fixture
async def ews_tls(tmp_path: Path) -> AsyncIterator[tuple[FakeEws, str, Path]]:
    """The fake Exchange over HTTPS with a private CA, signing in with OAuth."""
    cert, key = make_certificate(tmp_path)
    fake = FakeEws(oauth=True)
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(cert, key))
    await site.start()
    try:
        yield fake, f"https://127.0.0.1:{runner.addresses[0][1]}", cert
    finally:
        await runner.cleanup()


def oauth_settings(base: str, cert: Path | None, tmp_path: Path, secret: str) -> CalendarSettings:
    settings = ews_settings(f"{base}/EWS/Exchange.asmx", tmp_path, password=secret)
    return settings.model_copy(
        update={
            "ews_auth": "oauth",
            "graph_tenant": OAUTH_TENANT,
            "graph_client_id": OAUTH_CLIENT,
            "graph_authority": base,
            "ca_file": cert,
        }
    )


async def test_oauth_sign_in_over_tls_with_a_private_ca(ews_tls, tmp_path: Path) -> None:
    fake, base, cert = ews_tls
    fake.add(uid="review@example.org", subject="Design review", start=at(10), end=at(11))
    backend = EwsBackend(oauth_settings(base, cert, tmp_path, OAUTH_SECRET), ZONE)
    try:
        await backend.open()
        result = await backend.sync(DAY, DAY + timedelta(days=1))
        assert [b.subject for b in result.bookings] == ["Design review"]
        await backend.sync(DAY, DAY + timedelta(days=1))
        assert fake.tokens_issued == 1  # the token is kept for its lifetime
    finally:
        await backend.close()


async def test_a_refused_oauth_sign_in_is_an_auth_error(ews_tls, tmp_path: Path) -> None:
    fake, base, cert = ews_tls
    backend = EwsBackend(oauth_settings(base, cert, tmp_path, "wrong-secret"), ZONE)
    try:
        with pytest.raises(CalendarError, match="invalid_client") as caught:
            await backend.open()  # signs in
        assert fake.tokens_issued == 0
        assert caught.value.reason is StaleReason.AUTH
        assert "wrong-secret" not in str(caught.value)
    finally:
        await backend.close()


async def test_without_the_ca_file_the_certificate_is_refused(ews_tls, tmp_path: Path) -> None:
    fake, base, _ = ews_tls
    backend = EwsBackend(oauth_settings(base, None, tmp_path, OAUTH_SECRET), ZONE)
    try:
        with pytest.raises(CalendarError, match="CERTIFICATE_VERIFY_FAILED") as caught:
            await backend.open()
        assert caught.value.reason is StaleReason.UNREACHABLE
        assert fake.tokens_issued == 0
    finally:
        await backend.close()


async def test_an_expired_oauth_token_is_renewed_with_the_client_credentials(
    ews_tls, tmp_path: Path
) -> None:
    fake, base, cert = ews_tls
    fake.token_lifetime_s = 1
    fake.add(uid="review@example.org", subject="Design review", start=at(10), end=at(11))
    backend = EwsBackend(oauth_settings(base, cert, tmp_path, OAUTH_SECRET), ZONE)
    try:
        await backend.open()
        await backend.sync(DAY, DAY + timedelta(days=1))
        issued = fake.tokens_issued
        await asyncio.sleep(1.2)
        result = await backend.sync(DAY, DAY + timedelta(days=1), full=True)
        assert [b.subject for b in result.bookings] == ["Design review"]
        assert fake.tokens_issued > issued  # a new client-credentials grant, not a refresh
    finally:
        await backend.close()
