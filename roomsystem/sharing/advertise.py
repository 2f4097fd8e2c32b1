"""Announcing the room on the local network over mDNS / DNS-SD, so laptops can find it.

The room is a ``_roomshare._tcp.local.`` service named after the room. Its TXT record says
which protocol version it speaks, the HTTPS port and path of the share endpoint, the room id
and whether a key is needed; and, when a touch panel on the network can reach the room's API,
that API's port (``api``), for panels that pair with the room. A name another room already
uses is changed ("Demo Room-2") while probing, never silently shadowed. The advertiser
follows the network: it re-checks the interface addresses every ``refresh_s`` seconds and
re-announces on the interfaces it has now (an interface that went away is left with goodbye
packets, one that came up is announced on).
Closing sends goodbye packets, so browsers forget the room at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

import ifaddr
from zeroconf import InterfaceChoice, IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

logger = logging.getLogger(__name__)

SERVICE_TYPE = "_roomshare._tcp.local."
PROTOCOL_VERSION = "1"
# TXT keys; short, as DNS-SD asks, and documented in docs/sharing.md.
TXT_VERSION = "v"
TXT_PORT = "https_port"
TXT_PATH = "path"
TXT_ROOM_ID = "room_id"
TXT_KEY = "key"
TXT_API = "api"
KEY_REQUIRED = "required"
KEY_NONE = "none"
# A DNS label is at most 63 bytes; keep room for the "-N" a rename appends.
_MAX_INSTANCE_BYTES = 56

AddressSource = Callable[[], list[str]]


def instance_name(room_name: str) -> str:
    """The DNS-SD instance name for a room: no dots (avahi refuses them unescaped)."""
    cleaned = " ".join(room_name.replace(".", "-").split()) or "Room"
    encoded = cleaned.encode()[:_MAX_INSTANCE_BYTES]
    return encoded.decode(errors="ignore").rstrip() or "Room"


def host_name(room_name: str, room_id: str) -> str:
    """A host name for the SRV record, unique per room: ``demo-room-1a2b3c4d.local.``."""
    slug = re.sub(r"[^a-z0-9]+", "-", room_name.lower()).strip("-")[:40] or "room"
    suffix = re.sub(r"[^a-z0-9]", "", room_id.lower())[:8] or "0"
    return f"{slug}-{suffix}.local."


def machine_addresses() -> list[str]:
    """Every address this machine's interfaces have now, loopback included."""
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            text = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            found.append(str(ipaddress.ip_address(text)))
    return sorted(set(found))


def worth_announcing(address: str) -> bool:
    """On every interface, the room is announced on its network addresses: no loopback,
    no IPv6 link-local (a room set to loopback is announced there all the same)."""
    ip = ipaddress.ip_address(address)
    return not (ip.is_loopback or ip.is_link_local)


def api_reachable(api_host: str, interfaces: Sequence[str]) -> bool:
    """Whether a panel that finds the room on ``interfaces`` (empty: every one) can reach
    an API that listens on ``api_host``.

    Loopback only counts when the room is announced on loopback alone (tests, a demo): a
    panel elsewhere would reach itself, not the room.
    """
    host = api_host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        return True
    if host.lower() == "localhost":
        host = "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return True  # a name: the network's resolver knows where it is
    if ip.is_loopback:
        return bool(interfaces) and all(ipaddress.ip_address(a).is_loopback for a in interfaces)
    return not interfaces or str(ip) in {str(ipaddress.ip_address(a)) for a in interfaces}


@dataclass(frozen=True, slots=True)
class Announcement:
    """What the room announces; ``api_port`` 0: panels cannot reach the API, say nothing."""

    room_name: str
    room_id: str
    port: int
    path: str = "/share"
    key_required: bool = True
    api_port: int = 0

    def txt(self) -> dict[str, str]:
        txt = {
            TXT_VERSION: PROTOCOL_VERSION,
            TXT_PORT: str(self.port),
            TXT_PATH: self.path,
            TXT_ROOM_ID: self.room_id,
            TXT_KEY: KEY_REQUIRED if self.key_required else KEY_NONE,
        }
        if self.api_port:
            txt[TXT_API] = str(self.api_port)
        return txt


def _ip_version(addresses: Sequence[str]) -> IPVersion:
    versions = {ipaddress.ip_address(a).version for a in addresses}
    if versions == {4}:
        return IPVersion.V4Only
    if versions == {6}:
        return IPVersion.V6Only
    return IPVersion.All


class Advertiser:
    """Keeps the room announced over mDNS while `run` runs; `close` says goodbye.

    ``interfaces``: the addresses of the interfaces to announce on; empty means every
    interface the machine has (then ``addresses`` says what they are now).
    """

    def __init__(
        self,
        announcement: Announcement,
        interfaces: Sequence[str] = (),
        refresh_s: float = 5.0,
        addresses: AddressSource = machine_addresses,
        on_change: Callable[[str | None], None] = lambda name: None,
    ) -> None:
        self.announcement = announcement
        self.interfaces = tuple(interfaces)
        self.refresh_s = refresh_s
        self._addresses = addresses
        self._on_change = on_change
        self._zeroconf: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None
        self._announced_on: list[str] = []
        self._broadcast: Awaitable[object] | None = None
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str | None:
        """The instance name announced now (after any rename), None when not announced."""
        if self._info is None:
            return None
        return self._info.name.removesuffix("." + SERVICE_TYPE)

    def _wanted_addresses(self) -> list[str]:
        present = self._addresses()
        if not self.interfaces:
            return [a for a in present if worth_announcing(a)]
        # A configured interface that is down now is announced again when it comes back.
        return [a for a in self.interfaces if a in present]

    async def run(self) -> None:
        """Announce, then follow address changes until cancelled."""
        while True:
            wanted = self._wanted_addresses()
            if wanted != self._announced_on:
                async with self._lock:
                    try:
                        await self._reannounce(wanted)
                    except OSError as exc:
                        # An interface can vanish between the check and the bind: next round.
                        logger.warning("cannot announce on %s: %s", ", ".join(wanted), exc)
                        self._announced_on = []
                        self._on_change(None)
            await asyncio.sleep(self.refresh_s)

    async def update(
        self,
        *,
        port: int | None = None,
        key_required: bool | None = None,
        api_port: int | None = None,
    ) -> None:
        """Change the announced port, key requirement or API port and tell the network."""
        async with self._lock:
            before = self.announcement
            self.announcement = replace(
                before,
                port=before.port if port is None else port,
                key_required=before.key_required if key_required is None else key_required,
                api_port=before.api_port if api_port is None else api_port,
            )
            if self._zeroconf is None or self._info is None:
                return
            # Announcements of the old records still under way would overwrite the new
            # ones in browsers' caches: let them finish first.
            if self._broadcast is not None:
                await self._broadcast
            info = self._service_info(self._announced_on, self._info.name)
            self._broadcast = await self._zeroconf.async_update_service(info)
            self._info = info

    async def _reannounce(self, addresses: list[str]) -> None:
        await self._withdraw()
        if addresses:
            logger.info("announcing %s on %s", self.announcement.room_name, ", ".join(addresses))
            await self._announce(addresses)
        else:
            logger.warning("no network interface to announce the room on")
        self._announced_on = addresses
        self._on_change(self.name)

    async def _announce(self, addresses: list[str]) -> None:
        choice: InterfaceChoice | list[str] = (
            list(addresses) if self.interfaces else InterfaceChoice.All
        )
        zeroconf = AsyncZeroconf(interfaces=choice, ip_version=_ip_version(addresses))
        info = self._service_info(addresses)
        try:
            broadcast = await zeroconf.async_register_service(info, allow_name_change=True)
        except BaseException:
            await zeroconf.async_close()
            raise
        self._zeroconf, self._info, self._broadcast = zeroconf, info, broadcast
        if self.name != instance_name(self.announcement.room_name):
            logger.warning(
                "another room on the network is called %r: announced as %r",
                self.announcement.room_name,
                self.name,
            )

    def _service_info(self, addresses: list[str], name: str | None = None) -> AsyncServiceInfo:
        announcement = self.announcement
        return AsyncServiceInfo(
            SERVICE_TYPE,
            name or f"{instance_name(announcement.room_name)}.{SERVICE_TYPE}",
            port=announcement.port,
            properties=announcement.txt(),
            server=host_name(announcement.room_name, announcement.room_id),
            parsed_addresses=addresses,
        )

    async def _withdraw(self) -> None:
        zeroconf, self._zeroconf, self._info = self._zeroconf, None, None
        self._broadcast = None
        if zeroconf is None:
            return
        # Goodbye packets (TTL 0) first, so browsers drop the room now, not at TTL expiry.
        with contextlib.suppress(OSError):
            await zeroconf.async_unregister_all_services()
        await zeroconf.async_close()

    async def close(self) -> None:
        """Say goodbye on every interface and release the sockets; safe to call twice."""
        async with self._lock:
            await self._withdraw()
            self._announced_on = []
