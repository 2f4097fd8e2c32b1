"""A demo room for the panel and display tests: simulated devices and the meeting host."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from roomsystem.bus import StateBus
from roomsystem.config import Settings
from roomsystem.daemon import Daemon
from roomsystem.demo import DemoDevices
from roomsystem.lifecycle import Service
from roomsystem.meeting.service import MeetingService
from roomsystem.room import build_services
from roomsystem.sharing.service import SharingService


def room_services(settings: Settings, bus: StateBus) -> list[Service]:
    """The room's services, with the meeting host and sharing however the room is composed."""
    services = build_services(settings, bus)
    names = {s.name for s in services}
    if "meeting" not in names:
        services.append(MeetingService(settings.meeting, bus))
    if "sharing" not in names:
        services.append(
            SharingService(settings.sharing, settings.room, bus, web_listen=settings.web.listen)
        )
    return services


def loopback_only(settings: Settings) -> Settings:
    """The room's web site on a free loopback port and its mDNS on loopback only."""
    update: dict[str, object] = {
        "sharing": settings.sharing.model_copy(update={"mdns_interfaces": ("127.0.0.1",)})
    }
    if "web" in Settings.model_fields:
        update["web"] = settings.web.model_copy(update={"listen": "127.0.0.1:0"})
    return settings.model_copy(update=update)


class DemoRoom:
    """A running demo daemon that a test can stop and start again on the same address."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.daemon: Daemon | None = None

    async def start(self) -> Daemon:
        daemon = Daemon(self.settings, room_services)
        await daemon.start()
        await asyncio.wait_for(daemon.room.ready.wait(), 10)
        self.daemon = daemon
        # Restarts come back on the same port, as a restarted appliance does.
        host_port = daemon.url.removeprefix("http://")
        api = self.settings.api.model_copy(update={"listen": host_port})
        self.settings = self.settings.model_copy(update={"api": api})
        return daemon

    async def stop(self) -> None:
        if self.daemon is not None:
            await self.daemon.stop()
            self.daemon = None

    @property
    def url(self) -> str:
        assert self.daemon is not None
        return self.daemon.url

    @property
    def token(self) -> str:
        assert self.daemon is not None
        return self.daemon.room.api_token

    def token_file(self) -> Path:
        return self.settings.state_dir / "api-token"

    def topic(self, name: str) -> object:
        assert self.daemon is not None
        return self.daemon.room.bus.get(name)


@pytest.fixture
async def demo_room(settings: Settings) -> AsyncIterator[DemoRoom]:
    async with DemoDevices() as simulated:
        devices = settings.devices.model_copy(update={"add": simulated.added})
        room = DemoRoom(loopback_only(settings.model_copy(update={"devices": devices})))
        await room.start()
        try:
            yield room
        finally:
            await room.stop()
