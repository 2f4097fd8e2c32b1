"""The API's OpenAPI 3.1 description, generated from the code that serves it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from roomsystem import __version__
from roomsystem.api.server import EVENTS, HEALTH, OPENAPI, PREFIX, STATE
from roomsystem.commands import Command
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
        404: "No such thing",
        409: "Not possible in the room's current state",
        413: "Body larger than api.max_body_bytes",
        415: "Body is not JSON",
        422: "Arguments do not match the schema (problems lists each)",
    }
    return {str(s): _json(ErrorBody, reasons[s]) for s in statuses}


def build_openapi(commands: Sequence[Command]) -> dict[str, Any]:
    models: list[type[BaseModel]] = [RoomState, ErrorBody, Health]
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
    for command in commands:
        paths[f"{PREFIX}/{command.path}"] = {
            "post": {
                "summary": command.summary,
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": _ref(command.arguments)}},
                },
                "responses": {
                    "200": _json(command.result, "Done"),
                    **_errors(400, 401, 404, 409, 413, 415, 422),
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
