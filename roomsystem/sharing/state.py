"""The sharing snapshot that the sharing service publishes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SharingState(BaseModel):
    model_config = ConfigDict(frozen=True)

    active: bool = False
    sharer: str | None = None
