"""GET /metrics: the room in the Prometheus format, read by Prometheus's own parser."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from roomsystem.config import AddedDevice, Settings
from roomsystem.daemon import Daemon
from roomsystem.drivers.simulator import PtyServer
from roomsystem.drivers.visca_sim import ViscaSimulator


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
