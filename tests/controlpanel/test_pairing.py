"""Pairing a separate panel with the demo room: found over mDNS on loopback, the code on
the room display, typed on the panel's number pad with Kivy touch events."""

from __future__ import annotations

import asyncio
import json
import queue
import stat
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlpanel import views
from controlpanel.client import (
    LinkState,
    PairingFailure,
    PairingGrant,
    PairingTicket,
    RoomChoice,
    Worker,
    complete_and_keep,
    complete_pairing,
    find_rooms,
    request_pairing,
)
from controlpanel.common import paired_api, parse_options, room_file
from controlpanel.pilot import PilotProcess
from controlpanel.views import format_code
from roomsystem.meeting.state import MeetingState
from roomsystem.pairing.state import PairingState
from roomsystem.state import RoomInfo
from tests.controlpanel.conftest import DemoRoom
from tests.controlpanel.screens import check_screenshot, screenshot_dir

LOOPBACK = "127.0.0.1"
PANEL = (1280, 800)


def pairing(room: DemoRoom) -> PairingState:
    state = room.topic("pairing")
    assert isinstance(state, PairingState)
    return state


def room_id(room: DemoRoom) -> str:
    info = room.topic("room")
    assert isinstance(info, RoomInfo)
    return info.id


async def until(room: DemoRoom, predicate: Callable[[], bool], timeout: float = 10) -> None:
    assert room.daemon is not None
    async with asyncio.timeout(timeout):
        with room.daemon.room.bus.subscribe() as subscription:
            while not predicate():
                await subscription.next()


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def this_room(room: DemoRoom) -> RoomChoice:
    """The demo room as a panel finds it (other rooms may be announced on loopback too)."""
    for _ in range(5):  # bounded: the room is announced within a second or two
        found = [r for r in await find_rooms(LOOPBACK, wait_s=1.0) if r.room_id == room_id(room)]
        if found:
            return found[0]
    raise AssertionError("the demo room offers no pairing over mDNS on loopback")


async def main_token_request(
    room: DemoRoom, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {room.token}"}
    async with (
        aiohttp.ClientSession(room.url, headers=headers) as session,
        session.request(method, f"/api/v1/{path}", json=body) as response,
    ):
        return response.status, await response.json()


async def test_a_panel_finds_the_room_and_pairs_through_the_client(
    demo_room: DemoRoom, tmp_path: Path
) -> None:
    room = await this_room(demo_room)
    assert room.api_urls == (demo_room.url,)

    ticket = await request_pairing(room, "Client panel")
    assert isinstance(ticket, PairingTicket), ticket
    assert pairing(demo_room).panel_name == "Client panel"
    code = pairing(demo_room).code
    assert code is not None
    refused = await complete_pairing(ticket, wrong(code))
    assert refused == PairingFailure(
        "wrong pairing code: 2 attempts left", 403, attempts_left=2, start_over=False
    )

    token_file = tmp_path / "new" / "dir" / "panel-token"
    granted = await complete_and_keep(ticket, code, str(token_file))
    assert isinstance(granted, PairingGrant), granted
    assert token_file.read_text().strip() == granted.token
    for kept in (token_file, room_file(str(token_file))):
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    assert paired_api(str(token_file)) == demo_room.url
    assert json.loads(room_file(str(token_file)).read_text())["room_id"] == room_id(demo_room)

    # Used once: the request is gone, and a fresh start needs a new code.
    again = await complete_pairing(ticket, code)
    assert isinstance(again, PairingFailure)
    assert (again.status, again.start_over) == (404, True)

    # Next start: the panel is paired, so it goes straight to the room it paired with.
    options = parse_options("roomsystem-panel", "", ["--token-file", str(token_file)])
    assert (options.pair, options.api) == (False, demo_room.url)
    again_pair = parse_options("roomsystem-panel", "", ["--token-file", str(token_file), "--pair"])
    assert again_pair.pair


def test_a_new_panel_pairs_on_its_first_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No room on this machine and no token file given: the panel's own file, not there yet.
    monkeypatch.setattr("controlpanel.common.SYSTEM_STATE_DIR", tmp_path / "no-room")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "no-demo"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    first = parse_options("roomsystem-panel", "", [])
    assert first.pair
    assert first.token_file == str(tmp_path / "config" / "roomsystem" / "panel-token")
    with pytest.raises(SystemExit):  # a display has nothing to pair
        parse_options("roomsystem-display", "", ["--token-file", str(tmp_path / "none")], False)


def test_pairing_on_the_appliance_never_takes_the_rooms_own_token_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    room_state = tmp_path / "room"
    room_state.mkdir()
    (room_state / "api-token").write_text("the room's main token\n")
    monkeypatch.setattr("controlpanel.common.SYSTEM_STATE_DIR", room_state)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    # Without --pair, a panel on the appliance uses the room's token ...
    assert parse_options("roomsystem-panel", "", []).token_file == str(room_state / "api-token")
    # ... but one that pairs keeps a token of its own, elsewhere.
    pairing = parse_options("roomsystem-panel", "", ["--pair"])
    assert pairing.pair
    assert pairing.token_file == str(tmp_path / "config" / "roomsystem" / "panel-token")


async def test_a_room_that_is_not_running_gets_a_clear_failure() -> None:
    nowhere = RoomChoice.from_url("http://127.0.0.1:9")
    failed = await request_pairing(nowhere, "Panel")
    assert isinstance(failed, PairingFailure)
    assert failed.message.startswith("cannot reach the room at http://127.0.0.1:9")


def test_the_display_prompt_names_the_panel_and_groups_the_code() -> None:
    waiting = {"pending": True, "code": "042917", "panel_name": "Lobby", "address": "10.0.0.7"}
    state = LinkState(connected=True, snapshot={"pairing": waiting})
    assert views.pairing_prompt(state) == "Pairing Lobby at 10.0.0.7: type 042 917 on that panel"
    # What a panel token gets: no code, so nothing to show.
    hidden = LinkState(connected=True, snapshot={"pairing": {**waiting, "code": None}})
    assert views.pairing_prompt(hidden) == ""
    assert views.pairing_prompt(LinkState()) == ""
    assert views.typed_code("04", 6) == "04_ ___"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


@given(
    section=json_values
    | st.fixed_dictionaries(
        {}, optional={k: json_values for k in ("pending", "code", "panel_name", "address")}
    )
)
def test_the_prompt_tolerates_any_pairing_section(section: Any) -> None:
    text = views.pairing_prompt(LinkState(snapshot={"pairing": section}))
    assert isinstance(text, str)


def test_the_worker_hands_results_and_errors_to_the_ui_thread() -> None:
    handed: queue.Queue[tuple[str, Any, str]] = queue.Queue()

    def deliver(call: Callable[[], None]) -> None:
        call()

    async def answer() -> int:
        return 42

    async def fail() -> int:
        raise ValueError("no room")

    async def forever() -> int:
        await asyncio.Event().wait()
        return 0

    def on_done(value: int) -> None:
        handed.put(("done", value, threading.current_thread().name))

    def on_error(error: BaseException) -> None:
        handed.put(("error", str(error), threading.current_thread().name))

    worker = Worker(deliver)
    worker.start()
    try:
        worker.submit(answer(), on_done, on_error)
        # ``deliver`` is called from the worker's own thread: a UI schedules from there.
        assert handed.get(timeout=5) == ("done", 42, "room-worker")
        worker.submit(fail(), on_done, on_error)
        assert handed.get(timeout=5)[:2] == ("error", "no room")
        worker.submit(forever(), on_done, on_error)
    finally:
        worker.stop()
    # A job still running when the worker stops is cancelled, not handed over.
    assert handed.empty()
    worker.submit(answer(), on_done, on_error)
    assert handed.get(timeout=5)[:2] == ("error", "the worker is not running")


@asynccontextmanager
async def app(module: str, args: list[str], tmp_path: Path) -> AsyncIterator[PilotProcess]:
    process = PilotProcess(module, args, tmp_path / f"kivy-{module.rsplit('.', 1)[1]}")
    await process.start()
    try:
        yield process
    finally:
        status = await process.stop()
        assert status == 0, process.log.decode()[-3000:]


async def shoot(pilot: PilotProcess, path: Path, size: tuple[int, int]) -> None:
    await asyncio.sleep(0.4)  # the last change on screen, past any transition
    reply = await pilot.request("screenshot", path=str(path))
    assert tuple(reply["size"]) == size
    check_screenshot(path, size)


@pytest.mark.timeout(120)
async def test_the_display_shows_the_code_while_a_panel_waits(
    demo_room: DemoRoom, tmp_path: Path
) -> None:
    args = ["--api", demo_room.url, "--token-file", str(demo_room.token_file())]
    async with app("controlpanel.display", [*args, "--size", "1920x1080"], tmp_path) as display:
        await display.request("wait", name="room_name", contains="Demo", timeout=30)
        assert (await display.request("info", name="pairing_code"))["text"] == ""
        ticket = await request_pairing(RoomChoice.from_url(demo_room.url), "Lobby panel")
        assert isinstance(ticket, PairingTicket)
        code = pairing(demo_room).code
        assert code is not None
        shown = await display.request("wait", name="pairing_code", contains=format_code(code))
        assert "Lobby panel" in shown["text"]
        assert LOOPBACK in shown["text"]
        await shoot(display, screenshot_dir(tmp_path) / "display-pairing.png", (1920, 1080))

        status, body = await main_token_request(demo_room, "POST", "pairing/cancel", {})
        assert (status, body["cancelled"]) == (200, True)
        await display.request("wait", name="pairing_code", not_contains=format_code(code))
        assert (await display.request("info", name="pairing_code"))["text"] == ""


async def type_code(panel: PilotProcess, code: str) -> None:
    await panel.request("tap", name="pair_key_clear")
    for digit in code:
        await panel.request("tap", name=f"pair_key_{digit}")
    await panel.request("wait", name="pair_code", contains=format_code(code))
    await panel.request("tap", name="pair_key_ok")


@pytest.mark.timeout(180)
async def test_an_unpaired_panel_pairs_with_the_code_and_runs_the_room(
    demo_room: DemoRoom, tmp_path: Path
) -> None:
    shots = screenshot_dir(tmp_path)
    token_file = tmp_path / "panel-home" / "config" / "panel-token"
    args = ["--pair", "--token-file", str(token_file), "--interface", LOOPBACK]
    args += ["--panel-name", "Test panel", "--size", f"{PANEL[0]}x{PANEL[1]}"]
    async with app("controlpanel.panel", args, tmp_path) as panel:
        port = demo_room.url.rsplit(":", 1)[1]
        this = f"pair_room_{room_id(demo_room)}"
        await panel.request("wait", name=this, contains=f"{LOOPBACK}:{port}", timeout=30)
        await shoot(panel, shots / "panel-pairing-rooms.png", PANEL)
        await assert_targets_large_enough(panel)
        await panel.request("tap", name=this)

        await until(demo_room, lambda: pairing(demo_room).pending)
        assert pairing(demo_room).panel_name == "Test panel"
        code = pairing(demo_room).code
        assert code is not None
        await panel.request("wait", name="pair_code_for", contains="Type the code")
        await shoot(panel, shots / "panel-pairing-code.png", PANEL)
        await assert_targets_large_enough(panel)

        await type_code(panel, wrong(code))
        await panel.request("wait", name="pair_status", contains="2 attempts left")
        assert pairing(demo_room).attempts_left == 2
        assert not token_file.exists()
        await type_code(panel, code)

        await panel.request("wait_connected", timeout=15)
        await panel.request("wait", name="room_name", contains="Demo", timeout=10)
        await the_panel_keeps_its_own_token(demo_room, token_file)
        token = kept_token(token_file)
        await panel.request("wait", name="meet_now", contains="Meet now")
        await panel.request("tap", name="meet_now")
        await until(demo_room, lambda: meeting(demo_room).in_meeting)

        status, body = await main_token_request(
            demo_room, "POST", "panels/revoke", {"panel": "Test panel"}
        )
        assert status == 200, body
        # Unpaired: the panel goes back to pairing by itself, and can pair again.
        await panel.request("wait", name=this, contains=f"{LOOPBACK}:{port}", timeout=30)
        assert (await panel.request("info", name="end_meeting"))["shown"] is False
        await panel.request("tap", name=this)
        await until(demo_room, lambda: pairing(demo_room).pending)
        again = pairing(demo_room).code
        assert again is not None
        await panel.request("wait", name="pair_code_for", contains="Type the code")
        await type_code(panel, again)
        await panel.request("wait_connected", timeout=15)
        await panel.request("wait", name="end_meeting", contains="End", timeout=10)
        assert kept_token(token_file) != token


def kept_token(token_file: Path) -> str:
    """The token in ``token_file``, which only its owner may read."""
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    return token_file.read_text().strip()


async def the_panel_keeps_its_own_token(room: DemoRoom, token_file: Path) -> None:
    token = kept_token(token_file)
    assert token
    assert token != room.token
    assert paired_api(str(token_file)) == room.url
    status, listed = await main_token_request(room, "GET", "panels")
    assert status == 200
    (panel,) = [p for p in listed["panels"] if p["name"] == "Test panel"]
    assert panel["connected"] is True
    assert room.daemon is not None
    kept = room.daemon.room.pairing.registry.find(token)
    assert kept is not None
    assert kept.id == panel["id"]


def meeting(room: DemoRoom) -> MeetingState:
    state = room.topic("meeting")
    assert isinstance(state, MeetingState)
    return state


async def assert_targets_large_enough(pilot: PilotProcess) -> None:
    reply = await pilot.request("targets", min=48)
    assert reply["buttons"] > 0
    assert reply["small"] == [], reply["small"]
