"""``roomshare``: find rooms on the network and share this computer's screen to one.

    roomshare list [--interface ADDR]
    roomshare share ROOM --key KEY [--source screen|window|test] [--interface ADDR]

ROOM is a room's name as ``roomshare list`` prints it, or the room's address
(``https://HOST:PORT``). Capture is PyAV's (x11grab on Linux, avfoundation on macOS, gdigrab
on Windows, a lavfi test pattern for ``--source test``), sending is aiortc's. Ctrl-C stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import av
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer

from roomsystem.media.ice import use_host_addresses
from roomsystem.sharing.discover import FoundRoom, browse, match_room

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_WRONG_KEY = 4
EXIT_LOCKED_OUT = 5
EXIT_BUSY = 6
EXIT_CAPTURE = 7
EXIT_FAILED = 8

SOURCES = ("screen", "window", "test")
REQUEST_TIMEOUT_S = 45.0


class ShareFailed(Exception):
    """A share that cannot go on; ``exit_code`` tells scripts why."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True, slots=True)
class Capture:
    """How PyAV opens a capture source."""

    file: str
    format: str
    options: dict[str, str]


def capture_for(source: str, size: str, fps: int, window: str | None) -> Capture:
    """The PyAV input for ``source`` on this platform."""
    rate = str(fps)
    if source == "test":
        return Capture(f"testsrc2=size={size}:rate={rate}", "lavfi", {})
    if sys.platform == "darwin":
        if source == "window":
            raise ShareFailed("sharing one window is not supported on macOS", EXIT_CAPTURE)
        return Capture("Capture screen 0", "avfoundation", {"framerate": rate})
    if sys.platform == "win32":
        target = f"title={window}" if source == "window" and window else "desktop"
        if source == "window" and not window:
            raise ShareFailed("--source window needs --window TITLE", EXIT_CAPTURE)
        return Capture(target, "gdigrab", {"framerate": rate})
    display = os.environ.get("DISPLAY")
    if not display:
        raise ShareFailed(
            "capture device missing: no X display to capture (DISPLAY is not set)", EXIT_CAPTURE
        )
    options = {"framerate": rate, "draw_mouse": "1"}
    if source == "window":
        if not window:
            raise ShareFailed(
                "--source window needs --window ID (an X window id, e.g. from xwininfo)",
                EXIT_CAPTURE,
            )
        options["window_id"] = window
    return Capture(display, "x11grab", options)


def open_capture(capture: Capture) -> MediaPlayer:
    try:
        player = MediaPlayer(capture.file, format=capture.format, options=capture.options)
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise ShareFailed(
            f"capture device missing: cannot open {capture.file!r} ({capture.format}): {exc}",
            EXIT_CAPTURE,
        ) from None
    if player.video is None:
        raise ShareFailed(f"capture device missing: {capture.file!r} has no video", EXIT_CAPTURE)
    return player


async def find_room(room: str, interface: str | None, wait_s: float) -> str:
    """The share endpoint URL of ``room`` (a name found over mDNS, or an address)."""
    if room.startswith(("https://", "http://")):
        return room.rstrip("/") + ("" if room.rstrip("/").endswith("/share") else "/share")
    rooms = await browse(interface, wait_s)
    found = match_room(rooms, room)
    if found is None:
        seen = ", ".join(r.name for r in rooms) or "none"
        raise ShareFailed(f"room not found: {room!r} (rooms answering: {seen})", EXIT_NOT_FOUND)
    return found.url


_REFUSALS = {
    "wrong_key": ("wrong key: {message}", EXIT_WRONG_KEY),
    "locked_out": ("locked out: {message}", EXIT_LOCKED_OUT),
    "busy": ("the room is busy: {message}", EXIT_BUSY),
}


async def _post_offer(
    http: aiohttp.ClientSession, url: str, body: dict[str, str]
) -> dict[str, Any]:
    try:
        async with http.post(url + "/offer", json=body) as response:
            data = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise ShareFailed(f"cannot reach the room at {url}: {exc}", EXIT_FAILED) from None
    if response.status == 201 and isinstance(data, dict) and isinstance(data.get("sdp"), str):
        return data
    error = data.get("error", "") if isinstance(data, dict) else ""
    message = data.get("message", "") if isinstance(data, dict) else str(data)
    template, code = _REFUSALS.get(error, ("the room refused: {message}", EXIT_FAILED))
    raise ShareFailed(template.format(message=message or response.reason), code)


async def share(
    url: str,
    key: str,
    name: str,
    player: MediaPlayer,
    ssl_context: ssl.SSLContext | bool,
    stop: asyncio.Event,
) -> str:
    """Share ``player``'s video to the room at ``url`` until ``stop`` or the room ends it."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    ended = asyncio.Event()

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        if pc.connectionState in ("failed", "closed"):
            ended.set()

    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    connector = aiohttp.TCPConnector(ssl=ssl_context)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        try:
            assert player.video is not None
            pc.addTrack(player.video)
            await pc.setLocalDescription(await pc.createOffer())
            body = {"name": name, "key": key, "sdp": pc.localDescription.sdp, "type": "offer"}
            answer = await _post_offer(http, url, body)
            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
            print(f"Sharing to {url}. Press Ctrl-C to stop.", flush=True)
            await _first_of(stop.wait(), ended.wait())
            if ended.is_set():
                return "the room ended the share"
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                await http.delete(f"{url}/session/{answer['token']}")
            return "stopped"
        finally:
            await pc.close()


async def _first_of(*waits: Any) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _ssl_context(cafile: str | None) -> ssl.SSLContext | bool:
    # Rooms make their own self-signed certificate; --cafile checks it against a known one.
    if cafile is None:
        return False
    return ssl.create_default_context(cafile=cafile)


async def _share_command(args: argparse.Namespace) -> int:
    if args.interface:
        use_host_addresses([args.interface])
    capture = capture_for(args.source, args.size, args.fps, args.window)
    url = await find_room(args.room, args.interface, args.wait)
    player = open_capture(capture)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        outcome = await share(url, args.key, args.name, player, _ssl_context(args.cafile), stop)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        if player.video is not None:
            player.video.stop()
    print(f"Share ended: {outcome}.", flush=True)
    return EXIT_OK


async def _list_command(args: argparse.Namespace) -> int:
    rooms: list[FoundRoom] = await browse(args.interface, args.wait)
    for room in rooms:
        print(room.describe())
    if not rooms:
        print("no rooms found", file=sys.stderr)
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="roomshare", description="Share this computer's screen to a meeting room."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="list the rooms on this network")
    share_cmd = commands.add_parser("share", help="share the screen to a room")
    for sub in (listing, share_cmd):
        sub.add_argument(
            "--interface",
            metavar="ADDR",
            help="the address of the one network interface to use (default: every one)",
        )
        sub.add_argument(
            "--wait", type=float, default=2.0, help="seconds to wait for rooms to answer"
        )
    share_cmd.add_argument("room", help="the room's name, or its address https://HOST:PORT")
    share_cmd.add_argument("--key", required=True, help="the sharing key shown in the room")
    share_cmd.add_argument("--source", choices=SOURCES, default="screen")
    share_cmd.add_argument("--window", help="the window to share (X window id or title)")
    share_cmd.add_argument("--name", default=socket.gethostname(), help="shown in the room")
    share_cmd.add_argument("--size", default="1280x720", help="test source size, WxH")
    share_cmd.add_argument("--fps", type=int, default=30, choices=range(1, 61), metavar="FPS")
    share_cmd.add_argument("--cafile", help="verify the room's certificate against this file")
    share_cmd.add_argument("-v", "--verbose", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING)
    command = _list_command if args.command == "list" else _share_command
    try:
        return asyncio.run(command(args))
    except ShareFailed as exc:
        print(f"roomshare: {exc}", file=sys.stderr)
        return exc.exit_code
    except ValueError as exc:  # a malformed --interface address
        print(f"roomshare: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
