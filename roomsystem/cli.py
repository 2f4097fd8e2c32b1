"""The ``roomsystem`` command: run the daemon or the demo room, and ask it how it is."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from roomsystem import __version__, simulate
from roomsystem.appliance import cli as appliance_cli
from roomsystem.appliance.journal import use_journal_levels
from roomsystem.bus import StateBus
from roomsystem.config import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_LISTEN,
    DEFAULT_STATE_DIR,
    Settings,
    demo_settings,
    load_settings,
    split_listen,
)
from roomsystem.daemon import Daemon
from roomsystem.demo import DemoDevices, demo_web_settings
from roomsystem.devices.profiles import DEFAULT_PROFILES_DIR, check_profiles
from roomsystem.errors import ConfigError, RoomError
from roomsystem.lifecycle import LifecycleState, ServiceState
from roomsystem.sharing.state import SharingState
from roomsystem.statedir import StateDir, read_endpoint

logger = logging.getLogger("roomsystem")


def demo_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "roomsystem-demo"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    use_journal_levels()
    try:
        result: int = args.func(args)
        return result
    except RoomError as exc:
        if args.debug:
            logger.exception("failed")
        print(f"roomsystem: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="roomsystem", description="Open, self-hosted conference room appliance."
    )
    parser.add_argument("--version", action="version", version=f"roomsystem {__version__}")
    parser.add_argument("--debug", action="store_true", help="log everything, with tracebacks")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the room daemon")
    run.add_argument(
        "--config", type=Path, help=f"configuration file (default {DEFAULT_CONFIG_PATH})"
    )
    run.add_argument("--state-dir", type=Path, help="state directory (default: from the config)")
    run.add_argument("--http", metavar="HOST:PORT", help="API address (default: from the config)")
    run.set_defaults(func=_run)

    demo = commands.add_parser("demo", help="run a whole demo room on this machine")
    demo.add_argument("--http", metavar="HOST:PORT", default=DEFAULT_LISTEN, help="API address")
    demo.add_argument(
        "--state-dir", type=Path, help=f"state directory (default {demo_state_dir()})"
    )
    demo.add_argument(
        "--no-screens",
        action="store_true",
        help="do not open the touch panel and the room display, even with a screen",
    )
    demo.set_defaults(func=_demo)

    status = commands.add_parser("status", help="show what the running room says")
    status.add_argument("--state-dir", type=Path, help="state directory of the room to ask")
    status.add_argument("--json", action="store_true", help="print the raw snapshot")
    status.set_defaults(func=_status)

    config = commands.add_parser("config", help="configuration tools")
    config_commands = config.add_subparsers(required=True, metavar="COMMAND")
    check = config_commands.add_parser("check", help="validate a configuration file")
    check.add_argument("path", nargs="?", type=Path, default=DEFAULT_CONFIG_PATH)
    check.set_defaults(func=_config_check)

    devices = commands.add_parser("devices", help="list the room's devices and their state")
    devices.add_argument("--state-dir", type=Path, help="state directory of the room to ask")
    devices.set_defaults(func=_devices)

    profiles = commands.add_parser("profiles", help="device profile tools")
    profile_commands = profiles.add_subparsers(required=True, metavar="COMMAND")
    profiles_check = profile_commands.add_parser("check", help="validate device profiles")
    profiles_check.add_argument(
        "paths", nargs="*", type=Path, help="files or folders (default: the shipped profiles)"
    )
    profiles_check.set_defaults(func=_profiles_check)

    simulate.add_parser(commands)
    appliance_cli.add_parsers(commands, fetch_state=_fetch_state)

    token = commands.add_parser("token", help="print the API bearer token")
    token.add_argument("--state-dir", type=Path, help="state directory of the room")
    token.set_defaults(func=_token)

    panels = commands.add_parser(
        "panels", help="list the paired touch panels, or unpair one (revoke NAME_OR_ID)"
    )
    panels.add_argument("action", nargs="?", choices=("list", "revoke"), default="list")
    panels.add_argument("panel", nargs="?", metavar="NAME_OR_ID", help="the panel to unpair")
    panels.add_argument("--state-dir", type=Path, help="state directory of the room to ask")
    panels.set_defaults(func=_panels)
    return parser


def _with_overrides(settings: Settings, state_dir: Path | None, listen: str | None) -> Settings:
    update: dict[str, Any] = {}
    if state_dir is not None:
        update["state_dir"] = state_dir.absolute()
    if listen is not None:
        try:
            split_listen(listen)
        except ValueError as exc:
            raise ConfigError(f"--http: {exc}") from None
        update["api"] = settings.api.model_copy(update={"listen": listen})
    return settings.model_copy(update=update)


def _run(args: argparse.Namespace) -> int:
    path: Path = args.config or DEFAULT_CONFIG_PATH
    if args.config is None and not path.exists():
        logger.info("no configuration at %s: running with the demo defaults", path)
        settings = demo_settings()
    else:
        settings = load_settings(path)
    settings = _with_overrides(settings, args.state_dir, args.http)
    logging.getLogger().setLevel(logging.DEBUG if args.debug else settings.logging.level.upper())
    return asyncio.run(_serve(settings, on_ready=None))


def _demo(args: argparse.Namespace) -> int:
    settings = _with_overrides(demo_settings(), args.state_dir or demo_state_dir(), args.http)
    settings = demo_web_settings(settings)
    return asyncio.run(_demo_room(settings, screens=not args.no_screens))


async def _demo_room(settings: Settings, screens: bool = False) -> int:
    windows = DemoScreens(screens)

    def ready(daemon: Daemon) -> None:
        _print_demo_urls(daemon)
        windows.open(daemon)

    async with DemoDevices() as simulated:
        devices = settings.devices.model_copy(update={"add": simulated.added})
        try:
            return await _serve(settings.model_copy(update={"devices": devices}), ready)
        finally:
            windows.close()


class DemoScreens:
    """The demo's touch panel and room display windows, opened when there is a screen."""

    APPS = (("panel", "controlpanel.panel"), ("display", "controlpanel.display"))

    def __init__(self, wanted: bool) -> None:
        self.wanted = wanted
        self.processes: list[subprocess.Popen[bytes]] = []

    @staticmethod
    def screen_available() -> bool:
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))

    def open(self, daemon: Daemon) -> None:
        if not (self.wanted and self.screen_available()):
            return
        token_file = daemon.settings.state_dir / "api-token"
        for name, module in self.APPS:
            command = [sys.executable, "-m", module, "--api", daemon.url]
            command += ["--token-file", str(token_file)]
            try:
                self.processes.append(subprocess.Popen(command))
            except OSError as exc:
                logger.warning("cannot open the %s: %s", name, exc)

    def close(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()


def _print_demo_urls(daemon: Daemon) -> None:
    url = daemon.url
    state_dir = daemon.settings.state_dir
    print(
        f"{daemon.settings.room.name} is ready.\n"
        f"  health  {url}/api/v1/health\n"
        f"  state   {url}/api/v1/state\n"
        f"  events  {url.replace('http', 'ws', 1)}/api/v1/events\n"
        f"  API     {url}/api/v1/openapi.json\n"
        f"  token   roomsystem token --state-dir {state_dir}\n"
        f"  status  roomsystem status --state-dir {state_dir}\n"
        f"  panel   roomsystem-panel --api {url} --token-file {state_dir / 'api-token'}\n"
        f"  display roomsystem-display --api {url} --token-file {state_dir / 'api-token'}\n"
        f"{_demo_meeting(daemon)}"
        f"{_demo_sharing(daemon)}"
        "Press Ctrl-C to stop.",
        flush=True,
    )


def _demo_meeting(daemon: Daemon) -> str:
    """Start the demo room's meeting so that the printed link works at once."""
    if daemon.web is None:
        return ""
    meeting = daemon.web.meeting.start()
    admit = f"{daemon.url}/api/v1/meeting/admit"
    return (
        f"  meeting {meeting.id}  passcode {meeting.passcode}\n"
        f"  join    {daemon.web.meeting.join_url(meeting)}\n"
        f'  admit   curl -H "Authorization: Bearer $(roomsystem token --state-dir'
        f" {daemon.settings.state_dir})\" -H 'Content-Type: application/json'"
        f" -d '{{\"all\": true}}' {admit}\n"
    )


def _demo_sharing(daemon: Daemon) -> str:
    """Where a laptop shares its screen, and the key the room's display shows."""
    sharing = daemon.room.bus.get("sharing")
    if not isinstance(sharing, SharingState) or not sharing.share_url:
        return ""
    interfaces = daemon.settings.sharing.mdns_interfaces
    listing = f" --interface {interfaces[0]}" if interfaces else ""
    return (
        f"  share   {sharing.share_url}  key {sharing.key}\n"
        f"          roomshare list{listing}; roomshare share"
        f" {shlex.quote(daemon.settings.room.name)} --key {sharing.key} --source test\n"
        f"  pair    roomsystem-panel --pair{listing}   (a panel with its own token; type the"
        " code the display shows)\n"
    )


async def _serve(settings: Settings, on_ready: Callable[[Daemon], None] | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    daemon = Daemon(settings)
    started = time.monotonic()
    progress = asyncio.create_task(_show_progress(daemon.room.bus), name="cli:progress")
    try:
        await daemon.start()
        print(f"roomsystem {__version__}: {settings.room.name}, API at {daemon.url}", flush=True)
        ready = asyncio.create_task(daemon.room.ready.wait(), name="cli:ready")
        stopping = asyncio.create_task(stop.wait(), name="cli:stop")
        await asyncio.wait({ready, stopping}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if daemon.room.ready.is_set():
            logger.info("ready in %.2f s", time.monotonic() - started)
            if on_ready is not None:
                on_ready(daemon)
        await stopping
        logger.info("stopping")
    finally:
        progress.cancel()
        await asyncio.gather(progress, return_exceptions=True)
        await daemon.stop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    return 0


async def _show_progress(bus: StateBus) -> None:
    """Log each phase and each service failure as the room starts and runs."""
    shown: dict[str, object] = {}
    with bus.subscribe() as subscription:
        while True:
            change = await subscription.next()
            if not isinstance(change.value, LifecycleState):
                continue
            if shown.get("phase") != change.value.phase:
                shown["phase"] = change.value.phase
                logger.info("phase: %s", change.value.phase)
            for service in change.value.services:
                if shown.get(service.name) != service.state:
                    shown[service.name] = service.state
                    logger.info("service %s: %s", service.name, service.state)


def _config_check(args: argparse.Namespace) -> int:
    load_settings(args.path)
    print(f"{args.path}: ok")
    return 0


def _find_state_dir(given: Path | None) -> StateDir:
    """The state dir given, else the installed room's if it runs, else the demo's."""
    if given is not None:
        return StateDir(given)
    for candidate in (DEFAULT_STATE_DIR, demo_state_dir()):
        if read_endpoint(StateDir(candidate)) is not None:
            return StateDir(candidate)
    return StateDir(DEFAULT_STATE_DIR if DEFAULT_STATE_DIR.exists() else demo_state_dir())


def _token(args: argparse.Namespace) -> int:
    print(_find_state_dir(args.state_dir).api_token())
    return 0


def _panels(args: argparse.Namespace) -> int:
    if args.action == "list":
        if args.panel:
            raise ConfigError(f"panels list takes no panel (did you mean: revoke {args.panel})")
        print(format_panels(_ask_room(args.state_dir, "panels")["panels"]))
        return 0
    if not args.panel:
        raise ConfigError("panels revoke: give the panel's name or id (roomsystem panels)")
    revoked = _ask_room(args.state_dir, "panels/revoke", {"panel": args.panel})["revoked"]
    print(f"unpaired {revoked['name']} ({revoked['id']}): its token no longer works")
    return 0


def _ask_room(given: Path | None, path: str, body: dict[str, Any] | None = None) -> Any:
    """The running room's JSON answer to ``GET path`` (``POST`` with ``body``)."""
    return _room_request(given, path, body)[0]


def _room_request(
    given: Path | None, path: str, body: dict[str, Any] | None = None
) -> tuple[Any, str]:
    """`_ask_room`'s answer, and the URL of the room that gave it."""
    state_dir = _find_state_dir(given)
    endpoint = read_endpoint(state_dir)
    if endpoint is None:
        raise RoomError(f"no room is running with state directory {state_dir.path}")
    request = urllib.request.Request(
        f"{endpoint.url}/api/v1/{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={
            "Authorization": f"Bearer {state_dir.api_token()}",
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.load(response), endpoint.url
    except urllib.error.HTTPError as exc:
        raise RoomError(_error_message(exc)) from None
    except (urllib.error.URLError, OSError) as exc:
        raise RoomError(f"cannot reach the room at {endpoint.url}: {exc}") from None


def _error_message(error: urllib.error.HTTPError) -> str:
    try:
        return str(json.load(error)["error"]["message"])
    except (ValueError, KeyError, TypeError, OSError):
        return f"the room answered {error.code}"


def format_panels(panels: list[dict[str, Any]]) -> str:
    """One line per paired panel: id, name, where from, when paired and last seen."""
    if not panels:
        return "no panels are paired (a panel pairs with the code on the room display)"
    lines = []
    for panel in panels:
        seen = "connected now" if panel.get("connected") else _ago(panel.get("last_seen"))
        lines.append(
            f"{panel['id']}  {panel['name']}  from {panel['address']}"
            f"  paired {panel['created_at'][:16].replace('T', ' ')}  {seen}"
        )
    return "\n".join(lines)


def _ago(timestamp: str | None) -> str:
    if not timestamp:
        return "never seen"
    seconds = (datetime.now(UTC) - datetime.fromisoformat(timestamp)).total_seconds()
    return f"last seen {_duration(max(0.0, seconds))} ago"


def _status(args: argparse.Namespace) -> int:
    state, url = _fetch_state(args.state_dir)
    print(json.dumps(state, indent=2) if args.json else format_status(state, url))
    return 0


def _devices(args: argparse.Namespace) -> int:
    state, _ = _fetch_state(args.state_dir)
    print(format_devices(state["devices"]))
    return 0


def _profiles_check(args: argparse.Namespace) -> int:
    paths = args.paths or [DEFAULT_PROFILES_DIR]
    problems = check_profiles(paths)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    print(f"{', '.join(str(p) for p in paths)}: ok")
    return 0


def _fetch_state(given: Path | None) -> tuple[dict[str, Any], str]:
    """The running room's snapshot, and the URL it came from."""
    return _room_request(given, "state")


def format_status(state: dict[str, Any], url: str) -> str:
    room, lifecycle = state["room"], state["lifecycle"]
    lines = [
        f"{room['name']}  ({room['location'] or 'no location'}, {room['timezone']})",
        f"  room id     {room['id']}",
        f"  version     roomsystem {room['version']}",
        f"  API         {url}",
        f"  phase       {lifecycle['phase']}{_since(lifecycle.get('ready_at'))}",
    ]
    for service in lifecycle["services"] or [{"name": "(none yet)", "state": ""}]:
        detail = service["state"]
        if service.get("state") == ServiceState.FAILED:
            detail += (
                f" ({service['error_kind']} error, {service['failures']}x): {service['error']}"
            )
        lines.append(f"  service     {service['name']}: {detail}".rstrip(": "))
    devices = state["devices"]["devices"]
    lines.append(f"  devices     {len(devices)}" + "".join(_device_line(d) for d in devices))
    lines.append(f"  meeting     {'in a meeting' if state['meeting']['in_meeting'] else 'none'}")
    sharing = state["sharing"]
    lines.append(f"  sharing     {sharing['sharer'] or 'someone' if sharing['active'] else 'idle'}")
    calendar = state["calendar"]
    lines.append(f"  calendar    {calendar['backend'] or 'not configured'}")
    return "\n".join(lines)


def format_devices(devices: dict[str, Any]) -> str:
    """One block per device: what it is, which profile, and how it is doing."""
    lines = [] if devices["devices"] else ["no devices"]
    for device in devices["devices"]:
        certified = "certified" if device["certified"] else "generic"
        lines.append(f"{device['id']}  {device['kind']}  {device['name']}")
        lines.append(f"    profile     {device['profile']} ({certified})")
        lines.append(f"    connection  {device['connection']}")
        lines.append(f"    state       {_health(device)}{_device_state(device)}")
    lines += [f"profile error: {line}" for line in devices["profile_errors"]]
    return "\n".join(lines)


def _device_state(device: dict[str, Any]) -> str:
    shown = [
        f"{key} {device[key]}"
        for key in ("power", "input_source", "volume", "muted", "pan", "tilt", "zoom")
        if device.get(key) is not None
    ]
    return f", {', '.join(shown)}" if shown and device["online"] else ""


def _health(device: dict[str, Any]) -> str:
    return "online" if device["online"] else f"OFFLINE: {device['error'] or 'not connected'}"


def _device_line(device: dict[str, Any]) -> str:
    return f"\n                {device['kind']} {device['name']}: {_health(device)}"


def _since(timestamp: str | None) -> str:
    if not timestamp:
        return ""
    seconds = (datetime.now(UTC) - datetime.fromisoformat(timestamp)).total_seconds()
    return f" for {_duration(seconds)}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
