"""The event bus: snapshot first, then changes in order; slow readers coalesce."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel, ConfigDict

from roomsystem.bus import StateBus


class Counter(BaseModel):
    model_config = ConfigDict(frozen=True)
    value: int = 0


class Label(BaseModel):
    model_config = ConfigDict(frozen=True)
    text: str = ""


def make_bus() -> StateBus:
    return StateBus({"counter": Counter(), "label": Label()})


async def test_a_subscriber_gets_the_snapshot_then_every_change_in_order() -> None:
    bus = make_bus()
    bus.publish("counter", Counter(value=1))
    with bus.subscribe() as subscription:
        assert subscription.snapshot.seq == 1
        assert subscription.snapshot.topics["counter"] == Counter(value=1)
        bus.publish("label", Label(text="a"))
        bus.publish("counter", Counter(value=2))
        first, second = await subscription.next(), await subscription.next()
    assert (first.seq, first.topic, first.value) == (2, "label", Label(text="a"))
    assert (second.seq, second.topic, second.value) == (3, "counter", Counter(value=2))
    assert bus.subscriber_count == 0


async def test_a_waiting_subscriber_wakes_for_a_change() -> None:
    bus = make_bus()
    with bus.subscribe() as subscription:
        waiting = asyncio.create_task(subscription.next())
        await asyncio.sleep(0)
        assert not waiting.done()
        bus.publish("counter", Counter(value=7))
        change = await asyncio.wait_for(waiting, 1)
    assert change.value == Counter(value=7)


async def test_a_slow_subscriber_holds_one_change_per_topic_and_converges() -> None:
    bus = make_bus()
    with bus.subscribe() as slow, bus.subscribe() as fast:
        seen_fast = []
        for value in range(1, 10_001):
            bus.publish("counter", Counter(value=value))
            if value == 5_000:
                bus.publish("label", Label(text="half"))
            seen_fast.append((await fast.next()).seq)
            assert slow.pending <= 2  # memory stays bounded however far it falls behind
        assert seen_fast == sorted(seen_fast)
        label, counter = await slow.next(), await slow.next()
        assert slow.pending == 0
    # Order follows each topic's latest change; the counter changed last.
    assert (label.topic, label.value) == ("label", Label(text="half"))
    assert (counter.topic, counter.value, counter.skipped) == (
        "counter",
        Counter(value=10_000),
        9_999,
    )
    assert label.seq < counter.seq == bus.seq


async def test_an_equal_value_is_not_a_change() -> None:
    bus = make_bus()
    with bus.subscribe() as subscription:
        bus.publish("counter", Counter(value=0))
        assert subscription.pending == 0
        assert bus.seq == 0


def test_a_topic_keeps_its_type() -> None:
    bus = make_bus()
    with pytest.raises(TypeError, match="holds Counter, not Label"):
        bus.publish("counter", Label(text="x"))
    with pytest.raises(KeyError, match="unknown topic"):
        bus.publish("nope", Counter())


async def test_a_closed_subscription_ends_iteration() -> None:
    bus = make_bus()
    subscription = bus.subscribe()
    bus.publish("counter", Counter(value=1))
    subscription.close()
    received = [change.seq async for change in subscription]
    assert received == [1]  # what was pending is still delivered, then the end
    bus.publish("counter", Counter(value=2))
    assert subscription.pending == 0
