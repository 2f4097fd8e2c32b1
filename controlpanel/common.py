"""What the panel and the display share: command line, finding the room, starting Kivy.

Nothing here imports Kivy at module level: the window's size must be configured before
Kivy creates it, so `configure_kivy` runs first and the apps import Kivy after it.

A panel on its own touch device pairs with a room (``--pair``, or on its first start, when
no ``--token-file`` is given and its own token file does not exist yet) and keeps what it was
given: the token (mode 0600) and the room's API address beside it (``<token-file>.room.json``),
used when ``--api`` is not given. A ``--token-file`` that names a missing file stays an error
without ``--pair``: a mistyped path must not look like a new panel.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from roomsystem.statedir import ENDPOINT_FILE, TOKEN_FILE, write_atomic

SYSTEM_STATE_DIR = Path("/var/lib/roomsystem")
DEFAULT_API = "http://127.0.0.1:8080"
PANEL_TOKEN_FILE = "panel-token"
ROOM_FILE_SUFFIX = ".room.json"


def demo_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "roomsystem-demo"


def panel_config_dir() -> Path:
    """Where a paired panel keeps its token when ``--token-file`` is not given."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "roomsystem"


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
    # Panel only: pair first (``--pair`` or no token file yet), how and as whom.
    pair: bool = False
    api_given: bool = False
    interface: str | None = None
    panel_name: str = ""


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, got {text!r}") from None
    if not (320 <= width <= 7680 and 240 <= height <= 4320):
        raise argparse.ArgumentTypeError(f"size out of range: {text!r}")
    return width, height


def interface_address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be an interface's IP address, such as 127.0.0.1, got {text!r}"
        ) from None


def default_panel_name() -> str:
    return " ".join(socket.gethostname().replace(".", " ").split()[:1]) or "Touch panel"


def _add_pairing_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pair",
        action="store_true",
        help="pair with a room first (also when the token file does not exist yet)",
    )
    parser.add_argument(
        "--interface",
        metavar="ADDRESS",
        type=interface_address,
        help="look for rooms over mDNS on this interface only (its address)",
    )
    parser.add_argument(
        "--panel-name",
        default=default_panel_name(),
        help="the name the room lists this panel by (default: the host name)",
    )


def parse_options(
    prog: str, description: str, argv: list[str] | None, panel: bool = True
) -> Options:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--api",
        metavar="URL",
        help=f"the room's API (default: the paired room, the local room, else {DEFAULT_API})",
    )
    parser.add_argument(
        "--token-file", metavar="PATH", help="file with the API bearer token (roomsystem token)"
    )
    parser.add_argument("--size", type=parse_size, help="window size, e.g. 1920x1080")
    parser.add_argument("--fullscreen", action="store_true", help="fill the screen")
    default_size = (1280, 800) if panel else (1920, 1080)
    parser.set_defaults(size=default_size, admin_pin="", pair=False, interface=None, panel_name="")
    if panel:
        parser.add_argument(
            "--admin-pin",
            default=os.environ.get("ROOMSYSTEM_PANEL_PIN", "1234"),
            help="PIN that opens Settings (default $ROOMSYSTEM_PANEL_PIN or 1234)",
        )
        _add_pairing_options(parser)
    parser.add_argument(
        "--pilot",
        action="store_true",
        help="take scripted taps as JSON lines on stdin (tests and benchmarks)",
    )
    args = parser.parse_args(argv)
    state_dir = local_state_dir()
    token_file = args.token_file
    pairing_asked = panel and args.pair
    # A panel that pairs keeps its own token: never the room's main token in its state dir.
    if token_file is None and state_dir is not None and not pairing_asked:
        token_file = str(state_dir / TOKEN_FILE)
    first_start = False
    if token_file is None and panel:
        token_file = str(panel_config_dir() / PANEL_TOKEN_FILE)
        first_start = not Path(token_file).is_file()
    pair = pairing_asked or first_start
    api = args.api or paired_api(token_file) or _local_endpoint(state_dir) or DEFAULT_API
    if not api.startswith(("http://", "https://")):
        parser.error(f"--api {api}: must be an http:// or https:// URL")
    if token_file is not None and not pair and not Path(token_file).is_file():
        parser.error(f"--token-file {token_file}: no such file")
    width, height = args.size
    return Options(
        api,
        token_file,
        width,
        height,
        args.fullscreen,
        args.pilot,
        str(args.admin_pin),
        pair=pair,
        api_given=args.api is not None,
        interface=args.interface,
        panel_name=args.panel_name,
    )


def room_file(token_file: str) -> Path:
    """Where the paired room's address is kept, beside the token."""
    path = Path(token_file)
    return path.with_name(path.name + ROOM_FILE_SUFFIX)


def paired_api(token_file: str | None) -> str | None:
    """The API of the room this token file was paired with, if it was."""
    if token_file is None:
        return None
    try:
        url = json.loads(room_file(token_file).read_text(encoding="utf-8"))["api"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return url if isinstance(url, str) else None


def save_pairing(token_file: str, token: str, api: str, room_name: str, room_id: str) -> None:
    """Keep what pairing gave: the room's address first, then the token (both mode 0600)."""
    room = {"api": api, "name": room_name, "room_id": room_id}
    write_private(room_file(token_file), json.dumps(room, indent=2).encode() + b"\n")
    write_private(Path(token_file), token.encode() + b"\n")


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``, readable by this user only; missing parents are made
    (mode 0700). Readers see the old file or the new one, never half of it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, data, 0o600)


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
