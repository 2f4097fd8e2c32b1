"""`roomsystem simulate ...`: each simulator runs alone, says where it is on its first line,
answers our driver for its protocol there, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from roomsystem.drivers.lg import LgDisplay
from roomsystem.drivers.link import StreamLink
from roomsystem.drivers.mdc import MdcDisplay
from roomsystem.drivers.nec import NecDisplay
from roomsystem.drivers.pjlink import PjlinkDisplay
from roomsystem.drivers.visca import ViscaCamera, ViscaIpCamera


def host_port(where: str) -> tuple[str, int]:
    host, port = where.rsplit(":", 1)
    return host, int(port)


async def visca_serial(where: str) -> Any:
    camera = await ViscaCamera.open_serial(where)
    try:
        return await camera.status()
    finally:
        await camera.close()


async def visca_ip(where: str) -> Any:
    camera = await ViscaIpCamera.connect(*host_port(where))
    try:
        return await camera.status()
    finally:
        await camera.close()


async def mdc(where: str) -> Any:
    display = MdcDisplay(await StreamLink.open_tcp(*host_port(where)), display_id=3)
    try:
        return await display.status()
    finally:
        await display.close()


async def pjlink(where: str) -> Any:
    display = PjlinkDisplay.tcp(*host_port(where), password="secret")
    try:
        return await display.status()
    finally:
        await display.close()


async def nec(where: str) -> Any:
    display = NecDisplay(await StreamLink.open_tcp(*host_port(where)))
    try:
        return await display.status()
    finally:
        await display.close()


async def lg(where: str) -> Any:
    display = LgDisplay(await StreamLink.open_serial(where, 9600))
    try:
        return await display.status()
    finally:
        await display.close()


CASES: list[tuple[list[str], Callable[[str], Awaitable[Any]]]] = [
    (["visca", "--pty"], visca_serial),
    (["visca-ip", "--udp", "127.0.0.1:0"], visca_ip),
    (["mdc", "--tcp", "127.0.0.1:0", "--id", "3"], mdc),
    (["pjlink", "--tcp", "127.0.0.1:0", "--password", "secret"], pjlink),
    (["nec", "--tcp", "127.0.0.1:0"], nec),
    (["lg", "--pty"], lg),
]


@pytest.mark.parametrize(("arguments", "drive"), CASES, ids=[c[0][0] for c in CASES])
async def test_a_simulator_runs_alone_until_sigterm(
    arguments: list[str], drive: Callable[[str], Awaitable[Any]]
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "roomsystem",
        "simulate",
        *arguments,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        where = (await asyncio.wait_for(process.stdout.readline(), 10)).decode().strip()
        assert where.startswith("/dev/pts/") or host_port(where)[1] > 0
        status = await asyncio.wait_for(drive(where), 10)
        assert status is not None
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 5)
        assert process.returncode == 0, stderr.decode()
        assert b"Traceback" not in stderr
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
