"""The room's event bus: typed, immutable snapshots per topic, delivered in order.

Each topic (``room``, ``lifecycle``, ``devices``, ...) holds one frozen pydantic model that
its service replaces as a whole. A subscriber first reads the current snapshot, then the
changes after it, in publication order. A subscriber that falls behind never makes memory
grow: its pending changes are coalesced per topic, so it holds at most one pending change
per topic and still converges on the latest state (``skipped`` says how many it missed).

Publishing is synchronous and must happen on the event loop's thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from pydantic import BaseModel


@dataclass(frozen=True, slots=True)
class Change:
    """A topic's new value; ``seq`` orders all changes of the bus."""

    seq: int
    topic: str
    value: BaseModel
    skipped: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every topic's value as of ``seq``."""

    seq: int
    topics: Mapping[str, BaseModel]


class StateBus:
    """Holds the current value of each topic and hands changes to subscribers."""

    def __init__(self, initial: Mapping[str, BaseModel]) -> None:
        self._values: dict[str, BaseModel] = dict(initial)
        self._seq = 0
        self._subscriptions: set[Subscription] = set()

    @property
    def seq(self) -> int:
        return self._seq

    def snapshot(self) -> Snapshot:
        return Snapshot(self._seq, MappingProxyType(dict(self._values)))

    def get(self, topic: str) -> BaseModel:
        return self._values[topic]

    def publish(self, topic: str, value: BaseModel) -> None:
        """Replace ``topic``'s value; an equal value is not a change and is not sent."""
        current = self._values.get(topic)
        if current is None:
            raise KeyError(f"unknown topic {topic!r}")
        if type(value) is not type(current):
            raise TypeError(
                f"topic {topic!r} holds {type(current).__name__}, not {type(value).__name__}"
            )
        if value == current:
            return
        self._seq += 1
        self._values[topic] = value
        change = Change(self._seq, topic, value)
        for subscription in self._subscriptions:
            subscription._offer(change)

    def subscribe(self) -> Subscription:
        """A subscription starting at the current snapshot; close it when done."""
        subscription = Subscription(self)
        self._subscriptions.add(subscription)
        return subscription

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    def _unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)


class Subscription:
    """One reader of the bus: ``snapshot`` first, then ``await next()`` for each change."""

    def __init__(self, bus: StateBus) -> None:
        self._bus = bus
        self.snapshot = bus.snapshot()
        # Insertion order is delivery order; re-inserting a topic moves it to the end,
        # because its newest change is now the latest one.
        self._pending: dict[str, Change] = {}
        self._wakeup = asyncio.Event()
        self._closed = False
        self.skipped = 0

    def _offer(self, change: Change) -> None:
        replaced = self._pending.pop(change.topic, None)
        if replaced is not None:
            missed = replaced.skipped + 1
            self.skipped += 1
            change = Change(change.seq, change.topic, change.value, missed)
        self._pending[change.topic] = change
        self._wakeup.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def next(self) -> Change:
        """The oldest pending change; waits for one. Raises `EOFError` once closed."""
        while not self._pending:
            if self._closed:
                raise EOFError("subscription closed")
            self._wakeup.clear()
            await self._wakeup.wait()
        topic = next(iter(self._pending))
        return self._pending.pop(topic)

    def close(self) -> None:
        self._closed = True
        self._bus._unsubscribe(self)
        self._wakeup.set()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aiter__(self) -> AsyncIterator[Change]:
        while True:
            try:
                yield await self.next()
            except EOFError:
                return
