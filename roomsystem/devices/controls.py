"""From a profile's control section and a device's address to a connected driver."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from roomsystem.drivers.camera import CameraControl
from roomsystem.drivers.cec import CecDisplay
from roomsystem.drivers.display import DisplayControl
from roomsystem.drivers.errors import DriverError, LinkClosed
from roomsystem.drivers.lg import LgDisplay
from roomsystem.drivers.link import StreamLink
from roomsystem.drivers.mdc import MdcDisplay
from roomsystem.drivers.nec import NecDisplay
from roomsystem.drivers.pjlink import PjlinkDisplay
from roomsystem.drivers.uvc import UvcCamera
from roomsystem.drivers.visca import VISCA_IP_PORT, ViscaCamera, ViscaIpCamera

# Protocols with nothing to control: the device is there or it is not.
PASSIVE = frozenset({"usb-audio", "none"})


@dataclass(frozen=True, slots=True)
class Connection:
    """Where and how to reach one device."""

    protocol: str
    serial: str | None = None
    host: str | None = None
    port: int | None = None
    video: str | None = None
    baudrate: int | None = None
    address: int | None = None
    timeout_s: float = 1.0
    password_file: Path | None = None
    # Input event nodes of the device (a speakerphone's buttons), read by `ButtonWatcher`.
    inputs: tuple[str, ...] = ()

    @property
    def controllable(self) -> bool:
        return self.protocol not in PASSIVE

    def describe(self) -> str:
        if self.host:
            return f"{self.protocol} {self.host}:{self.port}"
        if self.serial:
            speed = f" @{self.baudrate}" if self.baudrate else ""
            return f"{self.protocol} {self.serial}{speed}"
        if self.video:
            return f"{self.protocol} {self.video}"
        return self.protocol

    async def open_link(self) -> StreamLink:
        if self.host:
            if self.port is None:
                raise LinkClosed(f"{self.protocol}: no port for {self.host}")
            return await StreamLink.open_tcp(self.host, self.port)
        if self.serial:
            return await StreamLink.open_serial(self.serial, self.baudrate or 9600)
        raise LinkClosed(f"{self.protocol}: neither a serial port nor a host is known")

    def password(self) -> str | None:
        if self.password_file is None:
            return None
        try:
            return self.password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise DriverError(f"cannot read {self.password_file}: {exc.strerror}") from None


async def open_control(connection: Connection) -> CameraControl | DisplayControl:
    """A connected driver for ``connection``; raises `DriverError` when it cannot be reached."""
    opener = _OPENERS.get(connection.protocol)
    if opener is None:
        raise LinkClosed(f"no driver for protocol {connection.protocol!r}")
    return await opener(connection)


def _address(connection: Connection, default: int) -> int:
    return connection.address if connection.address is not None else default


async def _visca(connection: Connection) -> CameraControl:
    link = await connection.open_link()
    return ViscaCamera(link, address=_address(connection, 1), timeout=connection.timeout_s)


async def _visca_ip(connection: Connection) -> CameraControl:
    if not connection.host:
        raise LinkClosed("VISCA over IP needs a host")
    return await ViscaIpCamera.connect(connection.host, connection.port or VISCA_IP_PORT)


async def _uvc(connection: Connection) -> CameraControl:
    if not connection.video:
        raise LinkClosed("UVC camera without a /dev/video node")
    return await UvcCamera.open(connection.video)


async def _cec(connection: Connection) -> DisplayControl:
    # The adapter (e.g. /dev/ttyACM0 for a Pulse-Eight) comes as the serial port; none: autodetect.
    return await CecDisplay.open(connection.serial)


async def _mdc(connection: Connection) -> DisplayControl:
    link = await connection.open_link()
    return MdcDisplay(link, display_id=_address(connection, 1), timeout=connection.timeout_s)


async def _nec(connection: Connection) -> DisplayControl:
    link = await connection.open_link()
    return NecDisplay(link, monitor_id=_address(connection, 1), timeout=connection.timeout_s)


async def _lg(connection: Connection) -> DisplayControl:
    link = await connection.open_link()
    return LgDisplay(link, set_id=_address(connection, 1), timeout=connection.timeout_s)


async def _pjlink(connection: Connection) -> DisplayControl:
    if not connection.host:
        raise LinkClosed("PJLink needs a host")
    display = PjlinkDisplay.tcp(
        connection.host, connection.port or 4352, connection.password(), connection.timeout_s
    )
    await display.status()  # connect and authenticate now, so a wrong password shows at once
    return display


_OPENERS: dict[str, Callable[[Connection], Awaitable[CameraControl | DisplayControl]]] = {
    "visca": _visca,
    "visca-ip": _visca_ip,
    "uvc": _uvc,
    "cec": _cec,
    "mdc": _mdc,
    "nec": _nec,
    "lg": _lg,
    "pjlink": _pjlink,
}
