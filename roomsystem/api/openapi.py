"""The API's OpenAPI 3.1 description, generated from the code that serves it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from roomsystem import __version__
from roomsystem.api.server import (
    EVENTS,
    HEALTH,
    MAIN_TOKEN_PATHS,
    OPENAPI,
    PAIRING_COMPLETE,
    PAIRING_REQUEST,
    PANELS,
    PREFIX,
    STATE,
)
from roomsystem.commands import Command
from roomsystem.pairing.service import (
    PairingCompleteArgs,
    PairingGranted,
    PairingRequestArgs,
    PairingTicket,
    PanelList,
)
from roomsystem.state import RoomState

REF = "#/components/schemas/{model}"


class ErrorDetail(BaseModel):
    status: int
    message: str


class ErrorBody(BaseModel):
    """Every error the API answers with."""

    error: ErrorDetail


class Health(BaseModel):
    phase: str
    ready: bool
    degraded: bool
    version: str


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "Malformed request (the message says what)",
        401: "Missing or wrong bearer token",
        403: "Refused: a panel's token where the main token is needed, or a wrong pairing code",
        404: "No such thing",
        409: "Not possible in the room's current state",
        413: "Body larger than api.max_body_bytes",
        415: "Body is not JSON",
        422: "Arguments do not match the schema (problems lists each)",
        429: "Too many wrong pairing codes; retry_after_s (and Retry-After) say when to retry",
        503: "The room cannot save the pairing now (its state directory); try again",
    }
    return {str(s): _json(ErrorBody, reasons[s]) for s in statuses}


def build_openapi(commands: Sequence[Command]) -> dict[str, Any]:
    models: list[type[BaseModel]] = [RoomState, ErrorBody, Health, *_PAIRING_MODELS]
    for command in commands:
        models += [command.arguments, command.result]
    _, schema = models_json_schema([(m, "serialization") for m in models], ref_template=REF)
    paths: dict[str, Any] = {
        HEALTH: {
            "get": {
                "summary": "Lifecycle phase and version; needs no token.",
                "security": [],
                "responses": {"200": _json(Health, "The room answers")},
            }
        },
        STATE: {
            "get": {
                "summary": "The whole room snapshot. The ETag is the event sequence number.",
                "responses": {"200": _json(RoomState, "The snapshot"), **_errors(401)},
            }
        },
        EVENTS: {
            "get": {
                "summary": (
                    "WebSocket. The first message is {type: snapshot, seq, state}; then each "
                    "change as {type: change, seq, topic, data, skipped}, in seq order. A slow "
                    "reader gets the latest value per topic; skipped counts what it missed. "
                    "Browsers may pass the token as ?access_token=."
                ),
                "responses": {"101": {"description": "Switching to WebSocket"}, **_errors(401)},
            }
        },
        OPENAPI: {
            "get": {
                "summary": "This document.",
                "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1 document"}},
            }
        },
    }
    paths |= _pairing_paths()
    for command in commands:
        path = f"{PREFIX}/{command.path}"
        refusals = (403,) if path in MAIN_TOKEN_PATHS else ()
        paths[path] = {
            "post": {
                "summary": command.summary,
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": _ref(command.arguments)}},
                },
                "responses": {
                    "200": _json(command.result, "Done"),
                    **_errors(400, 401, *refusals, 404, 409, 413, 415, 422),
                },
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "roomsystem local API", "version": __version__},
        "components": {
            "schemas": schema.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }


_PAIRING_MODELS: list[type[BaseModel]] = [
    PairingRequestArgs,
    PairingTicket,
    PairingCompleteArgs,
    PairingGranted,
    PanelList,
]


def _post(summary: str, arguments: type[BaseModel], result: type[BaseModel]) -> dict[str, Any]:
    return {
        "summary": summary,
        "security": [],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref(arguments)}},
        },
    } | {"responses": {"200": _json(result, "Done")}}


def _pairing_paths() -> dict[str, Any]:
    request = _post(
        "Ask to pair a panel; needs no token. The room shows a code on its display for "
        "2 minutes. One request at a time: another address gets 409 with retry_after_s "
        "(the same address replaces its own).",
        PairingRequestArgs,
        PairingTicket,
    )
    request["responses"] |= _errors(400, 409, 413, 415, 422, 429)
    complete = _post(
        "Send the code from the room display; needs no token. The right code answers with "
        "the panel's own token (shown this once). A wrong one gets 403 with attempts_left; "
        "the last wrong one voids the request (404 after that).",
        PairingCompleteArgs,
        PairingGranted,
    )
    complete["responses"] |= _errors(400, 403, 404, 413, 415, 422, 429, 503)
    panels = {
        "summary": "The paired panels (never their tokens). Main token only.",
        "responses": {"200": _json(PanelList, "The paired panels"), **_errors(401, 403)},
    }
    return {
        PAIRING_REQUEST: {"post": request},
        PAIRING_COMPLETE: {"post": complete},
        PANELS: {"get": panels},
    }
