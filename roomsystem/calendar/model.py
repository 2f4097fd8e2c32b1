"""The Booking model that every calendar backend produces, and what can go wrong syncing."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from roomsystem.errors import ErrorKind, RoomError


class BookingStatus(StrEnum):
    TENTATIVE = "tentative"
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"


JoinKind = Literal["room", "zoom", "teams", "meet", "webex", "jitsi"]


class JoinLink(BaseModel):
    """A meeting link found in a booking's location or body."""

    model_config = ConfigDict(frozen=True)

    kind: JoinKind
    url: str


class Booking(BaseModel):
    """One booked slot of the room; for a recurring series, one occurrence of it."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1)
    subject: str = ""
    organizer: str = ""
    attendees: tuple[str, ...] = ()
    start: AwareDatetime
    end: AwareDatetime
    location: str = ""
    private: bool = False
    all_day: bool = False
    status: BookingStatus = BookingStatus.CONFIRMED
    series_id: str | None = None
    occurrence: AwareDatetime | None = None
    checked_in: bool = False
    join_links: tuple[JoinLink, ...] = ()

    @model_validator(mode="after")
    def _ends_after_start(self) -> Booking:
        if self.end <= self.start:
            raise ValueError(f"booking {self.id!r} ends ({self.end}) before it starts")
        return self

    def overlaps(self, start: datetime, end: datetime) -> bool:
        return self.start < end and start < self.end


class StaleReason(StrEnum):
    """Why the agenda shown is not the calendar's latest."""

    AUTH = "auth_failed"
    UNREACHABLE = "server_unreachable"
    THROTTLED = "throttled"
    TIMEOUT = "timeout"
    BAD_RESPONSE = "bad_response"
    TOO_MANY = "too_many_bookings"
    NOT_SYNCED = "not_synced_yet"


class CalendarError(RoomError):
    """A calendar backend could not do what was asked; ``reason`` says why for the panel."""

    kind = ErrorKind.PROTOCOL

    def __init__(
        self, reason: StaleReason, message: str, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after_s = retry_after_s
