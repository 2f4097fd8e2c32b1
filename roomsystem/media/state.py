"""The ``media`` topic: the room's streams, where the display picture is, what went wrong."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class StreamStats(BaseModel):
    """One encoded-once outgoing stream, measured over the last second."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: Literal["audio", "video"]
    # A remote participant's sound or picture, forwarded to the others (not the room's own).
    forwarded: bool = False
    peers: int = 0
    fps: float = 0.0
    bitrate_bps: int = 0
    # Video: what the encoder aims for (the weakest peer's estimate within the limits).
    target_bitrate_bps: int = 0
    keyframes_forced: int = 0
    frames_dropped: int = 0
    # From the peers' RTCP receiver reports: the worst peer's latest fraction (0..1) and
    # the packets every peer reported lost, summed.
    fraction_lost: float = 0.0
    packets_lost: int = 0


class DisplayFeed(BaseModel):
    """The composed display picture in shared memory, for a display app on this machine."""

    model_config = ConfigDict(frozen=True)

    path: str
    width: int
    height: int
    frame_rate: int
    format: Literal["yuv420p"] = "yuv420p"


class MediaState(BaseModel):
    """What the media service does now."""

    model_config = ConfigDict(frozen=True)

    running: bool = False
    camera_on: bool = True
    display: DisplayFeed | None = None
    streams: tuple[StreamStats, ...] = ()
    recording: bool = False
    # The last recording that failed, and why; cleared when a recording starts fine.
    recording_error: str | None = None
