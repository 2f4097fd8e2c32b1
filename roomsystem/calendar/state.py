"""The calendar snapshot that the booking service publishes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class CalendarState(BaseModel):
    model_config = ConfigDict(frozen=True)

    backend: str | None = None
    synced_at: datetime | None = None
    stale_reason: str | None = None
