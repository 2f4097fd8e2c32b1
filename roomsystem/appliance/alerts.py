"""Alerts: problems of the room that IT must hear about before the next meeting does.

Problems are derived from the state snapshot alone: a device that does not answer, a
service that failed, a calendar that could not sync, a meeting site that cannot listen, a
recording that failed, sharing that is not announced over mDNS. A problem that lasts ``grace_s``
becomes an alert in the ``alerts`` topic (what, since when, how bad) and is sent once to
each configured channel (a webhook, e-mail); when it goes away, that is sent once too.
A channel that cannot deliver retries with exponential back-off and never blocks another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict

from roomsystem.bus import StateBus
from roomsystem.calendar.state import CalendarState
from roomsystem.devices.state import DevicesState
from roomsystem.lifecycle import Backoff, LifecycleState, Phase, Service, ServiceState
from roomsystem.media.state import MediaState
from roomsystem.sharing.state import SharingState

logger = logging.getLogger(__name__)

RECENT_KEPT = 20


class Severity(StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"


class Alert(BaseModel):
    """One problem of the room, raised after it lasted the grace period."""

    model_config = ConfigDict(frozen=True)

    id: str
    source: Literal["device", "service", "calendar", "meeting", "media", "sharing"]
    subject: str
    message: str
    severity: Severity
    since: datetime


class ClearedAlert(Alert):
    cleared_at: datetime


class AlertsState(BaseModel):
    """The ``alerts`` topic: what is wrong now, and what was wrong lately."""

    model_config = ConfigDict(frozen=True)

    active: tuple[Alert, ...] = ()
    recent: tuple[ClearedAlert, ...] = ()


class AlertEvent(BaseModel):
    """What a channel delivers: an alert raised or cleared, and which room it is about."""

    model_config = ConfigDict(frozen=True)

    event: Literal["raised", "cleared"]
    alert: Alert
    room: str
    room_id: str
    location: str


def current_problems(topics: Mapping[str, BaseModel], now: datetime) -> dict[str, Alert]:
    """Every problem the snapshot shows, by alert id; nothing until the room is ready.

    ``media`` and ``sharing`` may be missing from the snapshot (a room without them): no
    topic, no problem.
    """
    lifecycle = topics["lifecycle"]
    assert isinstance(lifecycle, LifecycleState)
    if lifecycle.phase is not Phase.READY:
        return {}
    devices = topics["devices"]
    assert isinstance(devices, DevicesState)
    calendar = topics["calendar"]
    assert isinstance(calendar, CalendarState)
    found = [
        *_failed_services(lifecycle, now),
        *_offline_devices(devices, now),
        *_stale_calendar(calendar, now),
        *_site_not_listening(lifecycle, now),
        *_failed_recording(topics.get("media"), now),
        *_sharing_not_announced(topics.get("sharing"), now),
    ]
    return {alert.id: alert for alert in found}


def _failed_services(lifecycle: LifecycleState, now: datetime) -> list[Alert]:
    return [
        Alert(
            id=f"service:{service.name}:failed",
            source="service",
            subject=service.name,
            message=f"service {service.name} failed ({service.error_kind} error): {service.error}",
            severity=Severity.CRITICAL,
            since=now,
        )
        for service in lifecycle.services
        if service.state is ServiceState.FAILED
    ]


def _offline_devices(devices: DevicesState, now: datetime) -> list[Alert]:
    return [
        Alert(
            id=f"device:{device.id}:offline",
            source="device",
            subject=device.id,
            message=f"{device.kind} {device.name or device.id} is offline: "
            f"{device.error or 'not connected'}",
            severity=Severity.CRITICAL,
            since=device.since or now,
        )
        for device in devices.devices
        if not device.online
    ]


def _stale_calendar(calendar: CalendarState, now: datetime) -> list[Alert]:
    if not calendar.stale:
        return []
    synced = calendar.synced_at.isoformat() if calendar.synced_at else "never"
    return [
        Alert(
            id="calendar:stale",
            source="calendar",
            subject=calendar.backend or "calendar",
            message=f"bookings may be out of date (last sync {synced}): "
            f"{calendar.stale_message or calendar.stale_reason or 'sync failing'}",
            severity=Severity.WARNING,
            since=now,
        )
    ]


def _site_not_listening(lifecycle: LifecycleState, now: datetime) -> list[Alert]:
    if lifecycle.web.error is None:
        return []
    return [
        Alert(
            id="meeting:site:not-listening",
            source="meeting",
            subject="meeting site",
            message="the meeting site is not listening, remote participants cannot join: "
            f"{lifecycle.web.error}",
            severity=Severity.CRITICAL,
            since=now,
        )
    ]


def _failed_recording(media: BaseModel | None, now: datetime) -> list[Alert]:
    if media is None:
        return []
    assert isinstance(media, MediaState)
    if media.recording_error is None:
        return []
    # Stays raised until a recording starts fine: the media service clears the error then.
    return [
        Alert(
            id="media:recording:failed",
            source="media",
            subject="recording",
            message=f"a recording failed: {media.recording_error}",
            severity=Severity.WARNING,
            since=now,
        )
    ]


def _sharing_not_announced(sharing: BaseModel | None, now: datetime) -> list[Alert]:
    if sharing is None:
        return []
    assert isinstance(sharing, SharingState)
    if not sharing.enabled or sharing.advertising:
        return []
    fallback = f"; they can still open {sharing.share_url}" if sharing.share_url else ""
    return [
        Alert(
            id="sharing:not-announced",
            source="sharing",
            subject=sharing.advertised_name or "sharing",
            message="wireless sharing is on but not announced over mDNS, laptops in the room "
            f"cannot find it{fallback}",
            severity=Severity.WARNING,
            since=now,
        )
    ]


class AlertTracker:
    """Turns the problems seen over time into raised and cleared alerts, each once."""

    def __init__(self, grace_s: float) -> None:
        self.grace = timedelta(seconds=grace_s)
        self._first_seen: dict[str, datetime] = {}
        self.active: dict[str, Alert] = {}
        self.recent: list[ClearedAlert] = []

    def update(
        self, problems: Mapping[str, Alert], now: datetime
    ) -> list[tuple[Literal["raised", "cleared"], Alert]]:
        events: list[tuple[Literal["raised", "cleared"], Alert]] = []
        for alert_id in list(self._first_seen):
            if alert_id not in problems:
                del self._first_seen[alert_id]
                cleared = self.active.pop(alert_id, None)
                if cleared is not None:
                    events.append(("cleared", cleared))
                    self._remember(ClearedAlert(**cleared.model_dump(), cleared_at=now))
        for alert_id, problem in problems.items():
            first = self._first_seen.setdefault(alert_id, now)
            if alert_id in self.active:
                # The message may change (a new error); the alert is the same problem.
                self.active[alert_id] = problem.model_copy(update={"since": first})
            elif now - first >= self.grace:
                alert = problem.model_copy(update={"since": first})
                self.active[alert_id] = alert
                events.append(("raised", alert))
        return events

    def next_due(self, now: datetime) -> float | None:
        """Seconds until a pending problem becomes an alert, if one is pending."""
        pending = [
            first + self.grace for key, first in self._first_seen.items() if key not in self.active
        ]
        if not pending:
            return None
        return max(0.0, (min(pending) - now).total_seconds())

    def state(self) -> AlertsState:
        return AlertsState(active=tuple(self.active.values()), recent=tuple(self.recent))

    def _remember(self, cleared: ClearedAlert) -> None:
        self.recent = [cleared, *self.recent][:RECENT_KEPT]


def _phase(topics: Mapping[str, BaseModel]) -> Phase:
    lifecycle = topics["lifecycle"]
    assert isinstance(lifecycle, LifecycleState)
    return lifecycle.phase


class DeliveryFailed(Exception):
    """A channel could not deliver; ``retry`` says whether trying again may help."""

    def __init__(self, message: str, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


class Channel(Protocol):
    name: str

    async def deliver(self, event: AlertEvent) -> None:
        """Send ``event`` once; raise `DeliveryFailed`."""

    async def close(self) -> None: ...


class ChannelWorker:
    """Delivers one channel's events in order, retrying each with back-off."""

    def __init__(self, channel: Channel, attempts: int, backoff: Backoff) -> None:
        self.channel = channel
        self.attempts = attempts
        self.backoff = backoff
        self.queue: asyncio.Queue[AlertEvent] = asyncio.Queue()

    async def run(self) -> None:
        while True:
            event = await self.queue.get()
            await self._deliver(event)

    async def _deliver(self, event: AlertEvent) -> None:
        self.backoff.reset()
        for attempt in range(1, self.attempts + 1):
            try:
                await self.channel.deliver(event)
            except DeliveryFailed as exc:
                give_up = not exc.retry or attempt == self.attempts
                logger.warning(
                    "alert %s %s: %s attempt %d/%d failed: %s%s",
                    event.alert.id,
                    event.event,
                    self.channel.name,
                    attempt,
                    self.attempts,
                    exc,
                    "; giving up" if give_up else "",
                )
                if give_up:
                    return
                await asyncio.sleep(self.backoff.next_delay())
            else:
                logger.info(
                    "alert %s %s sent by %s", event.alert.id, event.event, self.channel.name
                )
                return


class AlertsService(Service):
    """Watches the snapshot, publishes the ``alerts`` topic and sends alerts out."""

    name = "alerts"

    def __init__(
        self, bus: StateBus, grace_s: float, workers: list[ChannelWorker] | None = None
    ) -> None:
        self._bus = bus
        self.tracker = AlertTracker(grace_s)
        self.workers = workers or []

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for worker in self.workers:
                group.create_task(worker.run(), name=f"alerts:{worker.channel.name}")
            group.create_task(self._watch(), name="alerts:watch")

    async def close(self) -> None:
        for worker in self.workers:
            with contextlib.suppress(Exception):
                await worker.channel.close()

    async def _watch(self) -> None:
        with self._bus.subscribe() as subscription:
            while True:
                now = datetime.now(UTC)
                topics = self._bus.snapshot().topics
                # A room that stops has not solved its problems: clearing them would send
                # "resolved" for each, and "raised" again once it is back.
                stopping = _phase(topics) is Phase.STOPPING
                if not stopping:
                    for kind, alert in self.tracker.update(current_problems(topics, now), now):
                        self._send(kind, alert, topics)
                    self._bus.publish("alerts", self.tracker.state())
                due = None if stopping else self.tracker.next_due(now)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(due):
                        await subscription.next()

    def _send(
        self, kind: Literal["raised", "cleared"], alert: Alert, topics: Mapping[str, BaseModel]
    ) -> None:
        log = logger.warning if kind == "raised" else logger.info
        log("alert %s: %s", kind, alert.message)
        room = topics["room"]
        event = AlertEvent(
            event=kind,
            alert=alert,
            room=str(getattr(room, "name", "")),
            room_id=str(getattr(room, "id", "")),
            location=str(getattr(room, "location", "")),
        )
        for worker in self.workers:
            worker.queue.put_nowait(event)
