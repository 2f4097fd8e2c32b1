"""Pan/tilt/zoom of USB Video Class cameras through V4L2 controls.

Sources:

- Linux UAPI ``include/uapi/linux/videodev2.h``: ``struct v4l2_queryctrl``,
  ``struct v4l2_control``, ``struct v4l2_ext_control`` (packed) and ``struct v4l2_ext_controls``,
  ``struct v4l2_query_ext_ctrl``; the camera-class control IDs (``V4L2_CID_CAMERA_CLASS_BASE``
  0x009a0900 + n); control types and flags. Request numbers are ``_IOWR('V', nr, type)`` as
  ``include/uapi/asm-generic/ioctl.h`` defines it (VIDIOC_S_CTRL = 0xc008561c,
  VIDIOC_QUERYCTRL = 0xc0445624).
- The V4L2 API documentation: "Camera Control Reference" (pan and tilt absolute in arc
  seconds, positive pan turns right, positive tilt up; pan/tilt speed: 0 stops), the pages of
  VIDIOC_QUERYCTRL, VIDIOC_G_CTRL and VIDIOC_G_EXT_CTRLS (``error_idx``, error codes).
- USB Video Class 1.5, 4.2.2.1.13-15 and uvcvideo's ``uvc_ctrl.c`` mappings: PAN/TILT_ABSOLUTE
  are CT_PANTILT_ABSOLUTE, PAN/TILT_SPEED are CT_PANTILT_RELATIVE, ZOOM_ABSOLUTE is
  CT_ZOOM_ABSOLUTE. Integer values are clamped to the range and rounded to the step.

What UVC gives the room: absolute pan/tilt/zoom, and continuous pan/tilt at a speed. It has
no power control and no presets: presets here are absolute positions kept by the driver
(`UvcCamera.presets`, for the caller to persist). Absolute moves have no speed in UVC.

Every ioctl goes through an injectable function with `fcntl.ioctl`'s signature, run in the
camera's own worker thread (ioctls on one file descriptor stay in order). A real camera is
``/dev/videoN``; `SimulatedUvcCamera` answers the same ioctls as uvcvideo does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import errno
import fcntl
import functools
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import Any

from roomsystem.drivers.camera import CameraStatus, Direction
from roomsystem.drivers.errors import (
    DeviceRejected,
    DeviceTimeout,
    DriverError,
    FrameError,
    LinkClosed,
)

logger = logging.getLogger(__name__)

# -- include/uapi/asm-generic/ioctl.h

_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = 8
_IOC_SIZESHIFT = 16
_IOC_DIRSHIFT = 30
_IOC_WRITE = 1
_IOC_READ = 2


def _ioc(direction: int, kind: str, number: int, size: int) -> int:
    return (
        direction << _IOC_DIRSHIFT
        | size << _IOC_SIZESHIFT
        | ord(kind) << _IOC_TYPESHIFT
        | number << _IOC_NRSHIFT
    )


def _iowr(kind: str, number: int, struct: type[ctypes.Structure]) -> int:
    return _ioc(_IOC_READ | _IOC_WRITE, kind, number, ctypes.sizeof(struct))


# -- include/uapi/linux/videodev2.h


class V4l2Queryctrl(ctypes.Structure):
    """struct v4l2_queryctrl (VIDIOC_QUERYCTRL)."""

    _fields_ = [
        ("id", ctypes.c_uint32),
        ("type", ctypes.c_uint32),
        ("name", ctypes.c_char * 32),
        ("minimum", ctypes.c_int32),
        ("maximum", ctypes.c_int32),
        ("step", ctypes.c_int32),
        ("default_value", ctypes.c_int32),
        ("flags", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32 * 2),
    ]


class V4l2QueryExtCtrl(ctypes.Structure):
    """struct v4l2_query_ext_ctrl (VIDIOC_QUERY_EXT_CTRL)."""

    _fields_ = [
        ("id", ctypes.c_uint32),
        ("type", ctypes.c_uint32),
        ("name", ctypes.c_char * 32),
        ("minimum", ctypes.c_int64),
        ("maximum", ctypes.c_int64),
        ("step", ctypes.c_uint64),
        ("default_value", ctypes.c_int64),
        ("flags", ctypes.c_uint32),
        ("elem_size", ctypes.c_uint32),
        ("elems", ctypes.c_uint32),
        ("nr_of_dims", ctypes.c_uint32),
        ("dims", ctypes.c_uint32 * 4),
        ("reserved", ctypes.c_uint32 * 32),
    ]


class V4l2Control(ctypes.Structure):
    """struct v4l2_control (VIDIOC_G_CTRL, VIDIOC_S_CTRL)."""

    _fields_ = [("id", ctypes.c_uint32), ("value", ctypes.c_int32)]


class _V4l2ExtControlValue(ctypes.Union):
    _pack_ = 1
    _layout_ = "ms"
    _fields_ = [("value", ctypes.c_int32), ("value64", ctypes.c_int64), ("ptr", ctypes.c_void_p)]


class V4l2ExtControl(ctypes.Structure):
    """struct v4l2_ext_control: one element of the ext-controls array."""

    _pack_ = 1  # __attribute__ ((packed)) in videodev2.h
    _layout_ = "ms"
    _anonymous_ = ("u",)
    _fields_ = [
        ("id", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("reserved2", ctypes.c_uint32 * 1),
        ("u", _V4l2ExtControlValue),
    ]


class V4l2ExtControls(ctypes.Structure):
    """struct v4l2_ext_controls (VIDIOC_G_EXT_CTRLS, VIDIOC_S_EXT_CTRLS)."""

    _fields_ = [
        ("which", ctypes.c_uint32),  # a union with ctrl_class in videodev2.h
        ("count", ctypes.c_uint32),
        ("error_idx", ctypes.c_uint32),
        ("request_fd", ctypes.c_int32),
        ("reserved", ctypes.c_uint32 * 1),
        ("controls", ctypes.POINTER(V4l2ExtControl)),
    ]


VIDIOC_G_CTRL = _iowr("V", 27, V4l2Control)
VIDIOC_S_CTRL = _iowr("V", 28, V4l2Control)
VIDIOC_QUERYCTRL = _iowr("V", 36, V4l2Queryctrl)
VIDIOC_G_EXT_CTRLS = _iowr("V", 71, V4l2ExtControls)
VIDIOC_S_EXT_CTRLS = _iowr("V", 72, V4l2ExtControls)
VIDIOC_QUERY_EXT_CTRL = _iowr("V", 103, V4l2QueryExtCtrl)

V4L2_CTRL_CLASS_CAMERA = 0x009A0000
V4L2_CID_CAMERA_CLASS_BASE = V4L2_CTRL_CLASS_CAMERA | 0x900
V4L2_CTRL_WHICH_CUR_VAL = 0
V4L2_CTRL_WHICH_DEF_VAL = 0x0F000000
V4L2_CTRL_FLAG_NEXT_CTRL = 0x80000000
V4L2_CTRL_FLAG_NEXT_COMPOUND = 0x40000000
V4L2_CTRL_ID_MASK = 0x0FFFFFFF
V4L2_CID_MAX_CTRLS = 1024


class Cid(IntEnum):
    """Camera-class control IDs (videodev2.h, V4L2_CID_CAMERA_CLASS_BASE + n)."""

    PAN_RELATIVE = V4L2_CID_CAMERA_CLASS_BASE + 4
    TILT_RELATIVE = V4L2_CID_CAMERA_CLASS_BASE + 5
    PAN_RESET = V4L2_CID_CAMERA_CLASS_BASE + 6
    TILT_RESET = V4L2_CID_CAMERA_CLASS_BASE + 7
    PAN_ABSOLUTE = V4L2_CID_CAMERA_CLASS_BASE + 8
    TILT_ABSOLUTE = V4L2_CID_CAMERA_CLASS_BASE + 9
    ZOOM_ABSOLUTE = V4L2_CID_CAMERA_CLASS_BASE + 13
    ZOOM_RELATIVE = V4L2_CID_CAMERA_CLASS_BASE + 14
    ZOOM_CONTINUOUS = V4L2_CID_CAMERA_CLASS_BASE + 15
    PAN_SPEED = V4L2_CID_CAMERA_CLASS_BASE + 32
    TILT_SPEED = V4L2_CID_CAMERA_CLASS_BASE + 33


class ControlType(IntEnum):
    """enum v4l2_ctrl_type (the scalar ones)."""

    INTEGER = 1
    BOOLEAN = 2
    MENU = 3
    BUTTON = 4
    INTEGER64 = 5
    CTRL_CLASS = 6
    STRING = 7
    BITMASK = 8
    INTEGER_MENU = 9


class ControlFlag(IntFlag):
    """V4L2_CTRL_FLAG_*."""

    NONE = 0
    DISABLED = 0x0001
    GRABBED = 0x0002
    READ_ONLY = 0x0004
    UPDATE = 0x0008
    INACTIVE = 0x0010
    SLIDER = 0x0020
    WRITE_ONLY = 0x0040
    VOLATILE = 0x0080
    HAS_PAYLOAD = 0x0100
    EXECUTE_ON_WRITE = 0x0200


def _struct_from(kind: type[ctypes.Structure], data: bytes) -> Any:
    if len(data) != ctypes.sizeof(kind):
        raise FrameError(f"{kind.__name__} is {ctypes.sizeof(kind)} bytes, got {len(data)}")
    return kind.from_buffer_copy(data)


@dataclass(frozen=True, slots=True)
class ControlInfo:
    """What VIDIOC_QUERYCTRL says about one control (``struct v4l2_queryctrl``)."""

    id: int
    type: int
    name: str
    minimum: int
    maximum: int
    step: int
    default: int
    flags: ControlFlag = ControlFlag.NONE

    @classmethod
    def parse(cls, data: bytes) -> ControlInfo:
        raw = _struct_from(V4l2Queryctrl, data)
        return cls(
            id=raw.id,
            type=raw.type,
            name=raw.name.decode("utf-8", errors="replace"),
            minimum=raw.minimum,
            maximum=raw.maximum,
            step=raw.step,
            default=raw.default_value,
            flags=ControlFlag(raw.flags),
        )

    def __bytes__(self) -> bytes:
        return bytes(self.to_struct())

    def to_struct(self) -> V4l2Queryctrl:
        return V4l2Queryctrl(
            id=self.id,
            type=self.type,
            name=self.name.encode()[:31],
            minimum=self.minimum,
            maximum=self.maximum,
            step=self.step,
            default_value=self.default,
            flags=int(self.flags),
        )

    def clamp(self, value: int) -> int:
        """The value uvcvideo would use: rounded to the step, clamped to the range."""
        step = max(self.step, 1)
        rounded = self.minimum + (value - self.minimum + step // 2) // step * step
        return max(self.minimum, min(self.maximum, rounded))


@dataclass(frozen=True, slots=True)
class ControlValue:
    """``struct v4l2_control``: a control ID and its 32-bit value (VIDIOC_G_CTRL/S_CTRL)."""

    id: int
    value: int

    @classmethod
    def parse(cls, data: bytes) -> ControlValue:
        raw = _struct_from(V4l2Control, data)
        return cls(raw.id, raw.value)

    def __bytes__(self) -> bytes:
        return bytes(V4l2Control(self.id, self.value))


class ExtControls:
    """``struct v4l2_ext_controls`` and the array it points to, kept alive together."""

    def __init__(self, values: Sequence[tuple[int, int]], which: int) -> None:
        self.array = (V4l2ExtControl * max(len(values), 1))()
        for slot, (cid, value) in zip(self.array, values, strict=False):
            slot.id, slot.value = cid, value
        self.struct = V4l2ExtControls(which=which, count=len(values))
        self.struct.controls = ctypes.cast(self.array, ctypes.POINTER(V4l2ExtControl))

    def values(self) -> list[int]:
        return [self.array[i].value for i in range(self.struct.count)]

    def failed_control(self) -> int | None:
        """The control that failed (``error_idx``), None when the failure was not one control's."""
        index = self.struct.error_idx
        return self.array[index].id if index < self.struct.count else None


@dataclass(frozen=True, slots=True)
class PtzPosition:
    """An absolute position: pan and tilt in arc seconds, zoom in the camera's own units."""

    pan: int | None
    tilt: int | None
    zoom: int | None


IoctlFunction = Callable[[int, int, Any], Any]
"""``fcntl.ioctl(fd, request, arg)``: arg is a mutable ctypes structure updated in place."""

PTZ_CONTROLS = (
    Cid.PAN_ABSOLUTE,
    Cid.TILT_ABSOLUTE,
    Cid.ZOOM_ABSOLUTE,
    Cid.PAN_SPEED,
    Cid.TILT_SPEED,
)

_DRIVE_SIGNS: Mapping[Direction, tuple[int, int]] = {
    Direction.UP: (0, 1),
    Direction.DOWN: (0, -1),
    Direction.LEFT: (-1, 0),
    Direction.RIGHT: (1, 0),
    Direction.UP_LEFT: (-1, 1),
    Direction.UP_RIGHT: (1, 1),
    Direction.DOWN_LEFT: (-1, -1),
    Direction.DOWN_RIGHT: (1, -1),
}


def _driver_error(exc: OSError, what: str) -> DriverError:
    code = exc.errno
    reason = os.strerror(code) if code else str(exc)
    if code in (errno.ENODEV, errno.ENXIO, errno.EBADF):
        return LinkClosed(f"{what}: camera gone ({reason})")
    if code == errno.ETIMEDOUT:
        return DeviceTimeout(f"{what}: {reason}")
    if code == errno.ENOTTY:
        return DeviceRejected(f"{what}: not a V4L2 device ({reason})", code)
    return DeviceRejected(f"{what}: {reason}", code)


class UvcCamera:
    """CameraControl for a UVC camera: V4L2 PTZ controls, with presets kept in the driver.

    Open it with `open` (a ``/dev/videoN`` path) or `attach` (an open file descriptor).
    ``ioctl`` replaces `fcntl.ioctl`; ``timeout`` bounds each ioctl (a stalled USB transfer).
    """

    def __init__(
        self,
        fd: int,
        name: str,
        *,
        ioctl: IoctlFunction,
        owns_fd: bool,
        presets: Mapping[int, PtzPosition] | None,
        timeout: float,
    ) -> None:
        self.name = name
        self.controls: dict[int, ControlInfo] = {}
        self.presets: dict[int, PtzPosition] = dict(presets or {})
        self._fd: int | None = fd
        self._ioctl_function = ioctl
        self._owns_fd = owns_fd
        self._timeout = timeout
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"uvc {name}")

    @classmethod
    async def open(
        cls,
        path: str = "/dev/video0",
        *,
        ioctl: IoctlFunction = fcntl.ioctl,
        presets: Mapping[int, PtzPosition] | None = None,
        timeout: float = 5.0,
    ) -> UvcCamera:
        """Open a V4L2 device node and read which PTZ controls it has."""
        try:
            fd = await asyncio.to_thread(os.open, path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise LinkClosed(f"cannot open {path}: {exc.strerror or exc}") from None
        return await cls.attach(
            fd, path, ioctl=ioctl, owns_fd=True, presets=presets, timeout=timeout
        )

    @classmethod
    async def attach(
        cls,
        fd: int,
        name: str,
        *,
        ioctl: IoctlFunction = fcntl.ioctl,
        owns_fd: bool = False,
        presets: Mapping[int, PtzPosition] | None = None,
        timeout: float = 5.0,
    ) -> UvcCamera:
        """Use an open V4L2 file descriptor; `close` closes it only when ``owns_fd``."""
        camera = cls(fd, name, ioctl=ioctl, owns_fd=owns_fd, presets=presets, timeout=timeout)
        try:
            await camera._discover()
        except BaseException:
            await camera.close()
            raise
        return camera

    async def _discover(self) -> None:
        for cid in PTZ_CONTROLS:
            try:
                info = await self.query_control(cid)
            except DeviceRejected as exc:
                if exc.code != errno.EINVAL:
                    raise
                continue  # the camera does not have it
            if not info.flags & ControlFlag.DISABLED:
                self.controls[cid] = info
        if not self.controls:
            raise DeviceRejected(f"{self.name}: no pan, tilt or zoom control")
        logger.debug("%s: PTZ controls %s", self.name, [Cid(c).name for c in self.controls])

    # -- CameraControl

    async def status(self) -> CameraStatus:
        position = await self.position()
        return CameraStatus(power=True, pan=position.pan, tilt=position.tilt, zoom=position.zoom)

    async def set_power(self, on: bool) -> None:
        """A UVC camera is on while it has USB power: switching on is a no-op, off is rejected."""
        if not on:
            raise DeviceRejected(f"{self.name}: UVC has no power control")

    async def pan_tilt_absolute(self, pan: int, tilt: int, pan_speed: int, tilt_speed: int) -> None:
        """Move to ``pan``/``tilt`` arc seconds; UVC absolute moves have no speed."""
        self._require(Cid.PAN_ABSOLUTE, Cid.TILT_ABSOLUTE)
        await self.set_controls({Cid.PAN_ABSOLUTE: pan, Cid.TILT_ABSOLUTE: tilt})

    async def pan_tilt_drive(self, direction: Direction, pan_speed: int, tilt_speed: int) -> None:
        """Start moving; the speed is clamped to what the camera offers (often just 1)."""
        pan_sign, tilt_sign = _DRIVE_SIGNS[direction]
        values: dict[int, int] = {}
        if pan_sign:
            values[Cid.PAN_SPEED] = pan_sign * self._speed(Cid.PAN_SPEED, pan_speed)
        if tilt_sign:
            values[Cid.TILT_SPEED] = tilt_sign * self._speed(Cid.TILT_SPEED, tilt_speed)
        await self.set_controls(values)

    async def pan_tilt_stop(self) -> None:
        self._require(Cid.PAN_SPEED, Cid.TILT_SPEED)
        await self.set_controls({Cid.PAN_SPEED: 0, Cid.TILT_SPEED: 0})

    async def home(self) -> None:
        """The camera's default pan and tilt (centre for UVC PTZ cameras)."""
        pan, tilt = self._require(Cid.PAN_ABSOLUTE, Cid.TILT_ABSOLUTE)
        await self.set_controls({pan.id: pan.default, tilt.id: tilt.default})

    async def zoom_absolute(self, position: int) -> None:
        self._require(Cid.ZOOM_ABSOLUTE)
        await self.set_control(Cid.ZOOM_ABSOLUTE, position)

    async def preset_set(self, number: int) -> None:
        """Remember where the camera points now as preset ``number``."""
        self.presets[_preset_number(number)] = await self.position()

    async def preset_recall(self, number: int) -> None:
        stored = self.presets.get(_preset_number(number))
        if stored is None:
            raise DeviceRejected(f"{self.name}: preset {number} is not set")
        values: dict[int, int] = {
            cid: value
            for cid, value in (
                (Cid.PAN_ABSOLUTE, stored.pan),
                (Cid.TILT_ABSOLUTE, stored.tilt),
                (Cid.ZOOM_ABSOLUTE, stored.zoom),
            )
            if value is not None and cid in self.controls
        }
        await self.set_controls(values)

    async def preset_reset(self, number: int) -> None:
        self.presets.pop(_preset_number(number), None)

    async def close(self) -> None:
        """Close the device (if owned) after the ioctls already queued; idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None and self._owns_fd:
            done = asyncio.get_running_loop().run_in_executor(self._executor, os.close, fd)
            try:
                async with asyncio.timeout(self._timeout):
                    await done
            except (TimeoutError, OSError) as exc:
                logger.warning("%s: closing: %s", self.name, exc)
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- V4L2 controls

    async def position(self) -> PtzPosition:
        """Pan, tilt and zoom now (None for a control the camera lacks), in one ioctl."""
        axes = (Cid.PAN_ABSOLUTE, Cid.TILT_ABSOLUTE, Cid.ZOOM_ABSOLUTE)
        present = [cid for cid in axes if cid in self.controls]
        values = dict(zip(present, await self.get_controls(present), strict=True))
        return PtzPosition(
            values.get(Cid.PAN_ABSOLUTE),
            values.get(Cid.TILT_ABSOLUTE),
            values.get(Cid.ZOOM_ABSOLUTE),
        )

    async def query_control(self, cid: int) -> ControlInfo:
        """VIDIOC_QUERYCTRL."""
        query = V4l2Queryctrl(id=cid)
        await self._ioctl(VIDIOC_QUERYCTRL, query, f"query control {cid:#x}")
        return ControlInfo.parse(bytes(query))

    async def get_control(self, cid: int) -> int:
        """VIDIOC_G_CTRL."""
        control = V4l2Control(id=cid)
        await self._ioctl(VIDIOC_G_CTRL, control, f"read control {cid:#x}")
        return int(control.value)

    async def set_control(self, cid: int, value: int) -> int:
        """VIDIOC_S_CTRL; returns the value the driver applied (clamped, rounded)."""
        control = V4l2Control(id=cid, value=value)
        await self._ioctl(VIDIOC_S_CTRL, control, f"set control {cid:#x} to {value}")
        return int(control.value)

    async def get_controls(self, cids: Sequence[int]) -> list[int]:
        """VIDIOC_G_EXT_CTRLS: several camera-class controls read together."""
        if not cids:
            return []
        controls = ExtControls([(cid, 0) for cid in cids], V4L2_CTRL_CLASS_CAMERA)
        await self._ext_ioctl(VIDIOC_G_EXT_CTRLS, controls, "read controls")
        return controls.values()

    async def set_controls(self, values: Mapping[int, int]) -> None:
        """VIDIOC_S_EXT_CTRLS: several camera-class controls in one request (pan and tilt
        together make one UVC PanTilt transfer)."""
        if not values:
            return
        controls = ExtControls(list(values.items()), V4L2_CTRL_CLASS_CAMERA)
        await self._ext_ioctl(VIDIOC_S_EXT_CTRLS, controls, f"set controls {dict(values)}")

    # -- internals

    def _require(self, *cids: Cid) -> list[ControlInfo]:
        missing = [cid.name for cid in cids if cid not in self.controls]
        if missing:
            raise DeviceRejected(f"{self.name}: the camera has no {', '.join(missing)}")
        return [self.controls[cid] for cid in cids]

    def _speed(self, cid: Cid, speed: int) -> int:
        (info,) = self._require(cid)
        return max(1, min(abs(speed), info.maximum))

    async def _ext_ioctl(self, request: int, controls: ExtControls, what: str) -> None:
        try:
            await self._ioctl(request, controls.struct, what)
        except DeviceRejected as exc:
            failed = controls.failed_control()
            if failed is None:
                raise
            raise DeviceRejected(f"{exc} (control {failed:#x})", exc.code) from None

    async def _ioctl(self, request: int, arg: ctypes.Structure, what: str) -> None:
        if self._fd is None:
            raise LinkClosed(f"{self.name}: closed")
        call = functools.partial(self._ioctl_function, self._fd, request, arg)
        try:
            async with asyncio.timeout(self._timeout):
                await asyncio.get_running_loop().run_in_executor(self._executor, call)
        except TimeoutError:
            raise DeviceTimeout(f"{self.name}: {what}: no answer in {self._timeout:g} s") from None
        except OSError as exc:
            raise _driver_error(exc, f"{self.name}: {what}") from None
        except RuntimeError as exc:  # the executor was shut down by close()
            raise LinkClosed(f"{self.name}: closed ({exc})") from None


def _preset_number(number: int) -> int:
    if number < 0:
        raise ValueError(f"preset numbers start at 0, got {number}")
    return number


# --------------------------------------------------------------------------------------
# The device side: a UVC PTZ camera's controls as uvcvideo presents them.


@dataclass
class SimulatedControl:
    """One V4L2 control of a simulated camera; ``value`` is its current value."""

    id: int
    name: str
    minimum: int
    maximum: int
    step: int
    default: int
    type: ControlType = ControlType.INTEGER
    flags: ControlFlag = ControlFlag.NONE
    value: int = 0

    def __post_init__(self) -> None:
        self.value = self.default

    @property
    def info(self) -> ControlInfo:
        return ControlInfo(
            self.id,
            self.type,
            self.name,
            self.minimum,
            self.maximum,
            self.step,
            self.default,
            self.flags,
        )


def conference_camera_controls() -> list[SimulatedControl]:
    """A control table like a USB PTZ conference camera's (±170° pan, ±30° tilt, 10x zoom)."""
    return [
        SimulatedControl(Cid.PAN_ABSOLUTE, "Pan, Absolute", -612000, 612000, 3600, 0),
        SimulatedControl(Cid.TILT_ABSOLUTE, "Tilt, Absolute", -108000, 108000, 3600, 0),
        SimulatedControl(Cid.ZOOM_ABSOLUTE, "Zoom, Absolute", 100, 1000, 1, 100),
        SimulatedControl(Cid.PAN_SPEED, "Pan, Speed", -1, 1, 1, 0),
        SimulatedControl(Cid.TILT_SPEED, "Tilt, Speed", -1, 1, 1, 0),
    ]


@dataclass
class SimulatedUvcCamera:
    """The control ioctls of a UVC camera, answered as uvcvideo and the V4L2 core do.

    Call it like `fcntl.ioctl`. Unknown controls give EINVAL, read-only/write-only misuse
    EACCES, integer values are rounded to the step and clamped, unknown requests ENOTTY, and
    every request ENODEV once ``unplugged``. ``stalled`` controls fail with EIO as a camera
    that stalls the USB control transfer does. ``calls`` records (request, bytes of the
    argument as passed).
    """

    controls: dict[int, SimulatedControl] = field(
        default_factory=lambda: {c.id: c for c in conference_camera_controls()}
    )
    unplugged: bool = False
    stalled: set[int] = field(default_factory=set)
    calls: list[tuple[int, bytes]] = field(default_factory=list)

    def __call__(self, fd: int, request: int, arg: Any = 0, mutate: bool = True) -> Any:
        request = int(request) & 0xFFFFFFFF  # callers may pass it as a signed int
        immutable = isinstance(arg, bytes)
        buffer = bytearray(arg) if immutable else arg
        self.calls.append((request, bytes(buffer)))
        if self.unplugged:
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
        handler = self._handlers().get(request)
        if handler is None:
            raise OSError(errno.ENOTTY, os.strerror(errno.ENOTTY))
        handler(buffer)
        return bytes(buffer) if immutable else 0

    def value(self, cid: int) -> int:
        return self.controls[cid].value

    def _handlers(self) -> dict[int, Callable[[Any], None]]:
        return {
            VIDIOC_QUERYCTRL: self._queryctrl,
            VIDIOC_QUERY_EXT_CTRL: self._query_ext_ctrl,
            VIDIOC_G_CTRL: self._g_ctrl,
            VIDIOC_S_CTRL: self._s_ctrl,
            VIDIOC_G_EXT_CTRLS: self._g_ext_ctrls,
            VIDIOC_S_EXT_CTRLS: self._s_ext_ctrls,
        }

    def _find(self, cid: int) -> SimulatedControl:
        if cid & V4L2_CTRL_FLAG_NEXT_CTRL:
            after = cid & V4L2_CTRL_ID_MASK
            following = sorted(c for c in self.controls if c > after)
            if not following:
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
            return self.controls[following[0]]
        if cid not in self.controls:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return self.controls[cid]

    def _queryctrl(self, buffer: Any) -> None:
        query = V4l2Queryctrl.from_buffer(buffer)
        answer = bytes(self._find(query.id).info)
        ctypes.memmove(ctypes.addressof(query), answer, len(answer))

    def _query_ext_ctrl(self, buffer: Any) -> None:
        query = V4l2QueryExtCtrl.from_buffer(buffer)
        control = self._find(query.id)
        ctypes.memset(ctypes.addressof(query), 0, ctypes.sizeof(query))
        query.id, query.type, query.name = control.id, control.type, control.name.encode()
        query.minimum, query.maximum = control.minimum, control.maximum
        query.step, query.default_value = control.step, control.default
        query.flags, query.elem_size, query.elems = int(control.flags), 4, 1

    def _readable(self, cid: int) -> SimulatedControl:
        control = self._find(cid)
        if control.flags & ControlFlag.WRITE_ONLY:
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))
        if cid in self.stalled:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return control

    def _writable(self, cid: int) -> SimulatedControl:
        control = self._find(cid)
        if control.flags & ControlFlag.READ_ONLY:
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))
        return control

    def _apply(self, control: SimulatedControl, value: int) -> int:
        if control.id in self.stalled:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        control.value = control.info.clamp(value)
        return control.value

    def _g_ctrl(self, buffer: Any) -> None:
        request = V4l2Control.from_buffer(buffer)
        request.value = self._readable(request.id).value

    def _s_ctrl(self, buffer: Any) -> None:
        request = V4l2Control.from_buffer(buffer)
        request.value = self._apply(self._writable(request.id), request.value)

    def _ext_items(self, buffer: Any, *, reading: bool) -> tuple[Any, list[Any]]:
        request = V4l2ExtControls.from_buffer(buffer)
        if request.count > V4L2_CID_MAX_CTRLS:
            request.error_idx = request.count
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        items = [request.controls[i] for i in range(request.count)]
        which_ok = (V4L2_CTRL_WHICH_CUR_VAL, V4L2_CTRL_CLASS_CAMERA) + (
            (V4L2_CTRL_WHICH_DEF_VAL,) if reading else ()
        )
        for index, item in enumerate(items):
            # The V4L2 core checks every ID before it touches the hardware.
            request.error_idx = index if reading else request.count
            if request.which not in which_ok or item.id not in self.controls:
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return request, items

    def _g_ext_ctrls(self, buffer: Any) -> None:
        request, items = self._ext_items(buffer, reading=True)
        for index, item in enumerate(items):
            request.error_idx = index
            control = self._readable(item.id)
            item.value = (
                control.default if request.which == V4L2_CTRL_WHICH_DEF_VAL else control.value
            )

    def _s_ext_ctrls(self, buffer: Any) -> None:
        request, items = self._ext_items(buffer, reading=False)
        writable = [self._writable(item.id) for item in items]
        for index, (item, control) in enumerate(zip(items, writable, strict=True)):
            request.error_idx = index
            item.value = self._apply(control, item.value)
