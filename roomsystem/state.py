"""The whole room snapshot: one section per topic of the event bus."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from roomsystem.appliance.alerts import AlertsState
from roomsystem.calendar.state import CalendarState
from roomsystem.devices.state import DevicesState
from roomsystem.lifecycle import LifecycleState
from roomsystem.media.state import MediaState
from roomsystem.meeting.state import MeetingState
from roomsystem.pairing.state import PairingState
from roomsystem.sharing.state import SharingState


class RoomInfo(BaseModel):
    """Who the room is and what it runs."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    location: str
    timezone: str
    version: str
    started_at: datetime


class RoomState(BaseModel):
    """What ``GET /api/v1/state`` returns and the event stream starts with."""

    model_config = ConfigDict(frozen=True)

    room: RoomInfo
    lifecycle: LifecycleState
    devices: DevicesState
    meeting: MeetingState
    sharing: SharingState
    calendar: CalendarState
    alerts: AlertsState
    media: MediaState
    # A panel waiting to pair; panels' own tokens get it without the code.
    pairing: PairingState


TOPICS = tuple(RoomState.model_fields)
