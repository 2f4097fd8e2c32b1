"""``GET /metrics``: the room in the Prometheus text format, for monitoring a fleet of rooms.

Every value is read from the state bus at scrape time, so the metrics can never disagree
with ``GET /api/v1/state``. Process CPU and memory come from prometheus_client's own
process collector; the event loop's lag from `LoopLagMonitor`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from roomsystem.appliance.alerts import AlertsState, Severity
from roomsystem.bus import StateBus
from roomsystem.calendar.state import CalendarState
from roomsystem.devices.state import DevicesState
from roomsystem.lifecycle import LifecycleState, Phase, ServiceState
from roomsystem.media.state import MediaState
from roomsystem.meeting.state import MeetingState
from roomsystem.sharing.state import SharingState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class LoopLagMonitor:
    """Measures how late the event loop wakes up: a busy or blocked loop shows here first."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.lag_s = 0.0
        self.max_lag_s = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._measure(), name="appliance:loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _measure(self) -> None:
        while True:
            due = time.monotonic() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self.lag_s = max(0.0, time.monotonic() - due)
            self.max_lag_s = max(self.max_lag_s, self.lag_s)


def _gauge(name: str, documentation: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"roomsystem_{name}", documentation, labels=list(labels))


class RoomCollector(Collector):
    """Turns the bus's current snapshot into metric families."""

    def __init__(self, bus: StateBus, loop_lag: LoopLagMonitor) -> None:
        self._bus = bus
        self._loop_lag = loop_lag

    def collect(self) -> Iterator[Metric]:
        topics = self._bus.snapshot().topics
        yield from self._lifecycle(topics["lifecycle"])
        yield from self._devices(topics["devices"])
        yield from self._meeting(topics["meeting"], topics["sharing"])
        yield from self._calendar(topics["calendar"])
        if "alerts" in topics:
            yield from self._alerts(topics["alerts"])
        if "media" in topics:
            yield from self._media(topics["media"])
        lag = _gauge("event_loop_lag_seconds", "How late the event loop last woke up.")
        lag.add_metric([], self._loop_lag.lag_s)
        yield lag

    def _lifecycle(self, state: object) -> Iterator[Metric]:
        assert isinstance(state, LifecycleState)
        phase = _gauge("lifecycle_phase", "1 for the room's current lifecycle phase.", ("phase",))
        for value in Phase:
            phase.add_metric([value.value], 1.0 if state.phase is value else 0.0)
        up = _gauge("service_running", "1 if the service runs, 0 if not.", ("service",))
        failures = _gauge("service_failures", "Failures of the service since start.", ("service",))
        for service in state.services:
            up.add_metric([service.name], float(service.state is ServiceState.RUNNING))
            failures.add_metric([service.name], float(service.failures))
        yield from (phase, up, failures)

    def _devices(self, state: object) -> Iterator[Metric]:
        assert isinstance(state, DevicesState)
        online = _gauge(
            "device_online", "1 if the device answers, 0 if not.", ("device", "kind", "profile")
        )
        for device in state.devices:
            online.add_metric([device.id, device.kind.value, device.profile], float(device.online))
        yield online

    def _meeting(self, meeting: object, sharing: object) -> Iterator[Metric]:
        assert isinstance(meeting, MeetingState)
        assert isinstance(sharing, SharingState)
        active = _gauge("meeting_active", "1 while the room is in a meeting.")
        active.add_metric([], float(meeting.in_meeting))
        people = _gauge("meeting_participants", "Remote participants admitted to the meeting.")
        people.add_metric([], float(sum(not p.waiting for p in meeting.participants)))
        waiting = _gauge("meeting_waiting", "Remote participants in the waiting room.")
        waiting.add_metric([], float(meeting.waiting_count))
        share = _gauge("share_active", "1 while someone shares a screen.")
        share.add_metric([], float(sharing.active))
        yield from (active, people, waiting, share)

    def _calendar(self, state: object) -> Iterator[Metric]:
        assert isinstance(state, CalendarState)
        synced = _gauge(
            "calendar_last_sync_timestamp_seconds",
            "When the calendar last synced successfully (Unix time; 0: never).",
        )
        synced.add_metric([], state.synced_at.timestamp() if state.synced_at else 0.0)
        stale = _gauge("calendar_stale", "1 if the bookings shown may be out of date.")
        stale.add_metric([], float(state.stale))
        yield from (synced, stale)

    def _alerts(self, state: object) -> Iterator[Metric]:
        assert isinstance(state, AlertsState)
        active = _gauge("alerts_active", "Alerts raised and not yet cleared.", ("severity",))
        for severity in Severity:
            count = sum(alert.severity is severity for alert in state.active)
            active.add_metric([severity.value], float(count))
        yield active

    def _media(self, state: object) -> Iterator[Metric]:
        assert isinstance(state, MediaState)
        labels = ("stream", "kind")
        families = {
            "peers": _gauge("media_stream_peers", "Peers receiving the stream.", labels),
            "fps": _gauge("media_stream_fps", "Frames encoded per second.", labels),
            "bitrate_bps": _gauge(
                "media_stream_bitrate_bps", "Bits per second the encoder put out.", labels
            ),
            "target_bitrate_bps": _gauge(
                "media_stream_target_bitrate_bps",
                "The bitrate the encoder aims for (the weakest peer's estimate).",
                labels,
            ),
            "fraction_lost": _gauge(
                "media_stream_fraction_lost",
                "The worst peer's fraction of packets lost, from its last receiver report.",
                labels,
            ),
            "packets_lost": _gauge(
                "media_stream_packets_lost", "Packets the current peers reported lost.", labels
            ),
        }
        for stream in state.streams:
            if stream.forwarded:
                continue
            for field, family in families.items():
                family.add_metric([stream.name, stream.kind], float(getattr(stream, field)))
        # Participants come and go: their forwarded streams are summed per kind, so that a
        # long-running room does not grow a series per participant it ever had.
        for kind in ("audio", "video"):
            forwarded = [s for s in state.streams if s.forwarded and s.kind == kind]
            if not forwarded:
                continue
            for field, family in families.items():
                values = [float(getattr(s, field)) for s in forwarded]
                total = max(values) if field == "fraction_lost" else sum(values)
                family.add_metric(["participants", kind], total)
        camera = _gauge("media_camera_on", "1 while the room's camera is on.")
        camera.add_metric([], float(state.camera_on))
        recording = _gauge("media_recording", "1 while a recording runs.")
        recording.add_metric([], float(state.recording))
        failed = _gauge("media_recording_failed", "1 if the last recording failed.")
        failed.add_metric([], float(state.recording_error is not None))
        yield from (*families.values(), camera, recording, failed)


class RoomMetrics:
    """The registry behind ``GET /metrics``: the room's collector and the process's."""

    def __init__(self, bus: StateBus, loop_lag: LoopLagMonitor) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(RoomCollector(bus, loop_lag))
        ProcessCollector(namespace="roomsystem", registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


# How ``GET /metrics`` appears in the API's OpenAPI document.
OPENAPI_PATH: dict[str, object] = {
    "get": {
        "summary": "The room's metrics in the Prometheus text format (version 0.0.4).",
        "responses": {
            "200": {
                "description": "Lifecycle, devices, meeting, sharing, calendar, alerts, "
                "media streams, event-loop lag and process metrics",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            "401": {"description": "The bearer token is missing or wrong"},
        },
    }
}
