"""Speakerphone buttons: one reader per input node of a device whose profile maps keys.

A reader that loses its node (unplugged, or the kernel dropped it) tries again after a
pause for as long as the device is there; discovery stops it when the device is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping

from evdev import InputDevice

from roomsystem.drivers.errors import LinkClosed
from roomsystem.drivers.hid import ButtonMapper, ButtonPress, ButtonReader, KeyEventSource

logger = logging.getLogger(__name__)

InputOpener = Callable[[str], KeyEventSource]


def open_input_device(path: str) -> KeyEventSource:
    try:
        return InputDevice(path)
    except OSError as exc:
        raise LinkClosed(f"cannot open {path}: {exc.strerror or exc}") from None


class ButtonWatcher:
    """Runs the button readers of the room's devices; ``on_press(device_id, press)``."""

    def __init__(
        self,
        on_press: Callable[[str, ButtonPress], None],
        retry_s: float,
        open_input: InputOpener = open_input_device,
    ) -> None:
        self._on_press = on_press
        self._retry_s = retry_s
        self._open = open_input
        self._tasks: dict[str, list[asyncio.Task[None]]] = {}

    def watching(self, device_id: str) -> bool:
        return device_id in self._tasks

    def watch(self, device_id: str, nodes: tuple[str, ...], keys: Mapping[str, str]) -> None:
        """Read ``nodes`` of ``device_id``, mapping evdev key names to actions with ``keys``."""
        if device_id in self._tasks or not nodes or not keys:
            return
        self._tasks[device_id] = [
            asyncio.create_task(self._read(device_id, node, keys), name=f"buttons:{node}")
            for node in nodes
        ]

    async def forget(self, device_id: str) -> None:
        tasks = self._tasks.pop(device_id, [])
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        for device_id in list(self._tasks):
            await self.forget(device_id)

    async def _read(self, device_id: str, node: str, keys: Mapping[str, str]) -> None:
        mapper = ButtonMapper(keys)
        failures = 0
        while True:
            reader: ButtonReader | None = None
            try:
                source = self._open(node)
                reader = ButtonReader(
                    source, mapper, lambda press: self._on_press(device_id, press), name=node
                )
                await reader.run()
            except LinkClosed as exc:
                failures += 1
                # Loud once, then quiet: a node that stays broken must not flood the log.
                log = logger.warning if failures == 1 else logger.debug
                log("buttons of %s: %s; trying again", device_id, exc)
            finally:
                if reader is not None:
                    reader.close()
            await asyncio.sleep(self._retry_s)
