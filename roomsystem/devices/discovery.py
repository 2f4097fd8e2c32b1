"""Find the room's devices in sysfs: USB cameras, speakerphones, serial adapters, buttons,
and the kernel's HDMI-CEC adapters.

Each USB device (``/sys/bus/usb/devices/1-1.2``) is reported once with the nodes its
interfaces created: ``/dev/videoN`` (video4linux), an ALSA card, ``/dev/input/eventN`` and
``/dev/ttyUSBN``. The identity (vendor:product, bcdDevice, names) is what profiles match on.
Reading sysfs is cheap, so a rescan every couple of seconds notices a replug quickly.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UsbDevice:
    """A USB device and the device nodes of its interfaces."""

    sysfs_name: str
    usb_id: str
    bcd_device: int | None
    product: str
    manufacturer: str
    video: tuple[str, ...] = ()
    sound_cards: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    serial: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n in (self.product, *self.sound_cards) if n)


@dataclass(slots=True)
class _Nodes:
    video: list[str] = field(default_factory=list)
    sound: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    serial: list[str] = field(default_factory=list)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


def scan_usb(sysfs: Path = Path("/sys")) -> list[UsbDevice]:
    """Every USB device (not hub or root hub) with its nodes, sorted by sysfs name."""
    devices = sysfs / "bus" / "usb" / "devices"
    if not devices.is_dir():
        return []
    owners: dict[Path, str] = {}
    for entry in devices.iterdir():
        if (entry / "idVendor").exists() and _read(entry / "bDeviceClass") != "09":
            owners[entry.resolve()] = entry.name
    nodes: dict[str, _Nodes] = {name: _Nodes() for name in owners.values()}
    for kind, cls, pattern in (
        ("video", "video4linux", "video*"),
        ("sound", "sound", "card*"),
        ("inputs", "input", "event*"),
        ("serial", "tty", "tty*"),
    ):
        for node in sorted((sysfs / "class" / cls).glob(pattern)):
            owner = _owner(node, owners)
            if owner is not None:
                getattr(nodes[owner], kind).append(_node_name(kind, node))
    found = [_describe(sysfs, devices / name, nodes[name]) for name in sorted(nodes)]
    return found


def _owner(node: Path, owners: dict[Path, str]) -> str | None:
    try:
        target = (node / "device").resolve(strict=True)
    except OSError:
        return None
    for parent in (target, *target.parents):
        if parent in owners:
            return owners[parent]
    return None


def _node_name(kind: str, node: Path) -> str:
    if kind == "sound":
        return _read(node / "id") or node.name
    return f"/dev/{node.name}" if kind != "inputs" else f"/dev/input/{node.name}"


def _describe(sysfs: Path, path: Path, nodes: _Nodes) -> UsbDevice:
    bcd = _read(path / "bcdDevice")
    return UsbDevice(
        sysfs_name=path.name,
        usb_id=f"{_read(path / 'idVendor').lower()}:{_read(path / 'idProduct').lower()}",
        bcd_device=int(bcd, 16)
        if bcd and all(c in "0123456789abcdefABCDEF" for c in bcd)
        else None,
        product=_read(path / "product"),
        manufacturer=_read(path / "manufacturer"),
        video=tuple(sorted(_capture_nodes(sysfs, nodes.video))),
        sound_cards=tuple(nodes.sound),
        inputs=tuple(nodes.inputs),
        serial=tuple(nodes.serial),
    )


def _capture_nodes(sysfs: Path, video: list[str]) -> list[str]:
    """A UVC camera makes two nodes (capture and metadata); index 0 is the capture one."""
    capture = [
        v
        for v in video
        if _read(sysfs / "class" / "video4linux" / os.path.basename(v) / "index") in ("0", "")
    ]
    return capture or video


@dataclass(frozen=True, slots=True)
class CecAdapter:
    """An HDMI-CEC adapter of the kernel's CEC framework (``/dev/cecN``).

    ``port`` is how libCEC's ``cec-client`` names it: libCEC drives the framework's first
    adapter through the port "Linux" and has no name for the others. USB adapters with their
    own protocol (Pulse-Eight) are serial ports instead, found by their USB id.
    """

    name: str
    node: str
    port: str | None


def scan_cec(sysfs: Path = Path("/sys")) -> list[CecAdapter]:
    """The kernel's CEC adapters, sorted by name."""
    adapters = sysfs / "class" / "cec"
    if not adapters.is_dir():
        return []
    return [
        CecAdapter(entry.name, f"/dev/{entry.name}", "Linux" if entry.name == "cec0" else None)
        for entry in sorted(adapters.iterdir())
        if entry.name.startswith("cec")
    ]
