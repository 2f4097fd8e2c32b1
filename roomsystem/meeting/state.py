"""The meeting snapshot that the meeting host publishes.

Everything the touch panel shows and needs to act on is here, so the panel stays a thin
client: the meeting's id, passcode and join link, its flags, every participant (waiting
room included) and the latest chat messages.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

CHAT_IN_SNAPSHOT = 20


class MeetingPolicy(BaseModel):
    """The security defaults new meetings start with (from the `[meeting]` settings)."""

    model_config = ConfigDict(frozen=True)

    waiting_room: bool
    join_before_host: bool
    mute_on_entry: bool
    video_off_on_entry: bool
    host_only_sharing: bool


class ParticipantInfo(BaseModel):
    """One remote participant as the room sees them."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    role: Literal["participant", "co_host", "alternative_host"]
    waiting: bool
    muted: bool
    video: bool
    hand: bool
    can_share: bool
    joined_at: datetime


class ChatEntry(BaseModel):
    """A chat message; ``to`` is "everyone", "host" or the participant the room wrote to."""

    model_config = ConfigDict(frozen=True)

    at: datetime
    sender_id: str
    sender_name: str
    to: str
    text: str


class MeetingState(BaseModel):
    model_config = ConfigDict(frozen=True)

    in_meeting: bool = False
    id: str = ""
    passcode: str = ""
    join_url: str = ""
    booking_id: str | None = None
    started_at: datetime | None = None
    locked: bool = False
    recording: bool = False
    sharing: Literal["host_only", "everyone"] = "host_only"
    authenticated_only: bool = False
    policy: MeetingPolicy
    participants: tuple[ParticipantInfo, ...] = ()
    waiting_count: int = 0
    chat_count: int = 0
    chat: tuple[ChatEntry, ...] = ()
