"""Room lifecycle: phases in order, failing services retried, never stopping the room."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from roomsystem.config import Settings
from roomsystem.daemon import Daemon
from roomsystem.errors import DeviceError, ErrorKind
from roomsystem.lifecycle import (
    HISTORY_KEPT,
    Backoff,
    LifecycleState,
    Phase,
    PhaseEntered,
    Service,
    ServiceChanged,
    ServiceState,
    ServiceStatus,
    lifecycle_in,
    lifecycle_with,
)
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
    history = running.room.lifecycle.history
    stopping = [e for e in history if isinstance(e, PhaseEntered)][-1]
    assert stopping.phase is Phase.STOPPING
    after = history[history.index(stopping) + 1 :]
    assert {(e.service, e.change) for e in after if isinstance(e, ServiceChanged)} == {
        ("recorder", "stopped"),
        ("display", "stopped"),
    }


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


def changes_of(state: LifecycleState, service: str) -> list[ServiceChanged]:
    return [e for e in state.history if isinstance(e, ServiceChanged) and e.service == service]


async def test_the_history_shows_the_phases_and_a_failure_then_the_recovery(
    daemon: Daemon,
) -> None:
    await asyncio.wait_for(daemon.room.ready.wait(), 5)
    state = await until_lifecycle(
        daemon.room.bus, lambda s: s.services[1].state is ServiceState.RUNNING
    )
    phases = [e.phase for e in state.history if isinstance(e, PhaseEntered)]
    assert phases == [Phase.CONFIG, Phase.PROFILES, Phase.DISCOVER, Phase.CONNECT, Phase.READY]
    failed, retrying, running = changes_of(state, "camera")
    assert (failed.change, failed.phase, failed.error_kind, failed.error) == (
        "failed",
        Phase.DISCOVER,
        ErrorKind.DEVICE,
        "no camera on /dev/video0",
    )
    # It failed twice the same way: one entry that counts the second time.
    assert (failed.repeats, failed.failures) == (1, 2)
    assert failed.last_at is not None
    assert failed.last_at > failed.at
    assert retrying.change == "retrying"
    assert (running.change, running.failures) == ("running", 2)
    assert failed.at <= retrying.at <= running.at
    appended = [e.at for e in state.history]
    assert appended == sorted(appended)
    # The recorder started once and never failed: it ran, and that is all.
    assert [e.change for e in changes_of(state, "recorder")] == ["running"]


T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def status(state: ServiceState, failures: int, error: str | None = None) -> ServiceStatus:
    return ServiceStatus(
        name="calendar",
        state=state,
        phase=Phase.CONNECT if error else None,
        error=error,
        error_kind=ErrorKind.PROTOCOL if error else None,
        failures=failures,
    )


def test_a_service_failing_the_same_way_again_and_again_does_not_flood_the_history() -> None:
    state = lifecycle_in(LifecycleState(services=(status(ServiceState.WAITING, 0),)), Phase.READY)
    at = T0
    for failures in range(1, 201):
        at += timedelta(seconds=3)
        failed = status(ServiceState.FAILED, failures, "bad answer from the server")
        state = lifecycle_with(state, failed, at)
        # The supervisor reports the retry time as an update of the same failure.
        state = lifecycle_with(state, failed.model_copy(update={"retry_at": at}), at)
        state = lifecycle_with(state, status(ServiceState.STARTING, failures), at)
        if failures % 2:  # and every other time it even runs for a moment before crashing
            state = lifecycle_with(state, status(ServiceState.RUNNING, failures), at)
    changes = changes_of(state, "calendar")
    assert [e.change for e in changes] == ["failed", "retrying", "running"]
    assert (changes[0].at, changes[0].repeats, changes[0].failures) == (
        T0 + timedelta(seconds=3),
        199,
        200,
    )
    assert changes[0].last_at == at
    assert len(state.history) == 4  # with the ready phase

    other = lifecycle_with(state, status(ServiceState.FAILED, 201, "certificate expired"), at)
    assert changes_of(other, "calendar")[-1].error == "certificate expired"  # a new error is news


def test_the_history_keeps_only_the_latest_entries() -> None:
    state = LifecycleState(services=(status(ServiceState.WAITING, 0),))
    for failures in range(1, 3 * HISTORY_KEPT):
        at = T0 + timedelta(seconds=failures)
        state = lifecycle_with(
            state, status(ServiceState.FAILED, failures, f"error {failures}"), at
        )
    assert len(state.history) == HISTORY_KEPT
    errors = [e.error for e in changes_of(state, "calendar")]
    assert errors[-1] == f"error {3 * HISTORY_KEPT - 1}"
    assert errors[0] == f"error {2 * HISTORY_KEPT}"
    state = lifecycle_in(state, Phase.STOPPING, at)
    assert len(state.history) == HISTORY_KEPT
    assert state.history[-1] == PhaseEntered(at=at, phase=Phase.STOPPING)
    assert lifecycle_in(state, Phase.STOPPING, at).history == state.history  # no change


def test_the_history_round_trips_through_json() -> None:
    state = lifecycle_in(LifecycleState(), Phase.READY, T0)
    state = lifecycle_with(state, status(ServiceState.FAILED, 1, "bad answer"), T0)
    assert LifecycleState.model_validate_json(state.model_dump_json()) == state
