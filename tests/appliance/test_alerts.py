"""Alerts: derived from the snapshot, sent once per problem and once on clear, retried."""

from __future__ import annotations

import asyncio
import email
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from hypothesis import given
from hypothesis import strategies as st

from roomsystem.appliance.alerts import (
    Alert,
    AlertEvent,
    AlertsService,
    AlertsState,
    AlertTracker,
    ChannelWorker,
    Severity,
    current_problems,
)
from roomsystem.appliance.channels import MailChannel, WebhookChannel, build_alerts_service
from roomsystem.bus import StateBus
from roomsystem.calendar.state import CalendarState
from roomsystem.config import AddedDevice, AlertsSettings, Settings
from roomsystem.daemon import Daemon
from roomsystem.devices.state import DeviceKind, DevicesState, DeviceStatus
from roomsystem.drivers.simulator import PtyServer
from roomsystem.drivers.visca_sim import ViscaSimulator
from roomsystem.lifecycle import Backoff, LifecycleState, Phase, WebStatus
from roomsystem.media.state import MediaState
from roomsystem.meeting.service import MeetingService
from roomsystem.meeting.tls import ensure_self_signed
from roomsystem.sharing.state import SharingState
from roomsystem.state import RoomInfo
from roomsystem.statedir import StateDir

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def camera(online: bool, error: str | None = None) -> DeviceStatus:
    return DeviceStatus(
        id="camera",
        kind=DeviceKind.CAMERA,
        name="Room camera",
        profile="sony-srg-300h",
        certified=True,
        connection="serial",
        online=online,
        error=error,
    )


def topics(online: bool, phase: Phase = Phase.READY, stale: bool = False) -> dict[str, Any]:
    return {
        "lifecycle": LifecycleState(phase=phase),
        "devices": DevicesState(devices=(camera(online, None if online else "no answer"),)),
        "calendar": CalendarState(backend="ews", stale=stale),
    }


def test_problems_come_from_the_snapshot_and_only_once_the_room_is_ready() -> None:
    assert current_problems(topics(online=False, phase=Phase.CONNECT), T0) == {}
    problems = current_problems(topics(online=False, stale=True), T0)
    assert set(problems) == {"device:camera:offline", "calendar:stale"}
    offline = problems["device:camera:offline"]
    assert offline.severity is Severity.CRITICAL
    assert offline.message == "camera Room camera is offline: no answer"
    assert current_problems(topics(online=True), T0) == {}


def test_a_problem_is_raised_after_the_grace_period_once_and_cleared_once() -> None:
    tracker = AlertTracker(grace_s=10)
    down = current_problems(topics(online=False), T0)
    assert tracker.update(down, T0) == []
    assert tracker.next_due(T0) == 10
    assert tracker.update(down, T0 + timedelta(seconds=9)) == []
    raised = tracker.update(down, T0 + timedelta(seconds=10))
    assert [(kind, alert.id, alert.since) for kind, alert in raised] == [
        ("raised", "device:camera:offline", T0)
    ]
    assert tracker.update(down, T0 + timedelta(seconds=60)) == []  # still the same problem
    cleared = tracker.update({}, T0 + timedelta(seconds=61))
    assert [kind for kind, _ in cleared] == ["cleared"]
    assert tracker.state().active == ()
    assert tracker.state().recent[0].cleared_at == T0 + timedelta(seconds=61)
    # A blip shorter than the grace period is no alert at all.
    assert tracker.update(down, T0 + timedelta(seconds=70)) == []
    assert tracker.update({}, T0 + timedelta(seconds=71)) == []
    assert tracker.next_due(T0 + timedelta(seconds=71)) is None


class WebhookReceiver:
    """An HTTP endpoint that fails the first ``failures`` requests with 503."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.requests: list[dict[str, Any]] = []
        self.accepted: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()
        self.rejected = 0

    async def reject(self, request: web.Request) -> web.Response:
        self.rejected += 1
        return web.Response(status=400, text="no such room")

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        if len(self.requests) <= self.failures:
            return web.Response(status=503)
        self.accepted.append(body)
        self.arrived.set()
        return web.json_response({"ok": True})

    async def until(self, count: int, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while len(self.accepted) < count:
                self.arrived.clear()
                await self.arrived.wait()


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[WebhookReceiver, str]]:
    hook = WebhookReceiver(failures=2)
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    app.router.add_post("/reject", hook.reject)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield hook, f"http://127.0.0.1:{port}/hook"
    finally:
        await runner.cleanup()


def room_settings(settings: Settings, serial: Path, webhook: str) -> Settings:
    devices = settings.devices.model_copy(
        update={
            "add": (AddedDevice(id="camera", profile="sony-srg-300h", serial=str(serial)),),
            "poll_s": 0.3,
            "discover_usb": False,
            "discover_cec": False,
        }
    )
    return settings.model_copy(
        update={
            "devices": devices,
            "web": settings.web.model_copy(update={"listen": "127.0.0.1:0"}),
            "sharing": settings.sharing.model_copy(update={"enabled": False}),
            "alerts": AlertsSettings(
                grace_s=0.3, webhook_url=webhook, retry_initial_s=0.05, retry_max_s=0.2
            ),
        }
    )


async def until_alerts(daemon: Daemon, predicate: Any, timeout: float) -> AlertsState:
    async with asyncio.timeout(timeout):
        with daemon.room.bus.subscribe() as subscription:
            state = subscription.snapshot.topics["alerts"]
            while not predicate(state):
                change = await subscription.next()
                if change.topic == "alerts":
                    state = change.value
    assert isinstance(state, AlertsState)
    return state


async def test_an_unplugged_camera_raises_one_alert_at_the_webhook_and_clears_it(
    settings: Settings, tmp_path: Path, receiver: tuple[WebhookReceiver, str]
) -> None:
    hook, url = receiver
    link = tmp_path / "camera-tty"
    simulator = ViscaSimulator(address=1)
    line = PtyServer(simulator, link=link)
    line.start()
    daemon = Daemon(room_settings(settings, link, url))
    await daemon.start()
    try:
        await asyncio.wait_for(daemon.room.ready.wait(), 10)
        await asyncio.sleep(0.6)
        assert [r for r in hook.requests if r["alert"]["source"] == "device"] == []

        line.close()  # the cable is pulled
        state = await until_alerts(daemon, lambda s: bool(s.active), timeout=8)
        assert [a.id for a in state.active] == ["device:camera:offline"]
        await hook.until(1, timeout=5)
        raised = hook.accepted[0]
        assert (raised["event"], raised["alert"]["id"]) == ("raised", "device:camera:offline")
        assert raised["room"] == settings.room.name
        assert len(hook.requests) == 3  # two 503s, retried with back-off, then accepted

        line = PtyServer(ViscaSimulator(address=1), link=link)  # plugged back in
        line.start()
        await until_alerts(daemon, lambda s: not s.active and s.recent, timeout=10)
        await hook.until(2, timeout=5)
        await asyncio.sleep(1.0)  # polls go on: nothing more may be sent
        assert [(r["event"], r["alert"]["id"]) for r in hook.accepted] == [
            ("raised", "device:camera:offline"),
            ("cleared", "device:camera:offline"),
        ]
    finally:
        await daemon.stop()
        line.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.sessions_tls: list[bool] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.messages.append(email.message_from_bytes(envelope.content))
        self.sessions_tls.append(session.ssl is not None)
        return "250 OK"


async def test_alerts_are_mailed_over_starttls_once_raised_and_once_cleared(
    tmp_path: Path,
) -> None:
    import ssl

    certificate = ensure_self_signed(StateDir(tmp_path), ["127.0.0.1", "localhost"])
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(certificate.cert, certificate.key)
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(
        mailbox, hostname="127.0.0.1", port=port, tls_context=tls, require_starttls=True
    )
    controller.start()
    room = RoomInfo(
        id="r1", name="Room 4-12", location="", timezone="UTC", version="1", started_at=T0
    )
    bus = StateBus({"room": room, **topics(online=True), "alerts": AlertsState()})
    channel = MailChannel(
        "127.0.0.1",
        port,
        "room-4-12@example.org",
        ("it@example.org",),
        timeout_s=5,
        ca_file=certificate.cert,
    )
    service = AlertsService(bus, grace_s=0, workers=[ChannelWorker(channel, 3, Backoff(0.05, 0.1))])
    runner = asyncio.create_task(service.run())
    try:
        await asyncio.sleep(0.1)
        bus.publish("devices", topics(online=False)["devices"])
        async with asyncio.timeout(10):
            while len(mailbox.messages) < 1:  # noqa: ASYNC110 - the SMTP server is a thread
                await asyncio.sleep(0.05)
        bus.publish("devices", topics(online=True)["devices"])
        async with asyncio.timeout(10):
            while len(mailbox.messages) < 2:  # noqa: ASYNC110 - the SMTP server is a thread
                await asyncio.sleep(0.05)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await service.close()
        controller.stop()
    subjects = [m["Subject"] for m in mailbox.messages]
    assert subjects[0] == "[Room 4-12] PROBLEM: camera Room camera is offline: no answer"
    assert subjects[0].endswith("PROBLEM: camera Room camera is offline: no answer")
    assert "RESOLVED" in subjects[1]
    assert mailbox.messages[0]["To"] == "it@example.org"
    assert mailbox.sessions_tls == [True, True]


async def test_a_webhook_that_refuses_for_good_is_not_retried(
    receiver: tuple[WebhookReceiver, str],
) -> None:
    hook, url = receiver
    bad = WebhookChannel(url.replace("/hook", "/reject"), timeout_s=2)
    worker = ChannelWorker(bad, attempts=5, backoff=Backoff(0.01, 0.02))
    alert = Alert(
        id="calendar:stale",
        source="calendar",
        subject="ews",
        message="m",
        severity=Severity.WARNING,
        since=T0,
    )
    event = AlertEvent(event="raised", alert=alert, room="R", room_id="1", location="")
    worker.queue.put_nowait(event)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.3)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await bad.close()
    assert hook.rejected == 1  # a 400 will not change by asking again


@given(
    steps=st.lists(
        st.tuples(st.booleans(), st.floats(min_value=0, max_value=20)), min_size=1, max_size=40
    ),
    grace=st.floats(min_value=0, max_value=10),
)
def test_raised_and_cleared_alternate_and_follow_the_grace_period(
    steps: list[tuple[bool, float]], grace: float
) -> None:
    tracker = AlertTracker(grace_s=grace)
    now = T0
    down_since: datetime | None = None
    events: list[str] = []
    for online, wait in steps:
        now += timedelta(seconds=wait)
        down_since = None if online else (down_since or now)
        for kind, alert in tracker.update(current_problems(topics(online), now), now):
            events.append(kind)
            if kind == "raised":
                assert down_since is not None
                assert now - down_since >= timedelta(seconds=grace)
                assert alert.since == down_since
    # Strictly raised, cleared, raised, ...: never two of a kind in a row.
    assert events == ["raised", "cleared"] * (len(events) // 2) + ["raised"] * (len(events) % 2)
    assert bool(tracker.state().active) == (bool(events) and events[-1] == "raised")


SITE_DOWN = WebStatus(error="[Errno 98] web: cannot listen on 127.0.0.1:8443: Address in use")
ANNOUNCED = SharingState(enabled=True, advertising=True, advertised_name="Room 4-12")
NOT_ANNOUNCED = SharingState(enabled=True, advertising=False, share_url="https://room:8443/share")


def ready(web: WebStatus | None = None) -> LifecycleState:
    return LifecycleState(phase=Phase.READY, web=web or WebStatus(listening=True, url="https://r"))


def test_a_meeting_site_that_cannot_listen_is_a_critical_meeting_problem() -> None:
    fine = {**topics(online=True), "lifecycle": ready()}
    assert current_problems(fine, T0) == {}
    problems = current_problems({**fine, "lifecycle": ready(SITE_DOWN)}, T0)
    assert list(problems) == ["meeting:site:not-listening"]
    alert = problems["meeting:site:not-listening"]
    assert (alert.source, alert.severity) == ("meeting", Severity.CRITICAL)
    assert alert.message == (
        "the meeting site is not listening, remote participants cannot join: "
        "[Errno 98] web: cannot listen on 127.0.0.1:8443: Address in use"
    )
    # A room that hosts no meetings has no site: not listening, but no error either.
    assert current_problems({**fine, "lifecycle": ready(WebStatus())}, T0) == {}


def test_a_failed_recording_is_a_media_problem_and_a_missing_media_topic_is_none() -> None:
    fine = topics(online=True)
    assert "media" not in fine
    assert current_problems(fine, T0) == {}
    assert current_problems({**fine, "media": MediaState(recording=True)}, T0) == {}
    failed = MediaState(recording_error="disk full: /var/lib/roomsystem/recordings")
    problems = current_problems({**fine, "media": failed}, T0)
    assert list(problems) == ["media:recording:failed"]
    alert = problems["media:recording:failed"]
    assert (alert.source, alert.severity) == ("media", Severity.WARNING)
    assert alert.message == "a recording failed: disk full: /var/lib/roomsystem/recordings"


def test_sharing_on_but_not_announced_is_raised_after_the_grace_period() -> None:
    fine = topics(online=True)
    assert current_problems({**fine, "sharing": ANNOUNCED}, T0) == {}
    off = SharingState(enabled=False, advertising=False)
    assert current_problems({**fine, "sharing": off}, T0) == {}
    down = current_problems({**fine, "sharing": NOT_ANNOUNCED}, T0)
    assert list(down) == ["sharing:not-announced"]
    assert down["sharing:not-announced"].source == "sharing"
    assert down["sharing:not-announced"].message.endswith(
        "cannot find it; they can still open https://room:8443/share"
    )
    tracker = AlertTracker(grace_s=30)
    assert tracker.update(down, T0) == []
    assert tracker.update(down, T0 + timedelta(seconds=29)) == []  # announcing takes a moment
    raised = tracker.update(down, T0 + timedelta(seconds=30))
    assert [(kind, alert.id) for kind, alert in raised] == [("raised", "sharing:not-announced")]


PROBLEMS = {
    "meeting": ("lifecycle", ready(SITE_DOWN), ready(), "meeting:site:not-listening"),
    "media": (
        "media",
        MediaState(recording_error="encoder stopped"),
        MediaState(),
        "media:recording:failed",
    ),
    "sharing": ("sharing", NOT_ANNOUNCED, ANNOUNCED, "sharing:not-announced"),
}


@pytest.mark.parametrize("source", list(PROBLEMS))
async def test_each_new_problem_is_raised_once_and_cleared_once_at_the_webhook(
    source: str, receiver: tuple[WebhookReceiver, str]
) -> None:
    hook, url = receiver
    topic, bad, good, alert_id = PROBLEMS[source]
    room = RoomInfo(
        id="r1", name="Room 4-12", location="", timezone="UTC", version="1", started_at=T0
    )
    state: dict[str, Any] = {
        "room": room,
        **topics(online=True),
        "lifecycle": ready(),
        "media": MediaState(),
        "sharing": ANNOUNCED,
        "alerts": AlertsState(),
    }
    bus = StateBus(state)
    channel = WebhookChannel(url, timeout_s=2)
    service = AlertsService(
        bus, grace_s=0.1, workers=[ChannelWorker(channel, 5, Backoff(0.02, 0.05))]
    )
    runner = asyncio.create_task(service.run())
    try:
        bus.publish(topic, bad)
        await hook.until(1, timeout=5)
        bus.publish(topic, good)
        await hook.until(2, timeout=5)
        bus.publish("devices", topics(online=True, stale=False)["devices"])  # unrelated: no news
        await asyncio.sleep(0.3)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await service.close()
    assert [(r["event"], r["alert"]["id"], r["alert"]["source"]) for r in hook.accepted] == [
        ("raised", alert_id, source),
        ("cleared", alert_id, source),
    ]


async def test_a_meeting_site_on_a_busy_port_is_raised_then_cleared_when_it_listens(
    settings: Settings, receiver: tuple[WebhookReceiver, str]
) -> None:
    hook, url = receiver
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    busy = settings.model_copy(
        update={
            "web": settings.web.model_copy(update={"listen": f"127.0.0.1:{port}"}),
            "alerts": AlertsSettings(
                grace_s=0.2, webhook_url=url, retry_initial_s=0.05, retry_max_s=0.2
            ),
            "lifecycle": settings.lifecycle.model_copy(
                update={"retry_initial_s": 0.2, "retry_max_s": 0.5}
            ),
        }
    )
    daemon = Daemon(
        busy,
        lambda s, bus: [MeetingService(s.meeting, bus), build_alerts_service(s.alerts, bus)],
    )
    # This room has no sharing service to say that sharing is off (and so not announced).
    daemon.room.bus.publish("sharing", SharingState(enabled=False))
    try:
        await daemon.start()
        web = daemon.room.lifecycle.web
        assert not web.listening
        assert web.error is not None
        assert f"cannot listen on 127.0.0.1:{port}" in web.error
        assert daemon.web is None  # the room runs without its site
        await asyncio.wait_for(daemon.room.ready.wait(), 10)
        await hook.until(1, timeout=10)
        # The port comes free: the daemon keeps trying, listens, and the alert clears.
        taken.close()
        await hook.until(2, timeout=10)
        assert daemon.web is not None
        assert daemon.room.lifecycle.web.listening
        assert daemon.room.lifecycle.web.url == daemon.web_url
    finally:
        taken.close()
        await daemon.stop()
    assert [(r["event"], r["alert"]["id"]) for r in hook.accepted] == [
        ("raised", "meeting:site:not-listening"),
        ("cleared", "meeting:site:not-listening"),
    ]
    assert hook.accepted[0]["alert"]["message"].startswith(
        "the meeting site is not listening, remote participants cannot join: "
    )


async def test_a_meeting_site_that_listens_says_where(settings: Settings) -> None:
    daemon = Daemon(settings, lambda s, bus: [MeetingService(s.meeting, bus)])
    await daemon.start()
    try:
        web = daemon.room.lifecycle.web
        assert (web.listening, web.error) == (True, None)
        assert web.url == daemon.web_url
        assert web.url.startswith("https://127.0.0.1:")
    finally:
        await daemon.stop()


async def test_a_room_that_stops_does_not_clear_its_alerts(
    receiver: tuple[WebhookReceiver, str],
) -> None:
    hook, url = receiver
    room = RoomInfo(
        id="r1", name="Room 4-12", location="", timezone="UTC", version="1", started_at=T0
    )
    bus = StateBus({"room": room, **topics(online=False), "alerts": AlertsState()})
    bus.publish("lifecycle", ready())
    channel = WebhookChannel(url, timeout_s=2)
    service = AlertsService(
        bus, grace_s=0, workers=[ChannelWorker(channel, 5, Backoff(0.02, 0.05))]
    )
    runner = asyncio.create_task(service.run())
    try:
        await hook.until(1, timeout=5)
        bus.publish("lifecycle", ready().model_copy(update={"phase": Phase.STOPPING}))
        bus.publish("devices", topics(online=True)["devices"])
        await asyncio.sleep(0.3)
        alerts = bus.get("alerts")
        assert isinstance(alerts, AlertsState)
        assert [a.id for a in alerts.active] == ["device:camera:offline"]
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await service.close()
    assert [r["event"] for r in hook.accepted] == ["raised"]
