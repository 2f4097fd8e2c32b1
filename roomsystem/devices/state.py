"""The devices snapshot that the device layer publishes."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class DeviceKind(StrEnum):
    CAMERA = "camera"
    AUDIO = "audio"
    DISPLAY = "display"


class DeviceStatus(BaseModel):
    """One device of the room, as the panel's device list shows it.

    What the device reported last (power, input, position, ...) is None until it answered.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    kind: DeviceKind
    name: str
    profile: str
    certified: bool
    connection: str
    online: bool = False
    error: str | None = None
    since: datetime | None = None
    power: bool | None = None
    input_source: str | None = None
    inputs: tuple[str, ...] = ()
    volume: int | None = None
    muted: bool | None = None
    pan: int | None = None
    tilt: int | None = None
    zoom: int | None = None
    presets: int = 0


class ButtonEvent(BaseModel):
    """A speakerphone button someone pressed, as its profile names it (mute, hook, ...)."""

    model_config = ConfigDict(frozen=True)

    device: str
    action: str
    at: datetime
    # The key is held and the keyboard repeats it (volume steps on; a call button does not).
    repeat: bool = False


class RoomAudio(BaseModel):
    """The room's microphone and speaker, as the panel and the speakerphone's buttons set them."""

    model_config = ConfigDict(frozen=True)

    mic_muted: bool = False
    volume: int = 50
    last_button: ButtonEvent | None = None


class DevicesState(BaseModel):
    model_config = ConfigDict(frozen=True)

    devices: tuple[DeviceStatus, ...] = ()
    profile_errors: tuple[str, ...] = ()
    audio: RoomAudio = RoomAudio()
