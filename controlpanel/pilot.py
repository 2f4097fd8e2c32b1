"""Drive a running panel or display from a script, through Kivy's own touch events.

With ``--pilot`` an app reads one JSON request a line on stdin and answers each with one
line ``PILOT {json}`` on stdout (Kivy's log goes to stderr). The requests run on Kivy's
clock, so they see exactly what a person would: a tap lands on the widget's centre as a
touch down and up, and fails if the widget is hidden or disabled.

`PilotProcess` is the other end, for tests and benchmarks: it starts an app in a
subprocess with an offscreen window and sends requests.

Requests (``op``): ``tap`` {name}; ``info`` {name}; ``wait`` {name, contains | not_contains,
timeout}; ``wait_state`` {path, equals, timeout}; ``wait_connected`` {connected, timeout};
``tap_rtt`` {name, path, timeout}; ``screen`` {}; ``screenshot`` {path}; ``targets`` {};
``video`` {name} (frames a `SharedVideo` showed and their latencies); ``quit`` {}.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPLY_PREFIX = "PILOT "
POLL_S = 0.005


def state_value(snapshot: Mapping[str, Any], path: str) -> Any:
    """``devices.audio.mic_muted`` looked up in a snapshot; None where it is missing."""
    value: Any = snapshot
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


class PilotServer:
    """Runs inside the app: reads requests on a thread, executes them on Kivy's clock."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._reader = threading.Thread(target=self._read, name="pilot-stdin", daemon=True)

    def start(self) -> None:
        self._reader.start()

    def _read(self) -> None:
        from kivy.clock import Clock

        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                request = json.loads(line)
            except ValueError as exc:
                self._reply({"ok": False, "error": f"not JSON: {exc}"})
                continue
            Clock.schedule_once(lambda dt, request=request: self._handle(request), 0)
        Clock.schedule_once(lambda dt: self.app.stop(), 0)

    def _reply(self, body: Mapping[str, Any]) -> None:
        sys.stdout.write(REPLY_PREFIX + json.dumps(body) + "\n")
        sys.stdout.flush()

    def _handle(self, request: Mapping[str, Any]) -> None:
        op = request.get("op")
        handler = getattr(self, f"_op_{op}", None)
        if handler is None:
            self._reply({"ok": False, "error": f"unknown op {op!r}"})
            return
        try:
            handler(request)
        except (KeyError, ValueError, TypeError, AttributeError, OSError) as exc:
            self._reply({"ok": False, "error": f"{op}: {type(exc).__name__}: {exc}"})

    def _widget(self, name: str) -> Any:
        widget = self.app.named.get(name)
        if widget is None:
            raise KeyError(f"no widget named {name!r}")
        return widget

    def _describe(self, widget: Any) -> dict[str, Any]:
        x, y = widget.to_window(*widget.pos)
        return {
            "text": str(getattr(widget, "text", "")),
            "disabled": bool(widget.disabled),
            "size": [widget.width, widget.height],
            "pos": [x, y],
            "shown": self._shown(widget),
        }

    def _shown(self, widget: Any) -> bool:
        """Attached to the window and on the current screen, not hidden or zero-sized."""
        from kivy.core.window import Window
        from kivy.uix.screenmanager import Screen

        node = widget
        while node is not None and node is not Window:
            if getattr(node, "opacity", 1) == 0:
                return False
            if isinstance(node, Screen) and node.manager and node.manager.current != node.name:
                return False
            parent = node.parent
            if parent is None:
                return node is Window or node is self.app.root
            node = parent
        return widget.width > 0 and widget.height > 0

    def _op_info(self, request: Mapping[str, Any]) -> None:
        self._reply({"ok": True, **self._describe(self._widget(request["name"]))})

    def _op_video(self, request: Mapping[str, Any]) -> None:
        video = self._widget(request["name"])
        self._reply(
            {
                "ok": True,
                "source": str(video.source) if video.source else None,
                "shown": video.shown,
                "latencies_ms": list(video.latencies_ms),
                "on_screen": self._shown(video),
            }
        )

    def _op_screen(self, request: Mapping[str, Any]) -> None:
        manager = getattr(self.app, "manager", None)
        self._reply(
            {
                "ok": True,
                "screen": manager.current if manager else None,
                "connected": self.app.client.state.connected,
                "banner": getattr(self.app, "banner_text", ""),
            }
        )

    def _tap(self, widget: Any) -> None:
        from kivy.tests.common import UnitTestTouch

        if widget.disabled or not self._shown(widget):
            raise ValueError(f"cannot tap: {self._describe(widget)}")
        x, y = widget.to_window(widget.center_x, widget.center_y)
        touch = UnitTestTouch(x, y)
        touch.touch_down()
        touch.touch_up()

    def _op_wait_connected(self, request: Mapping[str, Any]) -> None:
        wanted = bool(request.get("connected", True))
        self._poll(
            lambda: self.app.client.state.connected == wanted,
            float(request.get("timeout", 10)),
            lambda _: {},
            f"connected == {wanted}",
        )

    def _op_tap(self, request: Mapping[str, Any]) -> None:
        self._tap(self._widget(request["name"]))
        self._reply({"ok": True, "t": time.monotonic()})

    def _poll(
        self,
        done: Callable[[], Any],
        timeout: float,
        on_done: Callable[[Any], Mapping[str, Any]],
        what: str,
    ) -> None:
        """Check ``done`` every frame until it is truthy or ``timeout`` passes."""
        from kivy.clock import Clock

        deadline = time.monotonic() + timeout

        def check(dt: float) -> bool:
            result = done()
            if result:
                self._reply({"ok": True, **on_done(result)})
                return False
            if time.monotonic() > deadline:
                self._reply({"ok": False, "error": f"timed out waiting for {what}"})
                return False
            return True

        if check(0):
            Clock.schedule_interval(check, 0)

    def _op_wait(self, request: Mapping[str, Any]) -> None:
        """Wait until the widget exists, is shown and its text matches."""
        name = request["name"]
        contains = request.get("contains")
        absent = request.get("not_contains")

        def done() -> Any:
            widget = self.app.named.get(name)
            if widget is None or not self._shown(widget):
                return None
            text = str(widget.text)
            matches = (contains is None or contains in text) and (
                absent is None or absent not in text
            )
            return widget if matches else None

        self._poll(done, float(request.get("timeout", 5)), self._describe, str(request))

    def _op_wait_state(self, request: Mapping[str, Any]) -> None:
        path, expected = request["path"], request.get("equals")

        def done() -> bool:
            return state_value(self.app.state.snapshot, path) == expected

        self._poll(done, float(request.get("timeout", 5)), lambda _: {}, f"{path} == {expected}")

    def _op_tap_rtt(self, request: Mapping[str, Any]) -> None:
        """Tap, then time until the room's changed state is on the widgets (``ms``) and
        until the next frame after that (``frame_ms``, which includes drawing it)."""
        widget = self._widget(request["name"])
        path = request["path"]
        before = state_value(self.app.state.snapshot, path)
        rendered: list[float] = []

        def listener(state: Any) -> None:
            # Listeners run in order: the app's own render has run when this one does.
            if not rendered and state_value(state.snapshot, path) != before:
                rendered.append(time.perf_counter())

        self.app.client.add_listener(listener)
        started = time.perf_counter()
        self._tap(widget)

        def done(found: Any) -> Mapping[str, Any]:
            self.app.client.remove_listener(listener)
            return {
                "ms": (rendered[0] - started) * 1000,
                "frame_ms": (time.perf_counter() - started) * 1000,
            }

        self._poll(lambda: bool(rendered), float(request.get("timeout", 5)), done, path)

    def _op_screenshot(self, request: Mapping[str, Any]) -> None:
        from kivy.core.window import Window

        target = Path(request["path"])
        target.parent.mkdir(parents=True, exist_ok=True)
        made = Window.screenshot(name=str(target.with_suffix("")) + "%(counter)04d.png")
        os.replace(made, target)
        self._reply({"ok": True, "path": str(target), "size": list(Window.size)})

    def _op_targets(self, request: Mapping[str, Any]) -> None:
        """Every shown, enabled-or-not button smaller than ``min`` pixels either way."""
        from kivy.uix.button import Button

        smallest = float(request.get("min", 48))
        small = [
            {"text": w.text, "size": [w.width, w.height]}
            for w in self.app.root.walk(restrict=False)
            if isinstance(w, Button) and self._shown(w) and min(w.size) < smallest
        ]
        count = sum(
            1
            for w in self.app.root.walk(restrict=False)
            if isinstance(w, Button) and self._shown(w)
        )
        self._reply({"ok": True, "small": small, "buttons": count})

    def _op_quit(self, request: Mapping[str, Any]) -> None:
        self._reply({"ok": True})
        self.app.stop()


def offscreen_environment(kivy_home: Path) -> dict[str, str]:
    """Environment for an app with no screen: SDL's offscreen driver, a private Kivy home."""
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    env.update(
        SDL_VIDEODRIVER="offscreen",
        KIVY_NO_ARGS="1",
        KIVY_HOME=str(kivy_home),
        KIVY_NO_FILELOG="1",
        PYTHONUNBUFFERED="1",
    )
    return env


class PilotError(Exception):
    """The app refused or failed a request; the message says what and why."""


class PilotProcess:
    """An app in a subprocess, driven over its pilot channel (asyncio)."""

    def __init__(self, module: str, args: Sequence[str], kivy_home: Path) -> None:
        self.module = module
        self.args = list(args)
        self.kivy_home = kivy_home
        self.process: asyncio.subprocess.Process | None = None
        self.log = bytearray()
        self._stderr_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.kivy_home.mkdir(parents=True, exist_ok=True)
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            self.module,
            *self.args,
            "--pilot",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=offscreen_environment(self.kivy_home),
        )
        self._stderr_task = asyncio.create_task(self._collect_stderr())

    async def _collect_stderr(self) -> None:
        assert self.process is not None
        assert self.process.stderr is not None
        while chunk := await self.process.stderr.read(4096):
            self.log += chunk

    async def request(self, op: str, timeout: float = 15, **fields: Any) -> dict[str, Any]:
        """Send one request and return its answer; raises `PilotError` on a refusal."""
        process = self.process
        assert process is not None
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.write((json.dumps({"op": op, **fields}) + "\n").encode())
        await process.stdin.drain()
        async with asyncio.timeout(timeout):
            while True:
                line = await process.stdout.readline()
                if not line:
                    raise PilotError(f"the app exited; its log:\n{self.log.decode()[-3000:]}")
                text = line.decode().strip()
                if text.startswith(REPLY_PREFIX):
                    reply: dict[str, Any] = json.loads(text[len(REPLY_PREFIX) :])
                    if not reply.get("ok"):
                        raise PilotError(str(reply.get("error")))
                    return reply

    async def stop(self) -> int:
        """Ask the app to quit; kill it if it does not; returns its exit status."""
        process = self.process
        if process is None:
            return 0
        if process.returncode is None:
            with contextlib.suppress(PilotError, ConnectionError, TimeoutError, AssertionError):
                await self.request("quit", timeout=5)
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._stderr_task is not None:
            await self._stderr_task
        return process.returncode or 0
