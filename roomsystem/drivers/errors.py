"""The errors every driver raises; callers catch `DriverError`."""

from __future__ import annotations


class DriverError(Exception):
    """Talking to a device failed."""


class FrameError(DriverError):
    """Bytes that the protocol does not allow: garbage, truncated, wrong checksum."""


class DeviceRejected(DriverError):
    """The device answered with an error or NAK; ``code`` is its error code if it gave one."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class DeviceTimeout(DriverError):
    """The device did not answer in time."""


class LinkClosed(DriverError):
    """The connection to the device is gone (unplugged, closed by the peer)."""
