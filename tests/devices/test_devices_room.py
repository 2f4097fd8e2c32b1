"""The room drives simulated devices through profiles and drivers, and survives losing one."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from roomsystem.config import AddedDevice, Settings
from roomsystem.daemon import Daemon
from roomsystem.demo import DemoDevices
from roomsystem.devices.state import DevicesState
from tests.util import until_lifecycle


async def until_devices(daemon: Daemon, predicate, timeout: float = 8.0) -> DevicesState:
    async with asyncio.timeout(timeout):
        with daemon.room.bus.subscribe() as subscription:
            state = subscription.snapshot.topics["devices"]
            while not predicate(state):
                change = await subscription.next()
                if change.topic == "devices":
                    state = change.value
    assert isinstance(state, DevicesState)
    return state


def with_devices(settings: Settings, added: tuple[AddedDevice, ...]) -> Settings:
    devices = settings.devices.model_copy(
        update={"add": added, "poll_s": 0.5, "discover_usb": False, "discover_cec": False}
    )
    return settings.model_copy(update={"devices": devices})


@pytest.fixture
async def demo_room(settings: Settings) -> AsyncIterator[tuple[Daemon, DemoDevices]]:
    async with DemoDevices() as simulated:
        daemon = Daemon(with_devices(settings, simulated.added))
        await daemon.start()
        try:
            await asyncio.wait_for(daemon.room.ready.wait(), 10)
            yield daemon, simulated
        finally:
            await daemon.stop()


async def post(daemon: Daemon, path: str, body: dict[str, object]) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {daemon.room.api_token}"}
    async with aiohttp.ClientSession(daemon.url, headers=headers) as session:
        async with session.post(f"/api/v1/{path}", json=body) as response:
            return response.status, await response.json()


async def test_the_demo_room_shows_its_camera_and_display_online(demo_room) -> None:
    daemon, _ = demo_room
    state = await until_devices(
        daemon, lambda s: len(s.devices) == 2 and all(d.online for d in s.devices)
    )
    camera, display = state.devices
    assert (camera.id, camera.profile, camera.certified, camera.presets) == (
        "camera",
        "sony-srg-300h",
        True,
        16,
    )
    assert (display.id, display.profile, display.inputs) == (
        "display",
        "samsung-qb-series",
        ("hdmi1", "hdmi2"),
    )
    await until_lifecycle(daemon.room.bus, lambda s: s.services[0].state == "running")


async def test_commands_reach_the_simulated_devices(demo_room) -> None:
    daemon, simulated = demo_room
    await until_devices(daemon, lambda s: all(d.online for d in s.devices) and len(s.devices) == 2)
    status, body = await post(daemon, "devices/display/power", {"on": True})
    assert (status, body["power"]) == (200, True)
    assert simulated.display.power
    status, body = await post(daemon, "devices/display/input", {"source": "hdmi2"})
    assert (status, body["input_source"]) == (200, "hdmi2")
    status, _ = await post(daemon, "devices/camera/position", {"pan": 500, "tilt": 100})
    assert status == 200
    assert (simulated.camera.pan, simulated.camera.tilt) == (500, 100)
    assert (await post(daemon, "devices/camera/preset", {"action": "set", "number": 3}))[0] == 200
    await post(daemon, "devices/camera/home", {})
    assert simulated.camera.pan == 0
    status, body = await post(daemon, "devices/camera/preset", {"action": "recall", "number": 3})
    assert (status, body["pan"], body["tilt"]) == (200, 500, 100)


async def test_bad_device_commands_get_clear_errors(demo_room) -> None:
    daemon, _ = demo_room
    await until_devices(daemon, lambda s: all(d.online for d in s.devices) and len(s.devices) == 2)
    status, body = await post(daemon, "devices/display/input", {"source": "vga9"})
    assert status == 422
    assert "has no input 'vga9'" in body["error"]["message"]
    status, body = await post(daemon, "devices/camera/preset", {"number": 16})
    assert status == 422
    status, body = await post(daemon, "devices/display/power", {"device": "camera", "on": True})
    assert status == 404
    status, body = await post(daemon, "devices/display/volume", {"level": 101})
    assert status == 422


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def start_simulator(port: int) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "roomsystem",
        "simulate",
        "mdc",
        "--tcp",
        f"127.0.0.1:{port}",
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    first = await asyncio.wait_for(process.stdout.readline(), 10)
    assert first.decode().strip() == f"127.0.0.1:{port}"
    return process


async def test_a_killed_simulator_goes_offline_and_comes_back(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    simulator = await start_simulator(port)
    added = (
        AddedDevice(
            id="display", profile="samsung-qb-series", host="127.0.0.1", port=port, address=1
        ),
    )
    daemon = Daemon(with_devices(settings, added))
    await daemon.start()
    try:
        await until_devices(daemon, lambda s: s.devices and s.devices[0].online)
        simulator.kill()
        await simulator.wait()
        offline = await until_devices(daemon, lambda s: not s.devices[0].online, timeout=5)
        assert offline.devices[0].error
        simulator = await start_simulator(port)
        await until_devices(daemon, lambda s: s.devices[0].online, timeout=8)
    finally:
        await daemon.stop()
        if simulator.returncode is None:
            simulator.kill()
        await simulator.wait()
