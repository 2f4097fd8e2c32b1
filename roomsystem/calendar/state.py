"""The calendar snapshot that the booking service publishes."""

from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict

from roomsystem.calendar.model import BookingStatus, JoinLink, StaleReason

PRIVATE_SUBJECT = "Private meeting"


class BookingEntry(BaseModel):
    """A booking as the panel and the display show it (private details already removed)."""

    model_config = ConfigDict(frozen=True)

    id: str
    subject: str
    organizer: str = ""
    attendees: tuple[str, ...] = ()
    start: AwareDatetime
    end: AwareDatetime
    private: bool = False
    all_day: bool = False
    status: BookingStatus = BookingStatus.CONFIRMED
    series_id: str | None = None
    checked_in: bool = False
    walk_up: bool = False
    # From when check-in is possible, and when the booking is released without it
    # (None: it is not released, because release is off or someone checked in).
    checkin_from: AwareDatetime | None = None
    release_at: AwareDatetime | None = None
    join_links: tuple[JoinLink, ...] = ()


class CalendarState(BaseModel):
    model_config = ConfigDict(frozen=True)

    backend: str | None = None
    synced_at: datetime | None = None
    stale_reason: StaleReason | None = None
    stale: bool = False
    stale_message: str | None = None
    bookings: tuple[BookingEntry, ...] = ()
    current: str | None = None
    next: str | None = None
    free_until: AwareDatetime | None = None
