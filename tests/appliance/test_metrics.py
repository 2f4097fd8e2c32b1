"""GET /metrics: the room in the Prometheus format, read by Prometheus's own parser."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from roomsystem.appliance.alerts import AlertsState
from roomsystem.appliance.metrics import LoopLagMonitor, RoomMetrics
from roomsystem.bus import StateBus
from roomsystem.calendar.state import CalendarState
from roomsystem.config import AddedDevice, Settings
from roomsystem.daemon import Daemon
from roomsystem.devices.state import DevicesState
from roomsystem.drivers.simulator import PtyServer
from roomsystem.drivers.visca_sim import ViscaSimulator
from roomsystem.lifecycle import LifecycleState
from roomsystem.media.state import MediaState, StreamStats
from roomsystem.meeting.state import MeetingState
from roomsystem.sharing.state import SharingState
from tests.util import POLICY


def idle_topics() -> dict[str, BaseModel]:
    """The topics the collector reads besides ``media``, as a room that just started."""
    return {
        "lifecycle": LifecycleState(),
        "devices": DevicesState(),
        "meeting": MeetingState(policy=POLICY),
        "sharing": SharingState(),
        "calendar": CalendarState(backend="local"),
        "alerts": AlertsState(),
    }


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_need_the_token_and_describe_the_room(
    settings: Settings, tmp_path: Path
) -> None:
    line = PtyServer(ViscaSimulator(address=1))
    line.start()
    devices = settings.devices.model_copy(
        update={
            "add": (AddedDevice(id="camera", profile="sony-srg-300h", serial=line.path),),
            "discover_usb": False,
            "discover_cec": False,
        }
    )
    daemon = Daemon(
        settings.model_copy(
            update={
                "devices": devices,
                "web": settings.web.model_copy(update={"listen": "127.0.0.1:0"}),
                "sharing": settings.sharing.model_copy(update={"enabled": False}),
            }
        )
    )
    await daemon.start()
    try:
        await asyncio.wait_for(daemon.room.ready.wait(), 10)
        async with aiohttp.ClientSession(daemon.url) as anonymous:
            async with anonymous.get("/metrics") as response:
                assert response.status == 401
        headers = {"Authorization": f"Bearer {daemon.room.api_token}"}
        async with aiohttp.ClientSession(daemon.url, headers=headers) as client:
            async with client.get("/metrics") as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                found = samples(await response.text())
    finally:
        await daemon.stop()
        line.close()

    def value(name: str, **labels: str) -> float:
        return found[(name, frozenset(labels.items()))]

    assert value("roomsystem_lifecycle_phase", phase="ready") == 1
    assert value("roomsystem_lifecycle_phase", phase="config") == 0
    assert (
        value("roomsystem_device_online", device="camera", kind="camera", profile="sony-srg-300h")
        == 1
    )
    assert value("roomsystem_service_running", service="devices") == 1
    assert value("roomsystem_meeting_active") == 0
    assert value("roomsystem_meeting_participants") == 0
    assert value("roomsystem_share_active") == 0
    assert value("roomsystem_calendar_stale") in (0, 1)
    assert value("roomsystem_calendar_last_sync_timestamp_seconds") >= 0
    assert value("roomsystem_alerts_active", severity="critical") == 0
    assert 0 <= value("roomsystem_event_loop_lag_seconds") < 5
    assert value("roomsystem_process_resident_memory_bytes") > 10_000_000
    assert value("roomsystem_process_cpu_seconds_total") > 0
    assert value("roomsystem_media_camera_on") == 1
    assert value("roomsystem_media_recording") == 0
    assert value("roomsystem_media_recording_failed") == 0
    for stream, kind in (("camera", "video"), ("content", "video"), ("microphone", "audio")):
        assert value("roomsystem_media_stream_peers", stream=stream, kind=kind) == 0
        assert value("roomsystem_media_stream_fps", stream=stream, kind=kind) == 0


def test_media_streams_of_participants_are_summed_not_one_series_each() -> None:
    media = MediaState(
        running=True,
        streams=(
            StreamStats(name="camera", kind="video", peers=2, fps=30, bitrate_bps=900_000),
            StreamStats(
                name="p-ada-video",
                kind="video",
                forwarded=True,
                peers=1,
                fps=15,
                bitrate_bps=300_000,
                fraction_lost=0.02,
                packets_lost=4,
            ),
            StreamStats(
                name="p-bo-video",
                kind="video",
                forwarded=True,
                peers=1,
                fps=30,
                bitrate_bps=500_000,
                fraction_lost=0.1,
                packets_lost=6,
            ),
        ),
        recording_error="recording /x.mkv failed: disk full",
    )
    bus = StateBus({"media": media, **idle_topics()})
    found = samples(RoomMetrics(bus, LoopLagMonitor()).render().decode())

    def value(name: str, **labels: str) -> float:
        return found[(name, frozenset(labels.items()))]

    assert value("roomsystem_media_stream_fps", stream="camera", kind="video") == 30
    assert value("roomsystem_media_stream_peers", stream="participants", kind="video") == 2
    assert value("roomsystem_media_stream_bitrate_bps", stream="participants", kind="video") == (
        800_000
    )
    assert value("roomsystem_media_stream_fraction_lost", stream="participants", kind="video") == (
        0.1
    )
    assert value("roomsystem_media_stream_packets_lost", stream="participants", kind="video") == 10
    assert not any("p-ada" in str(labels) for _, labels in found)
    assert value("roomsystem_media_recording_failed") == 1


async def test_metrics_can_be_turned_off(settings: Settings) -> None:
    off = settings.model_copy(
        update={"metrics": settings.metrics.model_copy(update={"enabled": False})}
    )
    daemon = Daemon(off, lambda settings, bus: [])
    await daemon.start()
    try:
        headers = {"Authorization": f"Bearer {daemon.room.api_token}"}
        async with aiohttp.ClientSession(daemon.url, headers=headers) as client:
            async with client.get("/metrics") as response:
                assert response.status == 404
    finally:
        await daemon.stop()
