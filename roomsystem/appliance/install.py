"""``roomsystem install`` / ``uninstall``: make this machine a room appliance, or stop being one.

Install writes the systemd units (pointed at the running Python), the udev rules made from
the device profiles, a sysusers.d file for the service users, and the commented example
configuration (never over an existing one); then it creates the users, reloads udev and
systemd, and enables and starts the services. With ``root`` other than ``/`` everything is
written below that directory and only the offline steps run (``systemd-sysusers --root``,
``systemctl --root enable``): a package build or a test can use it without touching the
machine. Uninstall removes units, rules and users and keeps configuration and state.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from roomsystem.appliance.udev import RULES_FILE, udev_rules
from roomsystem.devices.profiles import DEFAULT_PROFILES_DIR, load_profiles
from roomsystem.errors import RoomError

logger = logging.getLogger(__name__)

# Package data, so that an installed wheel has them (the checkout's systemd/ links here).
UNITS_SOURCE = Path(str(resources.files("roomsystem") / "systemd"))
EXAMPLE_CONFIG = Path(str(resources.files("roomsystem") / "roomsystem.example.toml"))
TEMPLATE_PYTHON = "/opt/roomsystem/bin/python"
DAEMON_UNIT = "roomsystem.service"
KIOSK_UNITS = {"display": "roomsystem-display.service", "panel": "roomsystem-panel.service"}
UNITS = (DAEMON_UNIT, *KIOSK_UNITS.values())
SYSUSERS_FILE = "roomsystem.conf"
USERS = ("roomsystem", "roomsystem-kiosk")
SYSUSERS = """\
# The users roomsystem's services run as (roomsystem install).
u roomsystem - "roomsystem room daemon" /var/lib/roomsystem
m roomsystem video
m roomsystem audio
m roomsystem dialout
m roomsystem input
u roomsystem-kiosk - "roomsystem panel and display" /var/lib/roomsystem-kiosk
m roomsystem-kiosk video
m roomsystem-kiosk input
m roomsystem-kiosk render
m roomsystem-kiosk roomsystem
"""
# ProtectHome= hides these from the services.
HIDDEN_PREFIXES = ("/home/", "/root/", "/run/user/")


class InstallError(RoomError):
    exit_code = 1


Runner = Callable[[Sequence[str]], None]


def run_command(command: Sequence[str]) -> None:
    """Run a system tool; its own error message becomes ours."""
    logger.info("running %s", " ".join(command))
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise InstallError(f"{command[0]} is not installed") from None
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or exc.stdout or "").strip().splitlines()
        raise InstallError(
            f"{' '.join(command)} failed ({exc.returncode}): {detail[-1] if detail else ''}"
        ) from None


@dataclass
class Layout:
    """Where each installed file goes below ``root``."""

    root: Path
    units: Path = field(init=False)
    rules: Path = field(init=False)
    sysusers: Path = field(init=False)
    config: Path = field(init=False)

    def __post_init__(self) -> None:
        self.units = self.root / "etc/systemd/system"
        self.rules = self.root / "etc/udev/rules.d" / RULES_FILE
        self.sysusers = self.root / "etc/sysusers.d" / SYSUSERS_FILE
        self.config = self.root / "etc/roomsystem/roomsystem.toml"

    @property
    def live(self) -> bool:
        """Installing into the running system (not a staging directory)."""
        return self.root.resolve() == Path("/")


def render_unit(name: str, python: str) -> str:
    """The shipped unit ``name``, running ``python``."""
    return (UNITS_SOURCE / name).read_text(encoding="utf-8").replace(TEMPLATE_PYTHON, python)


def _check_python(python: str) -> None:
    if any(python.startswith(prefix) for prefix in HIDDEN_PREFIXES):
        raise InstallError(
            f"{python} is under a home directory, which the services cannot see "
            "(ProtectHome=yes): install roomsystem into a virtual environment such as "
            "/opt/roomsystem first (python3 -m venv /opt/roomsystem)"
        )


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.new")
    temporary.write_text(text, encoding="utf-8")
    temporary.chmod(mode)
    temporary.replace(path)
    print(f"wrote {path}")


def install(
    root: Path,
    python: str,
    kiosk: Sequence[str] = ("display",),
    start: bool = True,
    run: Runner = run_command,
) -> None:
    """Install the appliance below ``root``; see the module's description."""
    _check_python(python)
    layout = Layout(root)
    profiles = load_profiles(DEFAULT_PROFILES_DIR)
    if profiles.errors:
        raise InstallError("device profiles have errors: " + "; ".join(profiles.errors))
    for name in UNITS:
        _write(layout.units / name, render_unit(name, python))
    _write(layout.rules, udev_rules(profiles))
    _write(layout.sysusers, SYSUSERS)
    if layout.config.exists():
        print(f"kept {layout.config} (it exists)")
    else:
        layout.config.parent.mkdir(parents=True, exist_ok=True)
        # Exclusive creation: a file that appeared meanwhile is still never overwritten.
        with layout.config.open("x", encoding="utf-8") as handle:
            handle.write(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
        layout.config.chmod(0o644)
        print(f"wrote {layout.config}")
    enabled = [DAEMON_UNIT, *(KIOSK_UNITS[name] for name in kiosk)]
    if not layout.live:
        run(["systemd-sysusers", f"--root={root}", str(layout.sysusers)])
        run(["systemctl", f"--root={root}", "enable", *enabled])
        return
    if shutil.which("cage") is None and kiosk:
        print("note: the panel and display units need cage (apt-get install cage)")
    run(["systemd-sysusers", str(layout.sysusers)])
    run(["udevadm", "control", "--reload"])
    run(["udevadm", "trigger", "--action=change", "--subsystem-match=usb"])
    run(["udevadm", "trigger", "--action=change", "--subsystem-match=tty"])
    run(["systemctl", "daemon-reload"])
    run(["systemctl", "enable", *(["--now"] if start else []), *enabled])


def uninstall(root: Path, run: Runner = run_command) -> None:
    """Remove what `install` made below ``root``; keep configuration and state."""
    layout = Layout(root)
    installed = [name for name in UNITS if (layout.units / name).exists()]
    if installed:
        if layout.live:
            run(["systemctl", "disable", "--now", *installed])
        else:
            run(["systemctl", f"--root={root}", "disable", *installed])
    for path in [*(layout.units / name for name in installed), layout.rules, layout.sysusers]:
        if path.exists():
            path.unlink()
            print(f"removed {path}")
    passwd = root / "etc/passwd"
    present = passwd.read_text(encoding="utf-8") if passwd.exists() else ""
    for user in USERS:
        if f"\n{user}:" in f"\n{present}":
            run(["userdel", *([] if layout.live else ["--root", str(root.resolve())]), user])
    if layout.live:
        run(["systemctl", "daemon-reload"])
        run(["udevadm", "control", "--reload"])
    print(f"kept {layout.config} and the state in /var/lib/roomsystem")
