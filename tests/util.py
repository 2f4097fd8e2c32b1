"""Helpers for tests: await a condition on the bus instead of sleeping."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from roomsystem.bus import StateBus
from roomsystem.lifecycle import LifecycleState
from roomsystem.meeting.state import MeetingPolicy

# The secure defaults, for a ``meeting`` topic in a test's own bus.
POLICY = MeetingPolicy(
    waiting_room=True,
    join_before_host=False,
    mute_on_entry=True,
    video_off_on_entry=True,
    host_only_sharing=True,
)


async def until_lifecycle(
    bus: StateBus, predicate: Callable[[LifecycleState], bool], timeout: float = 5.0
) -> LifecycleState:
    """The first lifecycle state (current or coming) for which ``predicate`` holds."""
    async with asyncio.timeout(timeout):
        with bus.subscribe() as subscription:
            state = subscription.snapshot.topics["lifecycle"]
            while True:
                assert isinstance(state, LifecycleState)
                if predicate(state):
                    return state
                change = await subscription.next()
                if change.topic == "lifecycle":
                    state = change.value
