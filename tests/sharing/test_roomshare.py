"""`roomshare share` as a separate process, to a room on loopback: frames reach the display."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator

import pytest

from roomsystem.commands import NoArguments
from tests.sharing.conftest import ShareRoom, eventually

TEST_SIZE = "320x240"


@contextlib.asynccontextmanager
async def roomshare(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "roomsystem.sharing.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await process.communicate()


async def finished(process: asyncio.subprocess.Process, timeout: float = 20) -> tuple[int, str]:
    async with asyncio.timeout(timeout):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode() + err.decode()


def share_args(room: ShareRoom, key: str, *extra: str) -> list[str]:
    return [
        "share",
        room.url,
        "--key",
        key,
        "--source",
        "test",
        "--size",
        TEST_SIZE,
        "--interface",
        "127.0.0.1",
        "--name",
        "Ada's laptop",
        "--cafile",
        str(room.cafile),
        *extra,
    ]


@pytest.mark.timeout(60)
async def test_roomshare_shares_the_test_source_until_the_panel_stops_it(
    share_room: ShareRoom,
) -> None:
    key = share_room.state.key
    async with roomshare(*share_args(share_room, key)) as process:
        await eventually(lambda: share_room.display.frames >= 10, 30, "frames on the display")
        state = share_room.state
        assert state.active
        assert state.sharer == "Ada's laptop"
        frame = share_room.display.last_frame
        assert frame is not None
        assert (frame.width, frame.height) == (320, 240)
        stopped = await share_room.service.commands()[0].handler(NoArguments())
        assert stopped.model_dump() == {"stopped": True, "sharer": "Ada's laptop"}
        code, output = await finished(process)
    assert code == 0, output
    assert "the room ended the share" in output
    assert not share_room.state.active
    assert share_room.state.key != key, "the key rotates after a share"


@pytest.mark.timeout(60)
async def test_ctrl_c_ends_the_share_and_the_display_goes_home(share_room: ShareRoom) -> None:
    async with roomshare(*share_args(share_room, share_room.state.key)) as process:
        await eventually(lambda: share_room.display.frames >= 3, 30, "frames on the display")
        process.send_signal(signal.SIGINT)
        code, output = await finished(process)
        assert code == 0, output
        await eventually(lambda: not share_room.state.active, 3, "share ended")
    assert share_room.display.session_id is None


@pytest.mark.timeout(60)
async def test_a_sender_that_vanishes_frees_the_display_within_2_s(share_room: ShareRoom) -> None:
    async with roomshare(*share_args(share_room, share_room.state.key)) as process:
        await eventually(lambda: share_room.display.frames >= 3, 30, "frames on the display")
        process.kill()  # no goodbye of any kind: the room notices the pictures stop
        await process.wait()
        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        await eventually(lambda: not share_room.state.active, 3, "share ended")
        assert loop.time() - killed_at <= 2.0
    assert share_room.display.session_id is None


@pytest.mark.timeout(60)
async def test_wrong_key_is_refused_and_nothing_reaches_the_display(share_room: ShareRoom) -> None:
    wrong = "AAAAAA" if share_room.state.key != "AAAAAA" else "BBBBBB"
    async with roomshare(*share_args(share_room, wrong)) as process:
        code, output = await finished(process)
    assert code == 4, output
    assert "wrong key" in output
    assert share_room.display.frames == 0
    assert share_room.display.session_id is None
    assert not share_room.state.active


@pytest.mark.timeout(60)
async def test_a_locked_out_laptop_is_told_so(share_room: ShareRoom) -> None:
    for _ in range(share_room.service.settings.free_attempts + 1):
        await share_room.service.begin_share("guesser", "127.0.0.1", "WRONG1")
    async with roomshare(*share_args(share_room, share_room.state.key)) as process:
        code, output = await finished(process)
    assert code == 5, output
    assert "locked out" in output
    assert share_room.display.frames == 0


@pytest.mark.timeout(30)
async def test_an_unknown_room_is_named_in_the_message() -> None:
    async with roomshare(
        "share", "No Such Room", "--key", "ABCDEF", "--source", "test",
        "--interface", "127.0.0.1", "--wait", "0.5",
    ) as process:  # fmt: skip
        code, output = await finished(process)
    assert code == 3, output
    assert "room not found: 'No Such Room'" in output


@pytest.mark.timeout(30)
async def test_a_missing_capture_device_is_named_in_the_message(share_room: ShareRoom) -> None:
    args = share_args(share_room, share_room.state.key)
    args[args.index("test")] = "screen"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "roomsystem.sharing.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "DISPLAY": ":97"},
    )
    code, output = await finished(process)
    assert code == 7, output
    assert "capture device missing" in output
    assert share_room.display.frames == 0


@pytest.mark.timeout(60)
async def test_roomshare_list_prints_one_room_per_line(share_room: ShareRoom) -> None:
    await eventually(lambda: share_room.state.advertising, 10, "announced")
    async with roomshare("list", "--interface", "127.0.0.1", "--wait", "1.5") as process:
        code, output = await finished(process)
    assert code == 0, output
    lines = [line for line in output.splitlines() if line.startswith("Demo Room")]
    assert lines == [f"Demo Room\t{share_room.url}\tkey required"]


@pytest.mark.timeout(60)
async def test_roomshare_finds_the_room_by_its_name(share_room: ShareRoom) -> None:
    await eventually(lambda: share_room.state.advertising, 10, "announced")
    args = share_args(share_room, share_room.state.key)
    args[args.index(share_room.url)] = "demo room"
    async with roomshare(*args):
        await eventually(lambda: share_room.display.frames >= 3, 30, "frames on the display")
        assert share_room.state.sharer == "Ada's laptop"
