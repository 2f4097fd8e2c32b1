"""UVC PTZ over V4L2: struct layouts and request numbers, the driver against a simulated
camera, error mapping, and the simulated camera driven by linuxpy (a V4L2 library by others).

Expected request numbers are the kernel's (``VIDIOC_S_CTRL`` 0xc008561c, ``VIDIOC_QUERYCTRL``
0xc0445624; the ext-controls ones carry the 64-bit pointer size); struct bytes are packed
by hand from ``videodev2.h``'s field lists.
"""

from __future__ import annotations

import ctypes
import errno
import struct
import sys
import threading
from collections.abc import AsyncIterator
from typing import Any

import linuxpy.video.device as linuxpy_device
import pytest
from hypothesis import given
from hypothesis import strategies as st
from linuxpy.video import raw as linuxpy_raw

from roomsystem.drivers.camera import CameraControl, Direction
from roomsystem.drivers.errors import DeviceRejected, DeviceTimeout, FrameError, LinkClosed
from roomsystem.drivers.uvc import (
    VIDIOC_G_CTRL,
    VIDIOC_G_EXT_CTRLS,
    VIDIOC_QUERY_EXT_CTRL,
    VIDIOC_QUERYCTRL,
    VIDIOC_S_CTRL,
    VIDIOC_S_EXT_CTRLS,
    Cid,
    ControlFlag,
    ControlInfo,
    ControlValue,
    ExtControls,
    PtzPosition,
    SimulatedControl,
    SimulatedUvcCamera,
    UvcCamera,
    V4l2Control,
    V4l2ExtControl,
    V4l2ExtControls,
    V4l2Queryctrl,
    V4l2QueryExtCtrl,
    conference_camera_controls,
)

LITTLE_ENDIAN_64 = sys.byteorder == "little" and ctypes.sizeof(ctypes.c_void_p) == 8
QUERYCTRL_LAYOUT = "<II32siiiiI2I"  # id type name[32] min max step default flags reserved[2]


# -- request numbers and layouts


def test_request_numbers_are_the_kernels() -> None:
    assert VIDIOC_G_CTRL == 0xC008561B
    assert VIDIOC_S_CTRL == 0xC008561C
    assert VIDIOC_QUERYCTRL == 0xC0445624
    if ctypes.sizeof(ctypes.c_void_p) == 8:
        assert VIDIOC_G_EXT_CTRLS == 0xC0205647
        assert VIDIOC_S_EXT_CTRLS == 0xC0205648
    assert VIDIOC_QUERY_EXT_CTRL == 0xC0E85667


def test_struct_sizes_and_ids_match_linuxpy() -> None:
    ioc = linuxpy_raw.IOC
    for ours, theirs in [
        (VIDIOC_G_CTRL, ioc.G_CTRL),
        (VIDIOC_S_CTRL, ioc.S_CTRL),
        (VIDIOC_QUERYCTRL, ioc.QUERYCTRL),
        (VIDIOC_G_EXT_CTRLS, ioc.G_EXT_CTRLS),
        (VIDIOC_S_EXT_CTRLS, ioc.S_EXT_CTRLS),
        (VIDIOC_QUERY_EXT_CTRL, ioc.QUERY_EXT_CTRL),
    ]:
        assert ours == theirs & 0xFFFFFFFF
    for ours_struct, theirs_struct in [
        (V4l2Control, linuxpy_raw.v4l2_control),
        (V4l2Queryctrl, linuxpy_raw.v4l2_queryctrl),
        (V4l2ExtControl, linuxpy_raw.v4l2_ext_control),
        (V4l2ExtControls, linuxpy_raw.v4l2_ext_controls),
        (V4l2QueryExtCtrl, linuxpy_raw.v4l2_query_ext_ctrl),
    ]:
        assert ctypes.sizeof(ours_struct) == ctypes.sizeof(theirs_struct)
    for cid in Cid:
        assert cid == linuxpy_raw.ControlID[cid.name]


@pytest.mark.skipif(not LITTLE_ENDIAN_64, reason="golden bytes are for little-endian 64-bit")
def test_control_value_golden_bytes() -> None:
    data = struct.pack("<Ii", 0x009A0908, -36000)  # pan absolute, -10 degrees
    assert bytes(ControlValue(Cid.PAN_ABSOLUTE, -36000)) == data
    assert ControlValue.parse(data) == ControlValue(Cid.PAN_ABSOLUTE, -36000)


def test_control_info_golden_bytes() -> None:
    data = struct.pack(
        QUERYCTRL_LAYOUT, 0x009A0909, 1, b"Tilt, Absolute", -108000, 108000, 3600, 0, 0, 0, 0
    )
    info = ControlInfo.parse(data)
    assert info == ControlInfo(Cid.TILT_ABSOLUTE, 1, "Tilt, Absolute", -108000, 108000, 3600, 0)
    assert bytes(info) == data


@pytest.mark.skipif(not LITTLE_ENDIAN_64, reason="golden bytes are for little-endian 64-bit")
def test_ext_controls_layout() -> None:
    controls = ExtControls([(Cid.PAN_ABSOLUTE, -3600), (Cid.TILT_ABSOLUTE, 7200)], 0x009A0000)
    which, count, error_idx, request_fd, _, pointer = struct.unpack(
        "<IIIiI4xQ", bytes(controls.struct)
    )
    assert (which, count, error_idx, request_fd) == (0x009A0000, 2, 0, 0)
    assert pointer == ctypes.addressof(controls.array)
    # 4 bytes of padding align the pointer. Packed 20-byte elements: id, size, reserved2[1], then the 8-byte value union.
    assert bytes(controls.array) == struct.pack(
        "<IIIiIIIIiI", 0x009A0908, 0, 0, -3600, 0, 0x009A0909, 0, 0, 7200, 0
    )


@pytest.mark.parametrize("size", [0, 7, 9, 67, 69])
def test_wrong_sizes_are_frame_errors(size: int) -> None:
    with pytest.raises(FrameError):
        ControlInfo.parse(bytes(size))
    with pytest.raises(FrameError):
        ControlValue.parse(bytes(size))


@given(st.binary(min_size=8, max_size=8))
def test_control_value_round_trip_fuzz(data: bytes) -> None:
    assert bytes(ControlValue.parse(data)) == data


@given(st.binary(max_size=80))
def test_control_info_parser_fuzz(data: bytes) -> None:
    try:
        info = ControlInfo.parse(data)
    except FrameError:
        assert len(data) != ctypes.sizeof(V4l2Queryctrl)
    else:
        assert ControlInfo.parse(bytes(info)) == info


def test_clamping_follows_uvcvideo() -> None:
    pan = ControlInfo(Cid.PAN_ABSOLUTE, 1, "Pan", -612000, 612000, 3600, 0)
    assert pan.clamp(36001) == 36000
    assert pan.clamp(37800) == 39600  # halfway rounds up, as DIV_ROUND_CLOSEST
    assert pan.clamp(-(10**9)) == -612000
    assert pan.clamp(10**9) == 612000


# -- the driver against the simulated camera


@pytest.fixture
def sim() -> SimulatedUvcCamera:
    return SimulatedUvcCamera()


@pytest.fixture
async def camera(sim: SimulatedUvcCamera) -> AsyncIterator[UvcCamera]:
    opened = await UvcCamera.attach(3, "sim", ioctl=sim, timeout=1.0)
    yield opened
    await opened.close()


async def test_discovery_queries_each_ptz_control(sim: SimulatedUvcCamera) -> None:
    camera = await UvcCamera.attach(3, "sim", ioctl=sim)
    control: CameraControl = camera  # the interface the room uses
    await control.close()
    assert [request for request, _ in sim.calls] == [VIDIOC_QUERYCTRL] * 5
    assert [data for _, data in sim.calls] == [
        struct.pack("<I", cid) + bytes(64)
        for cid in (0x9A0908, 0x9A0909, 0x9A090D, 0x9A0920, 0x9A0921)
    ]
    assert sorted(camera.controls) == sorted(c.id for c in conference_camera_controls())
    assert camera.controls[Cid.ZOOM_ABSOLUTE].maximum == 1000


async def test_status_reads_all_axes_in_one_ioctl(
    camera: UvcCamera, sim: SimulatedUvcCamera
) -> None:
    sim.calls.clear()
    status = await camera.status()
    assert (status.power, status.pan, status.tilt, status.zoom) == (True, 0, 0, 100)
    assert [request for request, _ in sim.calls] == [VIDIOC_G_EXT_CTRLS]


async def test_absolute_moves(camera: UvcCamera, sim: SimulatedUvcCamera) -> None:
    await camera.pan_tilt_absolute(36001, -7200, 24, 20)
    assert (sim.value(Cid.PAN_ABSOLUTE), sim.value(Cid.TILT_ABSOLUTE)) == (36000, -7200)
    await camera.pan_tilt_absolute(10**7, -(10**7), 1, 1)
    assert (sim.value(Cid.PAN_ABSOLUTE), sim.value(Cid.TILT_ABSOLUTE)) == (612000, -108000)
    sim.calls.clear()
    await camera.zoom_absolute(450)
    assert sim.value(Cid.ZOOM_ABSOLUTE) == 450
    assert sim.calls == [(VIDIOC_S_CTRL, struct.pack("<Ii", 0x9A090D, 450))]
    assert await camera.set_control(Cid.ZOOM_ABSOLUTE, 5000) == 1000  # the applied value
    await camera.home()
    assert (await camera.position()) == PtzPosition(0, 0, 1000)


@pytest.mark.parametrize(
    ("direction", "pan_speed", "tilt_speed"),
    [
        (Direction.RIGHT, 1, 0),
        (Direction.LEFT, -1, 0),
        (Direction.UP, 0, 1),
        (Direction.DOWN_LEFT, -1, -1),
        (Direction.UP_RIGHT, 1, 1),
    ],
)
async def test_drive_and_stop(
    camera: UvcCamera,
    sim: SimulatedUvcCamera,
    direction: Direction,
    pan_speed: int,
    tilt_speed: int,
) -> None:
    await camera.pan_tilt_drive(direction, 18, 14)  # the camera only has speed 1
    assert (sim.value(Cid.PAN_SPEED), sim.value(Cid.TILT_SPEED)) == (pan_speed, tilt_speed)
    await camera.pan_tilt_stop()
    assert (sim.value(Cid.PAN_SPEED), sim.value(Cid.TILT_SPEED)) == (0, 0)


async def test_drive_speed_is_clamped_to_the_cameras() -> None:
    controls = conference_camera_controls()
    controls[3] = SimulatedControl(Cid.PAN_SPEED, "Pan, Speed", -160, 160, 1, 0)
    sim = SimulatedUvcCamera(controls={c.id: c for c in controls})
    camera = await UvcCamera.attach(3, "sim", ioctl=sim)
    await camera.pan_tilt_drive(Direction.LEFT, 24, 1)
    assert sim.value(Cid.PAN_SPEED) == -24
    await camera.pan_tilt_drive(Direction.RIGHT, 500, 1)
    assert sim.value(Cid.PAN_SPEED) == 160
    await camera.close()


async def test_presets_are_stored_positions(camera: UvcCamera, sim: SimulatedUvcCamera) -> None:
    await camera.pan_tilt_absolute(72000, 3600, 1, 1)
    await camera.zoom_absolute(300)
    await camera.preset_set(2)
    assert camera.presets == {2: PtzPosition(72000, 3600, 300)}
    await camera.home()
    await camera.zoom_absolute(100)
    sim.calls.clear()
    await camera.preset_recall(2)
    assert (await camera.position()) == PtzPosition(72000, 3600, 300)
    assert sim.calls[0][0] == VIDIOC_S_EXT_CTRLS  # one request for all three
    await camera.preset_reset(2)
    with pytest.raises(DeviceRejected, match="preset 2 is not set"):
        await camera.preset_recall(2)
    with pytest.raises(ValueError, match="start at 0"):
        await camera.preset_set(-1)


async def test_presets_given_back_by_the_caller(sim: SimulatedUvcCamera) -> None:
    camera = await UvcCamera.attach(3, "sim", ioctl=sim, presets={1: PtzPosition(-3600, 0, None)})
    await camera.preset_recall(1)
    assert sim.value(Cid.PAN_ABSOLUTE) == -3600
    await camera.close()


async def test_power(camera: UvcCamera) -> None:
    await camera.set_power(True)
    with pytest.raises(DeviceRejected, match="no power control"):
        await camera.set_power(False)


async def test_zoom_only_camera() -> None:
    zoom = SimulatedControl(Cid.ZOOM_ABSOLUTE, "Zoom, Absolute", 0, 10, 1, 0)
    sim = SimulatedUvcCamera(controls={zoom.id: zoom})
    camera = await UvcCamera.attach(3, "sim", ioctl=sim)
    assert (await camera.status()).pan is None
    with pytest.raises(DeviceRejected, match="no PAN_ABSOLUTE, TILT_ABSOLUTE"):
        await camera.pan_tilt_absolute(0, 0, 1, 1)
    with pytest.raises(DeviceRejected, match="no PAN_SPEED"):
        await camera.pan_tilt_drive(Direction.LEFT, 1, 1)
    await camera.close()


async def test_camera_without_ptz_is_rejected() -> None:
    with pytest.raises(DeviceRejected, match="no pan, tilt or zoom"):
        await UvcCamera.attach(3, "webcam", ioctl=SimulatedUvcCamera(controls={}))


# -- errors


async def test_unknown_control_is_rejected_with_einval(camera: UvcCamera) -> None:
    with pytest.raises(DeviceRejected) as caught:
        await camera.get_control(0x009A0999)
    assert caught.value.code == errno.EINVAL
    with pytest.raises(DeviceRejected) as caught:
        await camera.set_controls({Cid.PAN_ABSOLUTE: 0, 0x009A0999: 1})
    assert caught.value.code == errno.EINVAL
    assert "control 0x" not in str(caught.value)  # failed while checking, before any change


async def test_stalled_control_names_the_failing_control(
    camera: UvcCamera, sim: SimulatedUvcCamera
) -> None:
    sim.stalled.add(Cid.TILT_ABSOLUTE)
    with pytest.raises(DeviceRejected, match=r"Input/output error \(control 0x9a0909\)") as caught:
        await camera.status()
    assert caught.value.code == errno.EIO


async def test_read_only_and_write_only_controls() -> None:
    pan = SimulatedControl(Cid.PAN_ABSOLUTE, "Pan", -10, 10, 1, 0, flags=ControlFlag.READ_ONLY)
    tilt = SimulatedControl(Cid.TILT_RELATIVE, "Tilt", -10, 10, 1, 0, flags=ControlFlag.WRITE_ONLY)
    sim = SimulatedUvcCamera(controls={pan.id: pan, tilt.id: tilt})
    camera = await UvcCamera.attach(3, "sim", ioctl=sim)
    with pytest.raises(DeviceRejected) as caught:
        await camera.set_control(Cid.PAN_ABSOLUTE, 1)
    assert caught.value.code == errno.EACCES
    with pytest.raises(DeviceRejected) as caught:
        await camera.get_control(Cid.TILT_RELATIVE)
    assert caught.value.code == errno.EACCES
    await camera.close()


async def test_unplugged_camera_gives_link_closed(
    camera: UvcCamera, sim: SimulatedUvcCamera
) -> None:
    sim.unplugged = True
    with pytest.raises(LinkClosed, match="camera gone"):
        await camera.status()


async def test_stuck_ioctl_times_out(sim: SimulatedUvcCamera) -> None:
    release = threading.Event()

    def stuck_ioctl(fd: int, request: int, arg: Any) -> Any:
        if request == VIDIOC_S_CTRL:
            release.wait(5)
        return sim(fd, request, arg)

    camera = await UvcCamera.attach(3, "sim", ioctl=stuck_ioctl, timeout=0.1)
    try:
        with pytest.raises(DeviceTimeout, match=r"no answer in 0\.1 s"):
            await camera.zoom_absolute(200)
    finally:
        release.set()
        await camera.close()


async def test_closed_camera(camera: UvcCamera) -> None:
    await camera.close()
    await camera.close()
    with pytest.raises(LinkClosed, match="closed"):
        await camera.status()


# -- the real device path


async def test_missing_device_node() -> None:
    with pytest.raises(LinkClosed, match="cannot open /dev/video99"):
        await UvcCamera.open("/dev/video99")


async def test_a_file_that_is_no_v4l2_device() -> None:
    with pytest.raises(DeviceRejected, match="not a V4L2 device") as caught:
        await UvcCamera.open("/dev/null")
    assert caught.value.code == errno.ENOTTY


async def test_open_with_a_simulated_ioctl(sim: SimulatedUvcCamera) -> None:
    camera = await UvcCamera.open("/dev/null", ioctl=sim)
    await camera.pan_tilt_absolute(3600, 3600, 1, 1)
    assert sim.value(Cid.PAN_ABSOLUTE) == 3600
    await camera.close()


# -- linuxpy, a V4L2 library written by others, drives the simulated camera


@pytest.fixture
def linuxpy_on(sim: SimulatedUvcCamera, monkeypatch: pytest.MonkeyPatch) -> SimulatedUvcCamera:
    def ioctl(fd: int, request: int, *args: Any) -> Any:
        sim(fd, request, args[0])
        return args[0]

    monkeypatch.setattr(linuxpy_device, "ioctl", ioctl)
    return sim


def test_linuxpy_enumerates_and_sets_controls(linuxpy_on: SimulatedUvcCamera) -> None:
    fd = 3
    found = {
        c.id: (c.name.decode(), c.minimum, c.maximum, c.step)
        for c in linuxpy_device.iter_read_controls(fd)
    }
    assert found[Cid.PAN_ABSOLUTE] == ("Pan, Absolute", -612000, 612000, 3600)
    assert sorted(found) == sorted(c.id for c in conference_camera_controls())

    linuxpy_device.set_control(fd, linuxpy_raw.ControlID.PAN_ABSOLUTE, 36100)
    assert linuxpy_on.value(Cid.PAN_ABSOLUTE) == 36000
    assert linuxpy_device.get_control(fd, linuxpy_raw.ControlID.PAN_ABSOLUTE) == 36000

    queried = {c.id: c for c in linuxpy_device.iter_read_controls(fd)}
    pan_tilt = [queried[Cid.PAN_ABSOLUTE], queried[Cid.TILT_ABSOLUTE]]
    linuxpy_device.set_controls_values(fd, list(zip(pan_tilt, [-7200, 7200], strict=True)))
    assert linuxpy_device.get_controls_values(fd, pan_tilt) == [-7200, 7200]
    with pytest.raises(OSError, match="Invalid argument"):
        linuxpy_device.get_control(fd, 0x009A0999)


async def test_driver_and_linuxpy_see_the_same_camera(
    linuxpy_on: SimulatedUvcCamera, camera: UvcCamera
) -> None:
    await camera.pan_tilt_absolute(-180000, 54000, 1, 1)
    assert linuxpy_device.get_control(3, linuxpy_raw.ControlID.TILT_ABSOLUTE) == 54000
    linuxpy_device.set_control(3, linuxpy_raw.ControlID.ZOOM_ABSOLUTE, 640)
    assert (await camera.status()).zoom == 640


def test_simulated_camera_answers_immutable_arguments_like_fcntl(sim: SimulatedUvcCamera) -> None:
    reply = sim(3, VIDIOC_G_CTRL, struct.pack("<Ii", Cid.ZOOM_ABSOLUTE, 0))
    assert reply == struct.pack("<Ii", Cid.ZOOM_ABSOLUTE, 100)
    with pytest.raises(OSError, match="Inappropriate ioctl"):
        sim(3, 0xC0045600, bytes(4))
