"""The signalling protocol between the browser client and the room: strict JSON messages.

One WebSocket per participant carries JSON text messages, each an object with a ``type``.
Everything a browser sends is parsed here, and only here, into a frozen pydantic model:
an oversized message, text that is not JSON, an unknown type, a missing or extra field or a
value out of range is a `BadMessage` whose text says what was wrong and where. The site
answers it with an ``error`` message to that browser only.

Client to room: ``join``, ``answer`` (the browser's SDP answer to the room's offer),
``media`` (own mic/camera on or off), ``chat``, ``hand``, ``share``, ``leave``.
Room to client: ``joined``, ``offer``, ``event``, ``slots``, ``error``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

MAX_MESSAGE_BYTES = 64 * 1024
MAX_SDP_CHARS = 48 * 1024


class BadMessage(ValueError):
    """A message from a browser that the protocol does not allow; the text says why."""


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


Printable = Annotated[str, Field(min_length=1, max_length=64)]


class Join(_Message):
    """Ask to join: by meeting ID and passcode, or by the token of a join link."""

    type: Literal["join"]
    meeting_id: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[0-9 \-]+$")]
    name: Printable
    passcode: Annotated[str, Field(min_length=1, max_length=32)] | None = None
    token: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    invite: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    client_key: (
        Annotated[str, Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")] | None
    ) = None


class Answer(_Message):
    """The browser's answer to the room's offer."""

    type: Literal["answer"]
    sdp: Annotated[str, Field(min_length=1, max_length=MAX_SDP_CHARS)]

    @field_validator("sdp")
    @classmethod
    def _looks_like_sdp(cls, sdp: str) -> str:
        if not sdp.startswith("v=0"):
            raise ValueError("an SDP description starts with 'v=0'")
        return sdp


class MediaState(_Message):
    """The participant turned their own microphone or camera on or off."""

    type: Literal["media"]
    mic: bool | None = None
    camera: bool | None = None


class Chat(_Message):
    type: Literal["chat"]
    text: Annotated[str, Field(min_length=1, max_length=1000)]
    to: Literal["everyone", "host"] = "everyone"


class Hand(_Message):
    type: Literal["hand"]
    up: bool


class Share(_Message):
    """Start or stop sharing the screen on the content channel."""

    type: Literal["share"]
    on: bool


class Leave(_Message):
    type: Literal["leave"]


ClientMessage = Annotated[
    Join | Answer | MediaState | Chat | Hand | Share | Leave, Field(discriminator="type")
]
_CLIENT_MESSAGE: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)


def parse_client_message(raw: str | bytes) -> ClientMessage:
    """One message from a browser, or `BadMessage` saying what is wrong with it."""
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > MAX_MESSAGE_BYTES:
        raise BadMessage(f"message too large: {size} bytes, at most {MAX_MESSAGE_BYTES}")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BadMessage(f"message is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadMessage("message must be a JSON object with a 'type'")
    try:
        # The strict models check types; JSON already said what each value is.
        return _CLIENT_MESSAGE.validate_python(data)
    except ValidationError as exc:
        raise BadMessage(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False, include_input=False)[:3]:
        where = ".".join(str(part) for part in error["loc"]) or "message"
        problems.append(f"{where}: {error['msg']}")
    return "invalid message: " + "; ".join(problems)


# Messages to the browser: plain dicts built here so that their shapes live in one place.


def error_message(code: str, message: str, *, fatal: bool = False) -> dict[str, Any]:
    """``fatal``: the room has closed this participant's session (refused, removed, ...)."""
    return {"type": "error", "code": code, "message": message, "fatal": fatal}


def offer_message(sdp: str) -> dict[str, Any]:
    return {"type": "offer", "sdp": sdp}
