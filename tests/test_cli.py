"""The roomsystem command as a person runs it: demo, status, token, config check, signals."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

ROOMSYSTEM = [sys.executable, "-m", "roomsystem"]


async def roomsystem(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *ROOMSYSTEM, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


class Demo:
    def __init__(
        self, process: asyncio.subprocess.Process, state_dir: Path, started: float
    ) -> None:
        self.process = process
        self.state_dir = state_dir
        self.started = started
        self.output: list[str] = []

    async def line_with(self, text: str, timeout: float = 10) -> str:
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.process.stdout.readline()).decode()
                assert line, f"demo exited before printing {text!r}: {self.output}"
                self.output.append(line)
                if text in line:
                    return line

    @property
    def url(self) -> str:
        return str(json.loads((self.state_dir / "api.json").read_text())["url"])

    async def stop(self, signum: int) -> tuple[int, float]:
        began = time.monotonic()
        self.process.send_signal(signum)
        code = await asyncio.wait_for(self.process.wait(), 10)
        return code, time.monotonic() - began


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[Demo]:
    state_dir = tmp_path / "demo"
    process = await asyncio.create_subprocess_exec(
        *ROOMSYSTEM,
        "demo",
        "--http",
        "127.0.0.1:0",
        "--state-dir",
        str(state_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    running = Demo(process, state_dir, time.monotonic())
    try:
        yield running
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_demo_is_ready_within_5_s_and_status_shows_the_room(demo: Demo) -> None:
    await demo.line_with("is ready.", timeout=5)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{demo.url}/api/v1/health") as response:
            assert (await response.json())["phase"] == "ready"
    assert time.monotonic() - demo.started < 5
    code, out, err = await roomsystem("status", "--state-dir", str(demo.state_dir))
    assert code == 0, err
    assert out.startswith("Demo Room  (no location, UTC)")
    assert "  phase       ready for " in out
    assert f"  API         {demo.url}" in out


async def test_the_demo_says_how_to_pair_a_panel_of_its_own(demo: Demo) -> None:
    line = await demo.line_with("  pair    ")
    # The demo announces itself on loopback only: that is where a panel looks for it.
    assert "roomsystem-panel --pair --interface 127.0.0.1" in line


async def test_token_prints_the_token_the_api_accepts(demo: Demo) -> None:
    await demo.line_with("is ready.")
    code, out, _ = await roomsystem("token", "--state-dir", str(demo.state_dir))
    assert code == 0
    token = out.strip()
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.get(f"{demo.url}/api/v1/state") as response:
            assert response.status == 200
            assert {"room", "devices", "meeting", "sharing", "calendar"} <= set(
                await response.json()
            )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_stops_the_demo_cleanly_within_2_s(demo: Demo, signum: int) -> None:
    await demo.line_with("is ready.")
    assert (demo.state_dir / "api.json").exists()
    code, took = await demo.stop(signum)
    assert code == 0
    assert took < 2
    assert not (demo.state_dir / "api.json").exists()
    assert demo.process.stderr is not None
    log = (await demo.process.stderr.read()).decode()
    assert "Traceback" not in log
    assert "ERROR" not in log


async def test_a_second_daemon_on_the_same_state_dir_is_refused(demo: Demo) -> None:
    await demo.line_with("is ready.")
    code, _, err = await roomsystem(
        "demo", "--http", "127.0.0.1:0", "--state-dir", str(demo.state_dir)
    )
    assert code == 2
    assert err.strip() == (
        f"roomsystem: state directory {demo.state_dir} is in use by roomsystem (pid {demo.process.pid})"
    )
    assert (demo.state_dir / "api.json").exists()  # the running room's files are untouched


async def test_a_busy_port_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = await roomsystem(
            "demo", "--http", f"127.0.0.1:{port}", "--state-dir", str(tmp_path / "s")
        )
    assert code == 1
    assert err.splitlines()[-1].startswith(f"roomsystem: cannot listen on 127.0.0.1:{port}:")
    assert "Traceback" not in err


async def test_config_check_exits_2_with_file_line_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "roomsystem.toml"
    bad.write_text('[room]\nname = "Room 4"\n\n[meeting]\npasscode_length = 4\n')
    code, _, err = await roomsystem("config", "check", str(bad))
    assert code == 2
    assert err.strip() == f"roomsystem: {bad}:5: meeting.passcode_length: must be 6 to 10, got 4"
    bad.write_text("[meeting]\npasscode_length = 6\n")
    assert await roomsystem("config", "check", str(bad)) == (0, f"{bad}: ok\n", "")


async def test_run_with_an_invalid_config_starts_nothing(tmp_path: Path) -> None:
    config = tmp_path / "roomsystem.toml"
    state_dir = tmp_path / "state"
    config.write_text(f'state_dir = "{state_dir}"\n[api]\nlisten = "nowhere"\n')
    code, out, err = await roomsystem("run", "--config", str(config))
    assert code == 2
    assert "api.listen: must be HOST:PORT" in err
    assert out == ""
    assert not state_dir.exists()


async def test_run_reads_its_config_and_debug_adds_the_traceback(tmp_path: Path) -> None:
    code, _, err = await roomsystem("run", "--config", str(tmp_path / "missing.toml"))
    assert (code, err.strip()) == (
        2,
        f"roomsystem: {tmp_path / 'missing.toml'}: no such configuration file",
    )
    code, _, err = await roomsystem("--debug", "run", "--config", str(tmp_path / "missing.toml"))
    assert code == 2
    assert "Traceback" in err


async def test_status_says_when_no_room_runs(tmp_path: Path) -> None:
    code, _, err = await roomsystem("status", "--state-dir", str(tmp_path))
    assert code == 1
    assert err.strip() == f"roomsystem: no room is running with state directory {tmp_path}"
