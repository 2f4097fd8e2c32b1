"""Commands: what the panel, the display and admin tools can ask the room to do.

A service declares each command with a pydantic model for its arguments and one for its
result; the API turns each into ``POST /api/v1/<path>``, validates the JSON body against
the model and documents both in its OpenAPI file.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict


class Arguments(BaseModel):
    """Base of command argument models: strict, and unknown fields are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class NoArguments(Arguments):
    pass


class CommandError(Exception):
    """A command that cannot be done now; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Command:
    path: str
    summary: str
    arguments: type[Arguments]
    result: type[BaseModel]
    handler: Callable[[Any], Awaitable[BaseModel]]
