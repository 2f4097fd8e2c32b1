"""The meeting snapshot that the meeting host publishes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class MeetingPolicy(BaseModel):
    """The security defaults new meetings start with (from the `[meeting]` settings)."""

    model_config = ConfigDict(frozen=True)

    waiting_room: bool
    join_before_host: bool
    mute_on_entry: bool
    video_off_on_entry: bool
    host_only_sharing: bool


class MeetingState(BaseModel):
    model_config = ConfigDict(frozen=True)

    in_meeting: bool = False
    policy: MeetingPolicy
