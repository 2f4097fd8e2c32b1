"""The room's mDNS announcement, seen by python-zeroconf browsers, on loopback only."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from zeroconf import IPVersion, ServiceStateChange, Zeroconf, service_type_name
from zeroconf.asyncio import AsyncServiceBrowser, AsyncZeroconf

from roomsystem.sharing.advertise import (
    SERVICE_TYPE,
    TXT_API,
    Advertiser,
    Announcement,
    api_reachable,
    host_name,
    instance_name,
)
from roomsystem.sharing.discover import FoundRoom, browse, match_room
from tests.sharing.conftest import LOOPBACK, eventually


@contextlib.asynccontextmanager
async def advertising(advertiser: Advertiser, announced: bool = True) -> AsyncIterator[Advertiser]:
    task = asyncio.create_task(advertiser.run())
    try:
        if announced:
            await eventually(lambda: advertiser.name is not None, 10, "announced")
        yield advertiser
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await advertiser.close()


def loopback_advertiser(
    name: str = "Room 4.12", room_id: str = "1a2b3c4d-0000", port: int = 8443, **kw: object
) -> Advertiser:
    return Advertiser(
        Announcement(room_name=name, room_id=room_id, port=port),
        interfaces=[LOOPBACK],
        refresh_s=0.2,
        addresses=kw.pop("addresses", lambda: [LOOPBACK]),  # type: ignore[arg-type]
    )


class Watcher:
    """A python-zeroconf browser on loopback that records what it sees."""

    def __init__(self) -> None:
        self.present: set[str] = set()
        self.removed: set[str] = set()

    def __call__(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is ServiceStateChange.Removed:
            self.present.discard(name)
            self.removed.add(name)
        else:
            self.present.add(name)


@contextlib.asynccontextmanager
async def watching() -> AsyncIterator[Watcher]:
    watcher = Watcher()
    azc = AsyncZeroconf(interfaces=[LOOPBACK], ip_version=IPVersion.V4Only)
    browser = AsyncServiceBrowser(azc.zeroconf, [SERVICE_TYPE], handlers=[watcher])
    try:
        yield watcher
    finally:
        await browser.async_cancel()
        await azc.async_close()


@pytest.mark.timeout(30)
async def test_a_browser_finds_the_room_with_its_txt_records() -> None:
    async with advertising(loopback_advertiser()):
        rooms = await browse(LOOPBACK, wait_s=1.5)
    assert len(rooms) == 1
    room = rooms[0]
    assert room.name == "Room 4-12"
    assert room.addresses == (LOOPBACK,)
    assert (room.port, room.path, room.room_id, room.version) == (8443, "/share", room.room_id, "1")
    assert room.room_id == "1a2b3c4d-0000"
    assert room.key_required
    assert room.url == "https://127.0.0.1:8443/share"
    assert match_room(rooms, "room 4-12") == room


@pytest.mark.timeout(30)
async def test_a_second_room_of_the_same_name_is_renamed_not_shadowed() -> None:
    async with (
        advertising(loopback_advertiser(room_id="aaaa1111", port=8443)) as first,
        advertising(loopback_advertiser(room_id="bbbb2222", port=9443)) as second,
    ):
        assert first.name == "Room 4-12"
        renamed = second.name
        assert renamed is not None
        assert renamed != first.name
        rooms = await browse(LOOPBACK, wait_s=1.5)
    assert {(r.name, r.room_id, r.port) for r in rooms} == {
        ("Room 4-12", "aaaa1111", 8443),
        (renamed, "bbbb2222", 9443),
    }


@pytest.mark.timeout(30)
async def test_closing_sends_goodbye_packets() -> None:
    async with watching() as watcher:
        advertiser = loopback_advertiser()
        async with advertising(advertiser):
            full = f"Room 4-12.{SERVICE_TYPE}"
            await eventually(lambda: full in watcher.present, 10, "seen")
        # TTLs are minutes long: only a goodbye makes the room disappear this soon.
        await eventually(lambda: full in watcher.removed, 2, "goodbye")


@pytest.mark.timeout(30)
async def test_the_announcement_follows_interfaces_going_and_coming() -> None:
    up = {"now": False}
    advertiser = loopback_advertiser(addresses=lambda: [LOOPBACK] if up["now"] else [])
    full = f"Room 4-12.{SERVICE_TYPE}"
    async with watching() as watcher, advertising(advertiser, announced=False):
        await asyncio.sleep(0.5)
        assert advertiser.name is None
        up["now"] = True
        await eventually(lambda: full in watcher.present, 10, "announced when it came up")
        up["now"] = False
        await eventually(lambda: full in watcher.removed, 5, "withdrawn when it went")
        assert advertiser.name is None


@pytest.mark.timeout(30)
async def test_the_api_port_is_announced_for_panels_when_set() -> None:
    # Its own id: other rooms may be announced on this machine's loopback meanwhile.
    room_id = f"api-{uuid.uuid4().hex[:12]}"
    advertiser = loopback_advertiser(name="Api Room", room_id=room_id, port=8443)

    async def seen() -> FoundRoom:
        (room,) = [r for r in await browse(LOOPBACK, wait_s=1.0) if r.room_id == room_id]
        return room

    async with advertising(advertiser):
        room = await seen()
        assert (room.api_port, room.api_urls) == (0, ())
        await advertiser.update(api_port=8080)
        room = await seen()
        assert room.api_port == 8080
        assert room.api_urls == ("http://127.0.0.1:8080",)
        await advertiser.update(api_port=0)
        room = await seen()
    assert room.api_port == 0
    assert room.port == 8443


def test_the_txt_record_names_the_api_port_only_when_there_is_one() -> None:
    announcement = Announcement(room_name="Room", room_id="r1", port=8443)
    assert TXT_API not in announcement.txt()
    assert Announcement("Room", "r1", 8443, api_port=8080).txt()[TXT_API] == "8080"


@pytest.mark.parametrize(
    ("api_host", "interfaces", "reachable"),
    [
        ("0.0.0.0", (), True),
        ("::", (), True),
        ("0.0.0.0", (LOOPBACK,), True),
        ("127.0.0.1", (), False),  # announced on the network, listening on loopback
        ("127.0.0.1", ("192.0.2.5",), False),
        ("127.0.0.1", (LOOPBACK,), True),  # the room and its panel on one machine (tests)
        ("127.0.0.1", (LOOPBACK, "192.0.2.5"), False),
        ("::1", ("::1",), True),
        ("localhost", (LOOPBACK,), True),
        ("localhost", (), False),
        ("192.0.2.5", (), True),
        ("192.0.2.5", ("192.0.2.5",), True),
        ("192.0.2.5", ("198.51.100.7",), False),
        ("[2001:db8::5]", ("2001:db8:0::5",), True),
        ("room.example.org", (), True),
    ],
)
def test_the_api_is_offered_to_panels_only_where_they_reach_it(
    api_host: str, interfaces: tuple[str, ...], reachable: bool
) -> None:
    assert api_reachable(api_host, interfaces) is reachable


@pytest.mark.timeout(30)
async def test_a_new_port_is_announced() -> None:
    advertiser = loopback_advertiser(port=8443)
    async with advertising(advertiser):
        await advertiser.update(port=9555)
        rooms = await browse(LOOPBACK, wait_s=1.0)
    assert [(r.name, r.port) for r in rooms] == [("Room 4-12", 9555)]


@given(st.text(min_size=1, max_size=64).filter(str.isprintable))
def test_any_room_name_makes_a_valid_instance_name(room: str) -> None:
    name = instance_name(room)
    assert "." not in name
    assert 0 < len(name.encode()) <= 56
    assert service_type_name(f"{name}.{SERVICE_TYPE}") == SERVICE_TYPE
    assert host_name(room, "0a1b2c3d-x").endswith("-0a1b2c3d.local.")


async def test_a_room_set_to_loopback_is_announced_with_the_machines_own_addresses() -> None:
    # The default address source leaves loopback out (not worth announcing on a network);
    # a room told to use loopback only must still be announced there.
    advertiser = Advertiser(
        Announcement(room_name="Loopback Room", room_id="1a2b3c4d-0001", port=8443),
        interfaces=[LOOPBACK],
        refresh_s=0.2,
    )
    async with advertising(advertiser):
        assert advertiser.name == "Loopback Room"
