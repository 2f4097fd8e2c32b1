"""What every display driver offers (Samsung MDC, PJLink, NEC, LG, CEC), whatever its wire."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class DisplayStatus:
    """A display's state as its driver read it; None where the protocol cannot tell."""

    power: bool
    input_source: str | None = None
    volume: int | None = None
    muted: bool | None = None


class DisplayControl(Protocol):
    """A display (TV, monitor or projector) the room can switch on, off and between inputs.

    Input names are the room's (``"hdmi1"``, ``"hdmi2"``, ``"displayport1"``, ...); each
    driver maps them to its protocol's codes and raises `ValueError` for a name it lacks.
    """

    async def status(self) -> DisplayStatus: ...

    async def set_power(self, on: bool) -> None: ...

    async def set_input_source(self, name: str) -> None: ...

    async def set_volume(self, level: int) -> None: ...

    async def set_mute(self, on: bool) -> None: ...

    async def close(self) -> None: ...
