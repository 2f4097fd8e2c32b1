"""Errors the room reports to people, each with the kind the lifecycle shows."""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    """What went wrong, as the API, the panel and the log name it."""

    CONFIG = "config"
    DEVICE = "device"
    PROTOCOL = "protocol"
    INTERNAL = "internal"


class RoomError(Exception):
    """An error with a message meant for a person; the CLI prints it as one line."""

    kind: ErrorKind = ErrorKind.INTERNAL
    exit_code: int = 1


class ConfigError(RoomError):
    """The configuration (file, options or state directory) cannot be used."""

    kind = ErrorKind.CONFIG
    exit_code = 2


class DeviceError(RoomError):
    """A device is missing, busy or does not answer."""

    kind = ErrorKind.DEVICE


class ProtocolError(RoomError):
    """A peer answered with something the protocol does not allow."""

    kind = ErrorKind.PROTOCOL


def error_kind(exc: BaseException) -> ErrorKind:
    """The kind to report for any exception: ours say, anything else is internal."""
    return exc.kind if isinstance(exc, RoomError) else ErrorKind.INTERNAL
