"""Interoperability with avahi, the reference mDNS implementation, in a network namespace.

avahi ignores loopback, so each test makes its own namespace joined to this one by a veth
pair, runs a private D-Bus and avahi-daemon inside it, and announces the room on the veth
address only: no packet reaches the machine's real network.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import random
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from roomsystem.sharing.advertise import Advertiser, Announcement
from roomsystem.sharing.discover import browse
from tests.sharing.conftest import eventually

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/><allow own="*"/><allow send_destination="*"/><allow receive_sender="*"/>
  </policy>
</busconfig>
"""
AVAHI_CONFIG = """[server]
host-name=avahi-peer
use-ipv4=yes
use-ipv6=no
allow-interfaces={interface}
enable-dbus=yes
[wide-area]
enable-wide-area=no
[publish]
publish-hinfo=no
publish-workstation=no
"""


@dataclass
class AvahiPeer:
    """avahi in its own namespace; ``host_address`` is this side of the veth pair."""

    namespace: str
    bus: Path
    host_address: str

    def command(self, *args: str) -> list[str]:
        bus = f"DBUS_SYSTEM_BUS_ADDRESS=unix:path={self.bus}"
        return ["ip", "netns", "exec", self.namespace, "env", bus, *args]

    async def browse(self, service_type: str = "_roomshare._tcp") -> list[list[str]]:
        """avahi-browse's resolved entries (``=`` lines of its parsable output), split."""
        process = await asyncio.create_subprocess_exec(
            *self.command("avahi-browse", "-t", "-r", "-p", service_type),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        async with asyncio.timeout(15):
            out, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        return [line.split(";") for line in out.decode().splitlines() if line.startswith("=")]


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=10)


def _free_subnet() -> ipaddress.IPv4Network:
    used = subprocess.run(
        ["ip", "-4", "-o", "addr"], check=True, capture_output=True, text=True, timeout=10
    ).stdout
    for _ in range(50):
        subnet = ipaddress.IPv4Network(f"10.213.{random.randint(1, 254)}.0/24")
        if str(subnet.network_address)[:-1] not in used:
            return subnet
    raise RuntimeError("no free 10.213.x.0/24 subnet for the test namespace")


@contextlib.contextmanager
def _namespace(tag: str) -> Iterator[tuple[str, str, str, str]]:
    namespace, host_if, peer_if = f"rs{tag}", f"rsh{tag}", f"rsp{tag}"
    subnet = _free_subnet()
    host_address, peer_address = (str(subnet.network_address + n) for n in (1, 2))
    _run("ip", "netns", "add", namespace)
    try:
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", peer_if)
        _run("ip", "link", "set", peer_if, "netns", namespace)
        _run("ip", "addr", "add", f"{host_address}/24", "dev", host_if)
        _run("ip", "link", "set", host_if, "up")
        inside = ("ip", "netns", "exec", namespace)
        _run(*inside, "ip", "addr", "add", f"{peer_address}/24", "dev", peer_if)
        _run(*inside, "ip", "link", "set", peer_if, "up")
        _run(*inside, "ip", "link", "set", "lo", "up")
        yield namespace, host_if, peer_if, host_address
    finally:
        # Deleting the namespace deletes the veth pair with it.
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=10)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def _wait_for(path: Path, text: str, process: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"avahi did not start: {path.read_text(errors='replace')}")


@pytest.fixture
def avahi(tmp_path: Path) -> Iterator[AvahiPeer]:
    tag = f"{os.getpid() % 100000}{random.randint(0, 99)}"
    with _namespace(tag) as (namespace, _host_if, peer_if, host_address):
        bus = tmp_path / "bus"
        (tmp_path / "bus.conf").write_text(BUS_CONFIG.format(socket=bus))
        (tmp_path / "avahi.conf").write_text(AVAHI_CONFIG.format(interface=peer_if))
        inside = ["ip", "netns", "exec", namespace]
        dbus = subprocess.Popen(
            [*inside, "dbus-daemon", f"--config-file={tmp_path / 'bus.conf'}", "--nofork"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            log = tmp_path / "avahi.log"
            # A private /run/avahi-daemon: avahi keeps its pid file there, one per machine.
            script = (
                "mkdir -p /run/avahi-daemon && mount -t tmpfs tmpfs /run/avahi-daemon &&"
                f" DBUS_SYSTEM_BUS_ADDRESS=unix:path={bus} exec avahi-daemon"
                f" -f {tmp_path / 'avahi.conf'} --no-drop-root --no-chroot --no-rlimits"
            )
            with log.open("wb") as log_file:
                daemon = subprocess.Popen(
                    [*inside, "unshare", "--mount", "sh", "-c", script],
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                )
            try:
                _wait_for(log, "Server startup complete", daemon)
                yield AvahiPeer(namespace, bus, host_address)
            finally:
                _stop(daemon)
        finally:
            _stop(dbus)


@contextlib.asynccontextmanager
async def announced(peer: AvahiPeer, room_id: str = "0a1b2c3d-9") -> AsyncIterator[Advertiser]:
    advertiser = Advertiser(
        Announcement(room_name="Room 4.12", room_id=room_id, port=8443),
        interfaces=[peer.host_address],
        addresses=lambda: [peer.host_address],
    )
    task = asyncio.create_task(advertiser.run())
    try:
        await eventually(lambda: advertiser.name is not None, 10, "announced")
        yield advertiser
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await advertiser.close()


def txt_of(entry: list[str]) -> set[str]:
    return {part.strip('"') for part in entry[9].split('" "')}


@pytest.mark.timeout(60)
async def test_avahi_browse_sees_the_room_with_its_txt_records(avahi: AvahiPeer) -> None:
    async with announced(avahi):
        entries = await avahi.browse()
    # avahi escapes the space in the parsable output as \032.
    ours = [entry for entry in entries if entry[3] == r"Room\0324-12"]
    assert len(ours) == 1, entries
    entry = ours[0]
    assert entry[4] == "_roomshare._tcp"
    assert (entry[7], entry[8]) == (avahi.host_address, "8443")
    assert txt_of(entry) == {
        "v=1",
        "https_port=8443",
        "path=/share",
        "room_id=0a1b2c3d-9",
        "key=required",
    }


@pytest.mark.timeout(60)
async def test_a_room_of_the_same_name_published_by_avahi_makes_ours_rename(
    avahi: AvahiPeer,
) -> None:
    publisher = await asyncio.create_subprocess_exec(
        *avahi.command(
            "avahi-publish", "-s", "Room 4-12", "_roomshare._tcp", "9443", "v=1", "room_id=other"
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        # python-zeroconf on our side sees avahi's room: the other direction of interop.
        found: list[str] = []
        for _ in range(10):
            found = [room.room_id for room in await browse(avahi.host_address, wait_s=1.0)]
            if "other" in found:
                break
        assert "other" in found
        async with announced(avahi) as advertiser:
            renamed = advertiser.name
            assert renamed is not None
            assert renamed != "Room 4-12"
            entries = await avahi.browse()
        ports = {entry[3].replace(r"\032", " "): entry[8] for entry in entries}
        ours = {"Room 4-12", renamed}
        assert {name: port for name, port in ports.items() if name in ours} == {
            "Room 4-12": "9443",
            renamed: "8443",
        }
    finally:
        publisher.terminate()
        await publisher.wait()
