"""What pairing publishes: the ``pairing`` topic and the paired panels as the API lists them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class PairingState(BaseModel):
    """A panel waiting to be paired, and the code the room display shows for it.

    The topic only reaches clients that hold a token; panels get it without the code.
    """

    model_config = ConfigDict(frozen=True)

    pending: bool = False
    code: str | None = None
    panel_name: str | None = None
    # Where the request came from, so people in the room can tell a stranger's request.
    address: str | None = None
    expires_at: datetime | None = None
    attempts_left: int = 0


class PanelInfo(BaseModel):
    """A paired panel, as `GET /api/v1/panels` lists it (never with its token)."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    address: str
    created_at: datetime
    last_seen: datetime | None = None
    # It follows the event stream now (the API server knows; the registry does not).
    connected: bool = False
