"""Fixtures shared by the tests: a room on loopback, and guards against leaks."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from roomsystem.config import LifecycleSettings, Settings, demo_settings
from roomsystem.daemon import Daemon
from roomsystem.demo import demo_web_settings
from roomsystem.lifecycle import Service
from roomsystem.room import ServiceFactory


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves a thread behind (torn down after its event loop)."""
    before = set(threading.enumerate())
    yield
    new = [t for t in threading.enumerate() if t not in before]
    for thread in new:
        # asyncio's child watcher thread ends just after the child it waits for.
        thread.join(timeout=2)
    leaked = [t for t in new if t.is_alive()]
    assert not leaked, f"threads left running: {leaked}"


def loopback_demo_settings(state_dir: Path) -> Settings:
    """The demo room on free loopback ports: API, meeting site, WebRTC and mDNS stay on
    127.0.0.1, so a test never sends to the machine's network. Short retry timers."""
    base = demo_settings()
    return demo_web_settings(
        base.model_copy(
            update={
                "state_dir": state_dir,
                "api": base.api.model_copy(update={"listen": "127.0.0.1:0"}),
                "lifecycle": LifecycleSettings(
                    retry_initial_s=0.05, retry_max_s=0.2, setup_timeout_s=2
                ),
            }
        )
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return loopback_demo_settings(tmp_path / "state")


def only(*services: Service) -> ServiceFactory:
    """A service factory for a room that runs just ``services``."""
    return lambda settings, bus: list(services)


@pytest.fixture
def services() -> list[Service]:
    """The services a test's daemon runs; override in a test module to add some."""
    return []


@pytest.fixture
async def daemon(settings: Settings, services: list[Service]) -> AsyncIterator[Daemon]:
    """A started daemon; on teardown it stops and no task of it may remain."""
    running = Daemon(settings, only(*services))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()
        current = asyncio.current_task()
        leftover = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        assert not leftover, f"tasks left running: {leftover}"


@pytest.fixture
async def client(daemon: Daemon) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client for the daemon's API, sending its bearer token."""
    headers = {"Authorization": f"Bearer {daemon.room.api_token}"}
    async with aiohttp.ClientSession(daemon.url, headers=headers) as session:
        yield session
