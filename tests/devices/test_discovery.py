"""USB discovery from sysfs, on a tree laid out as the kernel lays it out."""

from __future__ import annotations

import os
from pathlib import Path

from roomsystem.devices.discovery import scan_usb

BUS = "devices/pci0000:00/0000:00:14.0/usb1"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def link(path: Path, target: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(os.path.relpath(target, path.parent))


def usb_device(
    sysfs: Path, name: str, vid: str, pid: str, product: str, bcd: str = "0013", cls: str = "00"
) -> Path:
    device = sysfs / BUS / name
    for key, value in {
        "idVendor": vid,
        "idProduct": pid,
        "bcdDevice": bcd,
        "product": product,
        "manufacturer": "Maker",
        "bDeviceClass": cls,
    }.items():
        write(device / key, value)
    link(sysfs / "bus/usb/devices" / name, device)
    return device


def class_node(sysfs: Path, cls: str, node: str, parent: Path, **files: str) -> None:
    """A class device as the kernel makes it: under its parent, linked from /sys/class."""
    path = parent / node
    link(path / "device", parent)
    for key, value in files.items():
        write(path / key, value)
    link(sysfs / "class" / cls / node.rsplit("/", 1)[-1], path)


def test_devices_are_found_with_the_nodes_of_their_interfaces(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    usb_device(sysfs, "usb1", "1d6b", "0002", "xHCI Host Controller", cls="09")
    usb_device(sysfs, "1-4", "05e3", "0610", "USB2.0 Hub", cls="09")
    camera = usb_device(sysfs, "1-1", "046d", "085f", "PTZ Pro 2", bcd="0013")
    class_node(
        sysfs,
        "video4linux",
        "video0",
        camera / "1-1:1.0" / "video4linux",
        name="PTZ Pro 2",
        index="0",
    )
    class_node(
        sysfs,
        "video4linux",
        "video1",
        camera / "1-1:1.0" / "video4linux",
        name="PTZ Pro 2",
        index="1",
    )
    class_node(sysfs, "sound", "card1", camera / "1-1:1.2" / "sound", id="PTZPro2")
    speaker = usb_device(sysfs, "1-2", "0b0e", "0422", "Jabra SPEAK 510 USB")
    class_node(sysfs, "sound", "card2", speaker / "1-2:1.0" / "sound", id="USB")
    hid = speaker / "1-2:1.3" / "0003:0B0E:0422.0001" / "input" / "input7"
    class_node(sysfs, "input", "event5", hid)
    adapter = usb_device(sysfs, "1-3", "0403", "6001", "FT232R USB UART", bcd="0600")
    class_node(sysfs, "tty", "ttyUSB0", adapter / "1-3:1.0" / "ttyUSB0" / "tty")
    # A class device of the PCI bus itself belongs to no USB device.
    class_node(sysfs, "tty", "ttyS0", sysfs / "devices/platform/serial8250/tty")

    found = {device.sysfs_name: device for device in scan_usb(sysfs)}

    assert set(found) == {"1-1", "1-2", "1-3"}
    assert found["1-1"].usb_id == "046d:085f"
    assert found["1-1"].bcd_device == 0x0013
    assert found["1-1"].video == ("/dev/video0",)  # the metadata node is not a camera
    assert found["1-1"].names == ("PTZ Pro 2", "PTZPro2")
    assert found["1-2"].sound_cards == ("USB",)
    assert found["1-2"].inputs == ("/dev/input/event5",)
    assert found["1-3"].serial == ("/dev/ttyUSB0",)
    assert found["1-3"].bcd_device == 0x0600


def test_no_usb_bus_means_no_devices(tmp_path: Path) -> None:
    assert scan_usb(tmp_path) == []


def test_a_device_unplugged_while_scanning_is_skipped_or_complete(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    camera = usb_device(sysfs, "1-1", "046d", "085f", "PTZ Pro 2")
    class_node(sysfs, "video4linux", "video0", camera / "1-1:1.0" / "video4linux", index="0")
    (camera / "bcdDevice").unlink()  # half gone, as files vanish one by one
    (sysfs / "class/video4linux/video0/device").unlink()
    (found,) = scan_usb(sysfs)
    assert found.bcd_device is None
    assert found.video == ()
