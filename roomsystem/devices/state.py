"""The devices snapshot that the device layer publishes."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class DeviceKind(StrEnum):
    CAMERA = "camera"
    AUDIO = "audio"
    DISPLAY = "display"


class DeviceStatus(BaseModel):
    """One device of the room, as the panel's device list shows it."""

    model_config = ConfigDict(frozen=True)

    id: str
    kind: DeviceKind
    name: str
    certified: bool
    online: bool
    error: str | None = None


class DevicesState(BaseModel):
    model_config = ConfigDict(frozen=True)

    devices: tuple[DeviceStatus, ...] = ()
