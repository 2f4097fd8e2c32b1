"""The API client against a real running daemon: snapshot, changes, commands, reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import queue
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlpanel.client import (
    CommandResult,
    LinkState,
    RoomClient,
    RoomLink,
    apply_message,
    command_paths,
)
from roomsystem.devices.state import DevicesState
from tests.controlpanel.conftest import DemoRoom


class Watcher:
    """Collects a link's states and waits for one that matches."""

    def __init__(self) -> None:
        self.states: list[LinkState] = []
        self._changed = asyncio.Event()

    def __call__(self, state: LinkState) -> None:
        self.states.append(state)
        self._changed.set()

    async def until(self, predicate: Callable[[LinkState], bool], timeout: float = 5) -> LinkState:
        async with asyncio.timeout(timeout):
            while True:
                if self.states and predicate(self.states[-1]):
                    return self.states[-1]
                self._changed.clear()
                await self._changed.wait()


@contextlib.asynccontextmanager
async def running(link: RoomLink) -> AsyncIterator[RoomLink]:
    task = asyncio.create_task(link.run())
    try:
        yield link
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def mic_muted(state: LinkState) -> Any:
    devices = state.section("devices") or {}
    return devices.get("audio", {}).get("mic_muted")


async def test_link_follows_the_snapshot_and_sends_commands(demo_room: DemoRoom) -> None:
    watcher = Watcher()
    async with running(RoomLink(demo_room.url, demo_room.token, watcher)) as link:
        state = await watcher.until(lambda s: s.connected)
        assert (state.section("room") or {})["name"] == demo_room.settings.room.name
        assert state.offers("devices/audio/mute")
        assert mic_muted(state) is False

        result = await link.command("devices/audio/mute", {"on": True})
        assert result.ok, result
        assert result.data["mic_muted"] is True
        await watcher.until(lambda s: mic_muted(s) is True)
        devices = demo_room.topic("devices")
        assert isinstance(devices, DevicesState)
        assert devices.audio.mic_muted is True


async def test_command_errors_name_what_was_wrong(demo_room: DemoRoom) -> None:
    watcher = Watcher()
    async with running(RoomLink(demo_room.url, demo_room.token, watcher)) as link:
        await watcher.until(lambda s: s.connected)
        bad = await link.command("devices/audio/volume", {"level": 400})
        assert (bad.ok, bad.status) == (False, 422)
        assert "level" in bad.message
        unknown = await link.command("no/such/command")
        assert (unknown.ok, unknown.status) == (False, 404)


async def test_link_reconnects_after_a_daemon_restart(demo_room: DemoRoom) -> None:
    watcher = Watcher()
    link = RoomLink(demo_room.url, demo_room.token, watcher, backoff_initial_s=0.05)
    async with running(link):
        await watcher.until(lambda s: s.connected)
        await demo_room.stop()
        down = await watcher.until(lambda s: not s.connected)
        assert down.error
        # The last snapshot stays for display, but is no longer live.
        assert down.section("room") is not None
        assert not down.offers("devices/audio/mute")
        result = await link.command("devices/audio/mute", {})
        assert not result.ok
        await demo_room.start()
        up = await watcher.until(lambda s: s.connected, timeout=10)
        assert up.offers("devices/audio/mute")


async def test_a_wrong_token_is_reported_not_retried_silently(demo_room: DemoRoom) -> None:
    watcher = Watcher()
    async with running(RoomLink(demo_room.url, "wrong", watcher, backoff_initial_s=0.05)):
        state = await watcher.until(lambda s: s.error is not None)
        assert not state.connected
        assert "401" in (state.error or "")


async def test_unreachable_room_is_reported() -> None:
    watcher = Watcher()
    async with running(RoomLink("http://127.0.0.1:9", "", watcher, backoff_initial_s=0.05)):
        state = await watcher.until(lambda s: s.error is not None)
        assert "cannot reach the room" in (state.error or "")
        assert not state.connected


async def test_threaded_client_delivers_on_the_ui_side(demo_room: DemoRoom) -> None:
    # The "UI thread" here is a queue the test drains; the client runs on its own thread.
    inbox: queue.Queue[Callable[[], None]] = queue.Queue()
    client = RoomClient(demo_room.url, demo_room.token, deliver=inbox.put)
    states: list[LinkState] = []
    results: list[CommandResult] = []
    client.add_listener(states.append)
    client.start()
    try:

        async def drain_until(predicate: Callable[[], bool]) -> None:
            async with asyncio.timeout(5):
                while not predicate():
                    with contextlib.suppress(queue.Empty):
                        inbox.get_nowait()()
                        continue
                    await asyncio.sleep(0.01)

        await drain_until(lambda: bool(states) and states[-1].connected)
        client.send("devices/audio/volume", {"level": 35}, results.append)
        await drain_until(lambda: bool(results))
        assert results[0].ok
        await drain_until(lambda: (states[-1].section("devices") or {})["audio"]["volume"] == 35)
    finally:
        await asyncio.to_thread(client.stop)
    assert client.state.connected  # the last state it saw; the thread has ended
    late: list[CommandResult] = []
    client.send("devices/audio/volume", {"level": 40}, late.append)
    inbox.get_nowait()()
    assert late[0].message


def test_command_paths_from_openapi() -> None:
    document: dict[str, Any] = {
        "paths": {"/api/v1/health": {"get": {}}, "/api/v1/meeting/start": {"post": {}}}
    }
    assert command_paths(document) == {"meeting/start"}
    assert command_paths({}) == frozenset()


def test_changes_replace_whole_topics() -> None:
    state = apply_message(LinkState(), {"type": "snapshot", "seq": 3, "state": {"a": {"x": 1}}})
    state = apply_message(state, {"type": "change", "seq": 4, "topic": "a", "data": {"y": 2}})
    assert (state.snapshot, state.seq) == ({"a": {"y": 2}}, 4)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(
    st.dictionaries(
        st.sampled_from(["type", "seq", "state", "topic", "data"]) | st.text(max_size=4),
        json_values | st.sampled_from(["snapshot", "change"]) | st.integers(),
        max_size=5,
    )
)
def test_any_message_leaves_a_usable_state(message: dict[str, Any]) -> None:
    try:
        state = apply_message(LinkState(), message)
    except (TypeError, ValueError):
        pytest.fail(f"message {message!r} broke the client")
    assert isinstance(state.snapshot, dict)
