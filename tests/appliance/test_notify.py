"""The daemon speaks systemd's notification protocol: READY, STATUS and the watchdog."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from roomsystem.appliance.journal import use_journal_levels, writes_to_journal
from roomsystem.appliance.notify import status_line, watchdog_interval
from roomsystem.config import Settings
from roomsystem.daemon import Daemon
from roomsystem.errors import ErrorKind
from roomsystem.lifecycle import LifecycleState, Phase, ServiceState, ServiceStatus
from tests.appliance.conftest import NotifyReceiver

WATCHDOG_USEC = 200_000  # pings every 0.1 s


def test_the_watchdog_interval_is_half_the_period_and_only_for_this_process() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "4000000"}) == 2.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}) is None
    mine = {"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval(mine) == 2.0
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


def test_the_status_line_names_the_phase_and_what_is_wrong() -> None:
    failed = ServiceStatus(
        name="devices",
        state=ServiceState.FAILED,
        error="no answer",
        error_kind=ErrorKind.DEVICE,
    )
    assert status_line(LifecycleState(phase=Phase.DISCOVER)) == "discover"
    assert status_line(LifecycleState(phase=Phase.READY)) == "ready"
    assert (
        status_line(LifecycleState(phase=Phase.READY, services=(failed,)))
        == "ready, degraded: devices: device error: no answer"
    )


async def test_ready_then_watchdog_pings_that_stop_while_the_loop_is_blocked(
    settings: Settings, notify_receiver: NotifyReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify_receiver.address)
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    daemon = Daemon(settings, lambda settings, bus: [])
    await daemon.start()
    try:
        await asyncio.wait_for(daemon.room.ready.wait(), 5)
        await asyncio.sleep(0.05)
        ready_at = notify_receiver.wait_for("READY=1", timeout=2)
        assert ("STATUS=ready") in [line for _, line in notify_receiver.lines("STATUS=")]

        await asyncio.sleep(1.0)
        pings = [t for t, _ in notify_receiver.lines("WATCHDOG=1") if t > ready_at]
        assert 6 <= len(pings) <= 13, pings  # 10 expected in 1 s; a busy machine is late

        blocked_from = time.monotonic()
        time.sleep(0.8)  # noqa: ASYNC251 - the loop is blocked on purpose: no ping may go out
        blocked_until = time.monotonic()
        await asyncio.sleep(0.5)
        pings = [t for t, _ in notify_receiver.lines("WATCHDOG=1")]
        during = [t for t in pings if blocked_from + 0.02 < t < blocked_until]
        after = [t for t in pings if t >= blocked_until]
        assert during == []
        assert len(after) >= 3  # and they come back with the loop
    finally:
        await daemon.stop()
    notify_receiver.wait_for("STOPPING=1", timeout=2)


async def test_the_cli_daemon_notifies_systemd_through_an_abstract_socket(
    tmp_path: Path, abstract_notify_receiver: NotifyReceiver
) -> None:
    notify_receiver = abstract_notify_receiver
    config = tmp_path / "roomsystem.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        '[api]\nlisten = "127.0.0.1:0"\n'
        '[web]\nlisten = "127.0.0.1:0"\n'
        "[sharing]\nenabled = false\n"
        "[devices]\ndiscover_usb = false\ndiscover_cec = false\n"
    )
    env = {
        **os.environ,
        "NOTIFY_SOCKET": notify_receiver.address,
        "WATCHDOG_USEC": "400000",
    }
    env.pop("WATCHDOG_PID", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "roomsystem",
        "run",
        "--config",
        str(config),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        ready_at = await notify_receiver.arrival("READY=1", 30)
        await asyncio.sleep(1.0)
        pings = [t for t, _ in notify_receiver.lines("WATCHDOG=1") if t > ready_at]
        assert 3 <= len(pings) <= 7, pings  # every 0.2 s
        statuses = [line for _, line in notify_receiver.lines("STATUS=")]
        # Each phase on its way, in order, then ready.
        assert statuses[-1] == "STATUS=ready"
        assert statuses.index("STATUS=discover") < statuses.index("STATUS=connect")
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
        notify_receiver.wait_for("STOPPING=1", timeout=2)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_log_lines_carry_their_journal_priority_when_stderr_is_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream_file = tmp_path / "journal-stream"
    with stream_file.open("w") as stream:
        status = os.fstat(stream.fileno())
        assert not writes_to_journal(stream, {})
        monkeypatch.setenv("JOURNAL_STREAM", f"{status.st_dev}:{status.st_ino}")
        assert writes_to_journal(stream, os.environ)
        handler = logging.StreamHandler(stream)
        logger = logging.getLogger("roomsystem.test-journal")
        logger.addHandler(handler)
        try:
            assert use_journal_levels(stream, [handler])
            logger.warning("camera %s offline", "front")
            logger.error("two\nlines")
        finally:
            logger.removeHandler(handler)
    assert stream_file.read_text().splitlines() == [
        "<4>roomsystem.test-journal: camera front offline",
        "<3>roomsystem.test-journal: two",
        "  lines",
    ]
