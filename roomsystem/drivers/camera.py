"""What every PTZ camera driver offers (VISCA, VISCA over IP, UVC), whatever its wire."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class Direction(StrEnum):
    UP = "up"
    DOWN = "down"
    LEFT = "left"
    RIGHT = "right"
    UP_LEFT = "up_left"
    UP_RIGHT = "up_right"
    DOWN_LEFT = "down_left"
    DOWN_RIGHT = "down_right"


@dataclass(frozen=True, slots=True)
class CameraStatus:
    """A camera's state as its driver read it; positions in the protocol's own units."""

    power: bool
    pan: int | None = None
    tilt: int | None = None
    zoom: int | None = None


class CameraControl(Protocol):
    """A pan/tilt/zoom camera with presets. Speeds and positions are the protocol's units."""

    async def status(self) -> CameraStatus: ...

    async def set_power(self, on: bool) -> None: ...

    async def pan_tilt_absolute(
        self, pan: int, tilt: int, pan_speed: int, tilt_speed: int
    ) -> None: ...

    async def pan_tilt_drive(
        self, direction: Direction, pan_speed: int, tilt_speed: int
    ) -> None: ...

    async def pan_tilt_stop(self) -> None: ...

    async def home(self) -> None: ...

    async def zoom_absolute(self, position: int) -> None: ...

    async def preset_recall(self, number: int) -> None: ...

    async def preset_set(self, number: int) -> None: ...

    async def preset_reset(self, number: int) -> None: ...

    async def close(self) -> None: ...
