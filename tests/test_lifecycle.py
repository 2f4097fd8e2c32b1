"""Room lifecycle: phases in order, failing services retried, never stopping the room."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from roomsystem.config import Settings
from roomsystem.daemon import Daemon
from roomsystem.errors import DeviceError, ErrorKind
from roomsystem.lifecycle import Backoff, LifecycleState, Phase, Service, ServiceState
from tests.conftest import only
from tests.util import until_lifecycle


class Recorder(Service):
    """Records the phases it was asked to set up, in order."""

    name = "recorder"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.closed = 0

    async def setup(self, phase: Phase) -> None:
        self.calls.append(phase)

    async def close(self) -> None:
        self.closed += 1


class FailsInDiscover(Service):
    """A camera that is missing for the first ``failures`` attempts."""

    name = "camera"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0
        self.closed = 0

    async def setup(self, phase: Phase) -> None:
        if phase is Phase.DISCOVER:
            self.attempts += 1
            if self.attempts <= self.failures:
                raise DeviceError("no camera on /dev/video0")

    async def close(self) -> None:
        self.closed += 1


class CrashesWhileRunning(Service):
    name = "calendar"

    def __init__(self) -> None:
        self.runs = 0

    async def run(self) -> None:
        self.runs += 1
        if self.runs == 1:
            raise ValueError("bad data from the server")
        await asyncio.Event().wait()


class HangsInConnect(Service):
    name = "display"

    async def setup(self, phase: Phase) -> None:
        if phase is Phase.CONNECT:
            await asyncio.Event().wait()


@pytest.fixture
def services() -> list[Service]:
    return [Recorder(), FailsInDiscover(failures=2), CrashesWhileRunning()]


async def test_phases_are_reported_in_order_and_each_service_does_its_part(daemon: Daemon) -> None:
    phases: list[Phase] = []
    with daemon.room.bus.subscribe() as subscription:
        phases.append(subscription.snapshot.topics["lifecycle"].phase)  # type: ignore[attr-defined]
        while phases[-1] is not Phase.READY:
            change = await asyncio.wait_for(subscription.next(), 5)
            if isinstance(change.value, LifecycleState) and change.value.phase != phases[-1]:
                phases.append(change.value.phase)
    order = [Phase.CONFIG, Phase.PROFILES, Phase.DISCOVER, Phase.CONNECT, Phase.READY]
    assert phases == order[order.index(phases[0]) :]
    recorder = daemon.room.services[0]
    assert isinstance(recorder, Recorder)
    assert recorder.calls == ["profiles", "discover", "connect"]


async def test_a_failing_service_is_reported_retried_and_recovers(daemon: Daemon) -> None:
    failed = await until_lifecycle(
        daemon.room.bus, lambda s: s.services[1].state is ServiceState.FAILED
    )
    camera = failed.services[1]
    assert (camera.error, camera.error_kind, camera.phase) == (
        "no camera on /dev/video0",
        ErrorKind.DEVICE,
        Phase.DISCOVER,
    )
    recovered = await until_lifecycle(
        daemon.room.bus, lambda s: s.services[1].state is ServiceState.RUNNING
    )
    assert recovered.services[1].failures == 2
    assert recovered.services[1].error is None
    service = daemon.room.services[1]
    assert isinstance(service, FailsInDiscover)
    assert service.attempts == 3
    assert service.closed == 2  # each failure released what the attempt took


async def test_the_room_gets_ready_while_a_service_still_fails(daemon: Daemon) -> None:
    await asyncio.wait_for(daemon.room.ready.wait(), 5)
    await until_lifecycle(daemon.room.bus, lambda s: s.phase is Phase.READY)


async def test_a_service_that_crashes_while_running_is_restarted(daemon: Daemon) -> None:
    state = await until_lifecycle(
        daemon.room.bus,
        lambda s: s.services[2].state is ServiceState.RUNNING and s.services[2].failures == 1,
    )
    assert state.services[2].error is None
    crashing = daemon.room.services[2]
    assert isinstance(crashing, CrashesWhileRunning)
    assert crashing.runs == 2


async def test_stop_closes_every_service(settings: Settings) -> None:
    recorder = Recorder()
    running = Daemon(settings, only(recorder, HangsInConnect()))
    await running.start()
    await until_lifecycle(running.room.bus, lambda s: s.services[1].phase is Phase.CONNECT)
    await running.stop()
    assert recorder.closed == 1
    assert [s.state for s in running.room.lifecycle.services] == [ServiceState.STOPPED] * 2


async def test_a_service_that_hangs_in_setup_times_out_and_does_not_block_ready(
    settings: Settings,
) -> None:
    settings = settings.model_copy(
        update={"lifecycle": settings.lifecycle.model_copy(update={"setup_timeout_s": 0.2})}
    )
    running = Daemon(settings, only(HangsInConnect()))
    await running.start()
    try:
        await asyncio.wait_for(running.room.ready.wait(), 5)
        display = running.room.lifecycle.services[0]
        assert display.state is ServiceState.FAILED
        assert display.error == "connect took longer than 0.2 s"
        assert display.error_kind is ErrorKind.INTERNAL
    finally:
        await running.stop()


async def test_retry_command_cuts_the_backoff_short(settings: Settings) -> None:
    settings = settings.model_copy(
        update={
            "lifecycle": settings.lifecycle.model_copy(
                update={"retry_initial_s": 60, "retry_max_s": 60}
            )
        }
    )
    camera = FailsInDiscover(failures=1)
    running = Daemon(settings, only(camera))
    await running.start()
    headers = {"Authorization": f"Bearer {running.room.api_token}"}
    try:
        await until_lifecycle(
            running.room.bus, lambda s: s.services[0].state is ServiceState.FAILED
        )
        async with aiohttp.ClientSession(running.url, headers=headers) as client:
            async with client.post(
                "/api/v1/services/retry", json={"service": "camera"}
            ) as response:
                assert response.status == 200
                assert await response.json() == {"service": "camera", "state": "failed"}
            await until_lifecycle(
                running.room.bus, lambda s: s.services[0].state is ServiceState.RUNNING
            )
            async with client.post(
                "/api/v1/services/retry", json={"service": "camera"}
            ) as response:
                assert response.status == 409
                assert "has not failed" in (await response.json())["error"]["message"]
            async with client.post("/api/v1/services/retry", json={"service": "ghost"}) as response:
                assert response.status == 404
                assert (await response.json())["error"][
                    "message"
                ] == "no service 'ghost' (services: camera)"
    finally:
        await running.stop()


def test_backoff_doubles_up_to_its_maximum_and_resets() -> None:
    backoff = Backoff(1.0, 5.0)
    delays = [backoff.next_delay() for _ in range(5)]
    for delay, nominal in zip(delays, [1, 2, 4, 5, 5], strict=True):
        assert nominal * 0.9 <= delay <= nominal * 1.1
    backoff.reset()
    assert backoff.next_delay() <= 1.1
