"""The appliance's subcommands: install, uninstall, udev-rules and diag."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from roomsystem.appliance import diag
from roomsystem.appliance.install import InstallError, install, uninstall
from roomsystem.appliance.udev import udev_rules
from roomsystem.config import DEFAULT_CONFIG_PATH, Settings, demo_settings, load_settings
from roomsystem.devices.profiles import DEFAULT_PROFILES_DIR, load_profiles
from roomsystem.errors import ConfigError, RoomError

StateFetcher = Callable[[Path | None], tuple[dict[str, Any], str]]
KIOSK_CHOICES = {"display": ("display",), "panel": ("panel",), "both": ("display", "panel")}


def add_parsers(commands: Any, fetch_state: StateFetcher) -> None:
    """Add the subcommands to ``commands`` (the CLI's subparsers)."""
    setup = commands.add_parser("install", help="install the room's services (as root)")
    setup.add_argument(
        "--root", type=Path, default=Path("/"), help="install below this directory (default /)"
    )
    setup.add_argument(
        "--kiosk",
        choices=[*KIOSK_CHOICES, "none"],
        default="display",
        help="kiosk apps to enable on this machine (default: display)",
    )
    setup.add_argument("--no-start", action="store_true", help="enable, but do not start yet")
    setup.set_defaults(func=_install)

    remove = commands.add_parser(
        "uninstall", help="remove the services (keeps configuration and state)"
    )
    remove.add_argument("--root", type=Path, default=Path("/"), help="as given to install")
    remove.set_defaults(func=_uninstall)

    rules = commands.add_parser("udev-rules", help="print udev rules made from the profiles")
    rules.add_argument(
        "--profiles", type=Path, default=DEFAULT_PROFILES_DIR, help="profiles folder"
    )
    rules.add_argument("--output", type=Path, help="write to this file instead")
    rules.set_defaults(func=_udev_rules)

    bundle = commands.add_parser("diag", help="write a support bundle (secrets removed)")
    bundle.add_argument("--output", type=Path, help="archive to write (.tar.gz)")
    bundle.add_argument(
        "--config", type=Path, help=f"configuration (default {DEFAULT_CONFIG_PATH})"
    )
    bundle.add_argument("--state-dir", type=Path, help="state directory of the room")
    bundle.set_defaults(func=lambda args: _diag(args, fetch_state))


def _needs_root(root: Path) -> None:
    if root.resolve() == Path("/") and os.geteuid() != 0:
        raise InstallError("run as root (sudo roomsystem install), or give --root DIR")


def _install(args: argparse.Namespace) -> int:
    _needs_root(args.root)
    kiosk = KIOSK_CHOICES.get(args.kiosk, ())
    install(args.root, sys.executable, kiosk=kiosk, start=not args.no_start)
    return 0


def _uninstall(args: argparse.Namespace) -> int:
    _needs_root(args.root)
    uninstall(args.root)
    return 0


def _udev_rules(args: argparse.Namespace) -> int:
    profiles = load_profiles(args.profiles)
    if profiles.errors:
        raise ConfigError("; ".join(profiles.errors))
    text = udev_rules(profiles)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    return 0


def _diag(args: argparse.Namespace, fetch_state: StateFetcher) -> int:
    path: Path = args.config or DEFAULT_CONFIG_PATH
    settings: Settings = load_settings(path) if path.exists() else demo_settings()
    config_text = path.read_text(encoding="utf-8") if path.exists() else ""
    if args.state_dir is not None:
        settings = settings.model_copy(update={"state_dir": args.state_dir.absolute()})
    try:
        state, _ = fetch_state(settings.state_dir)
        error = ""
    except RoomError as exc:
        state, error = {}, f"the running room's state could not be read: {exc}"
    files = diag.build_bundle(settings, config_text, state, diag.recent_log(), error)
    output: Path = args.output or diag.default_output()
    diag.write_bundle(output, files)
    print(f"wrote {output}")
    return 0
