"""Finding rooms on the local network: the sender's side of the mDNS announcement."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from zeroconf import InterfaceChoice, IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from roomsystem.sharing.advertise import (
    KEY_NONE,
    SERVICE_TYPE,
    TXT_API,
    TXT_KEY,
    TXT_PATH,
    TXT_PORT,
    TXT_ROOM_ID,
    TXT_VERSION,
)

RESOLVE_TIMEOUT_MS = 1500


@dataclass(frozen=True, slots=True)
class FoundRoom:
    """A room as its announcement describes it."""

    name: str
    addresses: tuple[str, ...]
    port: int
    path: str
    room_id: str
    version: str
    key_required: bool
    # The room's API port when panels on the network can reach it (TXT ``api``), else 0.
    api_port: int = 0

    @property
    def url(self) -> str:
        """The share endpoint's base URL on the room's first address."""
        address = self.addresses[0] if self.addresses else "0.0.0.0"
        host = f"[{address}]" if ":" in address else address
        return f"https://{host}:{self.port}{self.path}"

    @property
    def api_urls(self) -> tuple[str, ...]:
        """The API's base URL on each of the room's addresses; none if it is not offered."""
        if not self.api_port:
            return ()
        hosts = (f"[{a}]" if ":" in a else a for a in self.addresses)
        return tuple(f"http://{host}:{self.api_port}" for host in hosts)

    def describe(self) -> str:
        key = "key required" if self.key_required else "no key"
        return f"{self.name}\t{self.url}\t{key}"


def _text(properties: dict[bytes, bytes | None], key: str) -> str:
    value = properties.get(key.encode())
    return value.decode(errors="replace") if value else ""


def _port(text: str) -> int:
    return int(text) if text.isdigit() and 0 < int(text) < 65536 else 0


def room_from_info(info: AsyncServiceInfo) -> FoundRoom:
    properties = info.properties
    port = _port(_text(properties, TXT_PORT)) or (info.port or 0)
    return FoundRoom(
        name=info.name.removesuffix("." + SERVICE_TYPE),
        addresses=tuple(info.parsed_scoped_addresses()),
        port=port,
        path=_text(properties, TXT_PATH) or "/share",
        room_id=_text(properties, TXT_ROOM_ID),
        version=_text(properties, TXT_VERSION),
        key_required=_text(properties, TXT_KEY) != KEY_NONE,
        api_port=_port(_text(properties, TXT_API)),
    )


def _zeroconf_for(interface: str | None) -> AsyncZeroconf:
    if interface is None:
        return AsyncZeroconf(interfaces=InterfaceChoice.All)
    version = ipaddress.ip_address(interface).version
    return AsyncZeroconf(
        interfaces=[interface],
        ip_version=IPVersion.V4Only if version == 4 else IPVersion.V6Only,
    )


async def browse(interface: str | None = None, wait_s: float = 2.0) -> list[FoundRoom]:
    """Every room that answers within ``wait_s`` seconds, sorted by name.

    ``interface``: the address of the one interface to ask on; None asks on every one.
    """
    names: set[str] = set()

    def seen(
        zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is ServiceStateChange.Removed:
            names.discard(name)
        else:
            names.add(name)

    azc = _zeroconf_for(interface)
    try:
        browser = AsyncServiceBrowser(azc.zeroconf, [SERVICE_TYPE], handlers=[seen])
        try:
            await asyncio.sleep(wait_s)
        finally:
            await browser.async_cancel()
        return await _resolve(azc, sorted(names))
    finally:
        await azc.async_close()


async def _resolve(azc: AsyncZeroconf, names: Sequence[str]) -> list[FoundRoom]:
    infos = [AsyncServiceInfo(SERVICE_TYPE, name) for name in names]
    resolved = await asyncio.gather(
        *(info.async_request(azc.zeroconf, RESOLVE_TIMEOUT_MS) for info in infos)
    )
    rooms = [room_from_info(info) for info, ok in zip(infos, resolved, strict=True) if ok]
    return sorted(rooms, key=lambda room: room.name.casefold())


def match_room(rooms: Sequence[FoundRoom], wanted: str) -> FoundRoom | None:
    """The room called ``wanted`` (case-insensitive; its id or a unique prefix also match)."""
    folded = wanted.casefold()
    for room in rooms:
        if folded in (room.name.casefold(), room.room_id.casefold()):
            return room
    prefixed = [room for room in rooms if room.name.casefold().startswith(folded)]
    return prefixed[0] if len(prefixed) == 1 else None
