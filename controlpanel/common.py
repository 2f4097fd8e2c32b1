"""What the panel and the display share: command line, finding the room, starting Kivy.

Nothing here imports Kivy at module level: the window's size must be configured before
Kivy creates it, so `configure_kivy` runs first and the apps import Kivy after it.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path

SYSTEM_STATE_DIR = Path("/var/lib/roomsystem")
DEFAULT_API = "http://127.0.0.1:8080"
TOKEN_FILE = "api-token"
ENDPOINT_FILE = "api.json"


def demo_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "roomsystem-demo"


def local_state_dir() -> Path | None:
    """The state directory of a room running on this machine, if there is one."""
    for candidate in (SYSTEM_STATE_DIR, demo_state_dir()):
        if (candidate / TOKEN_FILE).exists():
            return candidate
    return None


@dataclass(frozen=True)
class Options:
    api: str
    token_file: str | None
    width: int
    height: int
    fullscreen: bool
    pilot: bool
    admin_pin: str


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, got {text!r}") from None
    if not (320 <= width <= 7680 and 240 <= height <= 4320):
        raise argparse.ArgumentTypeError(f"size out of range: {text!r}")
    return width, height


def parse_options(
    prog: str, description: str, argv: list[str] | None, panel: bool = True
) -> Options:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--api", metavar="URL", help=f"the room's API (default: the local room, else {DEFAULT_API})"
    )
    parser.add_argument(
        "--token-file", metavar="PATH", help="file with the API bearer token (roomsystem token)"
    )
    parser.add_argument("--size", type=parse_size, help="window size, e.g. 1920x1080")
    parser.add_argument("--fullscreen", action="store_true", help="fill the screen")
    default_size = (1280, 800) if panel else (1920, 1080)
    parser.set_defaults(size=default_size, admin_pin="")
    if panel:
        parser.add_argument(
            "--admin-pin",
            default=os.environ.get("ROOMSYSTEM_PANEL_PIN", "1234"),
            help="PIN that opens Settings (default $ROOMSYSTEM_PANEL_PIN or 1234)",
        )
    parser.add_argument(
        "--pilot",
        action="store_true",
        help="take scripted taps as JSON lines on stdin (tests and benchmarks)",
    )
    args = parser.parse_args(argv)
    state_dir = local_state_dir()
    api = args.api or _local_endpoint(state_dir) or DEFAULT_API
    if not api.startswith(("http://", "https://")):
        parser.error(f"--api {api}: must be an http:// or https:// URL")
    token_file = args.token_file
    if token_file is None and state_dir is not None:
        token_file = str(state_dir / TOKEN_FILE)
    if token_file is not None and not Path(token_file).is_file():
        parser.error(f"--token-file {token_file}: no such file")
    width, height = args.size
    return Options(api, token_file, width, height, args.fullscreen, args.pilot, str(args.admin_pin))


def _local_endpoint(state_dir: Path | None) -> str | None:
    if state_dir is None:
        return None
    try:
        url = json.loads((state_dir / ENDPOINT_FILE).read_text(encoding="utf-8"))["url"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(url)


def configure_kivy(options: Options) -> None:
    """Set Kivy's window up before Kivy makes it; our own parser took the arguments."""
    os.environ.setdefault("KIVY_NO_ARGS", "1")
    from kivy.config import Config

    Config.set("graphics", "width", str(options.width))
    Config.set("graphics", "height", str(options.height))
    Config.set("graphics", "resizable", "1")
    Config.set("graphics", "fullscreen", "auto" if options.fullscreen else "0")
    # Kivy multisamples by default; flat shapes, text and video gain nothing from it, and
    # without a GPU it halved the frames the display could draw at 1080p.
    Config.set("graphics", "multisamples", "0")
    Config.set("kivy", "exit_on_escape", "0")
    Config.set("input", "mouse", "mouse,multitouch_on_demand")
    Config.set("kivy", "log_level", "warning")
