"""The sharing snapshot that the sharing service publishes."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict


class SharingState(BaseModel):
    """Who shares, and what people in the room need to share (the key is shown only there)."""

    model_config = ConfigDict(frozen=True)

    active: bool = False
    sharer: str | None = None
    # Address the share comes from, for the admin; the panel shows the name.
    address: str | None = None
    since: datetime | None = None
    session: str | None = None
    key: str = ""
    key_required: bool = True
    key_rotates_at: datetime | None = None
    share_url: str = ""
    takeover: Literal["allow", "confirm"] = "allow"
    # Someone asks to take over and the panel has to accept (takeover = "confirm").
    pending_sharer: str | None = None
    # The share is also sent to the meeting that runs now.
    in_meeting: bool = False
    advertised_name: str | None = None
    advertising: bool = False
    enabled: bool = True
