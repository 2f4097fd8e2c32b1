"""``roomsystem diag``: one archive for a support ticket, with every secret taken out.

It holds versions, the configuration (secret keys redacted), the running room's lifecycle
(with its history of phases and service failures, also as a timeline in ``history.txt``),
devices, alerts and a summary of calendar, meeting and sharing, recent log lines and facts
about the machine. Secrets are removed twice: by key where they are known to live, and
then every secret value the room knows (API token, passwords, passcodes, keys) is scrubbed
from every file of the archive, wherever it may have been copied to.
"""

from __future__ import annotations

import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from roomsystem import __version__
from roomsystem.config import Settings
from roomsystem.statedir import StateDir

REDACTED = "<redacted>"
SECRET_KEY = re.compile(r"passw|token|secret|credential|passcode|pairing_code|^key$", re.I)
SECRET_TOML_LINE = re.compile(
    r"^(?P<lead>\s*#?\s*)(?P<key>[A-Za-z0-9_]*(?:passw|token|secret|credential|passcode|"
    r"pairing_code)[A-Za-z0-9_]*|key)(?P<eq>\s*=\s*).*$",
    re.I | re.M,
)
PACKAGES = (
    "aiohttp",
    "pydantic",
    "aiortc",
    "av",
    "pyserial",
    "zeroconf",
    "exchangelib",
    "caldav",
    "kivy",
    "prometheus-client",
)
LOG_LINES = 500


def redact(value: Any) -> Any:
    """``value`` (parsed JSON) with the values of secret-looking keys replaced.

    A ``*_file`` key names where a secret lives, not the secret: it is kept.
    """
    if isinstance(value, dict):
        return {
            key: REDACTED
            if SECRET_KEY.search(key) and not key.endswith("_file") and item not in ("", None)
            else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


def redact_toml(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        if match["key"].lower().endswith("_file"):
            return match[0]
        return f'{match["lead"]}{match["key"]}{match["eq"]}"{REDACTED}"'

    return SECRET_TOML_LINE.sub(replace, text)


def _read_quietly(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""


def known_secrets(settings: Settings, state: dict[str, Any], token: str) -> set[str]:
    """Every secret value this room knows, to scrub from anything in the archive."""
    found = {
        token,
        settings.sharing.pairing_code or "",
        _read_quietly(settings.calendar.password_file),
        os.environ.get("ROOMSYSTEM_CALENDAR_PASSWORD", ""),
        _read_quietly(settings.alerts.webhook_token_file),
        _read_quietly(settings.alerts.smtp_password_file),
        *(_read_quietly(device.password_file) for device in settings.devices.add),
        *(server.credential for server in settings.webrtc.ice_servers),
    }
    found |= set(_secret_values(state))
    # Very short values ("1", "on") would scrub ordinary words; none of the room's are short.
    return {value for value in found if len(value) >= 4}


def _secret_values(value: Any) -> Iterable[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if SECRET_KEY.search(key) and isinstance(item, str):
                yield item
            else:
                yield from _secret_values(item)
    elif isinstance(value, list):
        for item in value:
            yield from _secret_values(item)


def scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def state_summary(state: dict[str, Any]) -> dict[str, Any]:
    """What support needs from the snapshot; bookings, names and chat stay in the room."""
    if not state:
        return {}
    meeting = state.get("meeting", {})
    sharing = state.get("sharing", {})
    calendar = state.get("calendar", {})
    return redact(
        {
            "room": state.get("room"),
            "lifecycle": state.get("lifecycle"),
            "devices": state.get("devices"),
            "alerts": state.get("alerts"),
            "calendar": {k: v for k, v in calendar.items() if k != "bookings"}
            | {"bookings": len(calendar.get("bookings", []))},
            "meeting": {
                "in_meeting": meeting.get("in_meeting"),
                "participants": len(meeting.get("participants", [])),
                "waiting_count": meeting.get("waiting_count"),
                "locked": meeting.get("locked"),
                "recording": meeting.get("recording"),
                "policy": meeting.get("policy"),
            },
            "sharing": {
                key: sharing.get(key)
                for key in ("active", "enabled", "advertising", "key_required", "takeover")
            },
        }
    )


def history_text(lifecycle: Any) -> str:
    """The lifecycle history (as the API gives it) as a timeline, one change a line."""
    if not isinstance(lifecycle, dict) or not isinstance(lifecycle.get("history"), list):
        return "(the room's state has no lifecycle history)\n"
    return "".join(f"{_history_line(entry)}\n" for entry in lifecycle["history"])


def _history_line(entry: Any) -> str:
    if not isinstance(entry, dict):
        return f"(not a history entry: {entry!r})"
    at = entry.get("at", "?")
    if entry.get("kind") == "phase":
        return f"{at}  phase {entry.get('phase')}"
    line = f"{at}  {entry.get('service')} {entry.get('change')}"
    if entry.get("change") == "failed":
        line += f" in {entry.get('phase') or 'run'} ({entry.get('error_kind')} error): "
        line += str(entry.get("error"))
        if entry.get("repeats"):
            line += f"; {entry['repeats']} more time(s), last {entry.get('last_at')}"
    elif entry.get("change") == "running" and entry.get("failures"):
        line += f" (after {entry['failures']} failure(s))"
    return line


def versions() -> dict[str, Any]:
    installed: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            installed[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed[name] = None
    return {
        "roomsystem": __version__,
        "python": sys.version,
        "packages": installed,
    }


def _meminfo() -> dict[str, str]:
    wanted = ("MemTotal", "MemAvailable", "SwapTotal", "SwapFree")
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return {}
    pairs = (line.split(":", 1) for line in lines if ":" in line)
    return {key: value.strip() for key, value in pairs if key in wanted}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def system_facts(state_dir: Path) -> dict[str, Any]:
    uname = platform.uname()
    where = state_dir if state_dir.exists() else Path("/")
    disk = shutil.disk_usage(where)
    return {
        "kernel": f"{uname.system} {uname.release} {uname.version}",
        "machine": uname.machine,
        "os": platform.freedesktop_os_release().get("PRETTY_NAME", "")
        if hasattr(platform, "freedesktop_os_release")
        else "",
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "memory": _meminfo(),
        "disk": {"path": str(where), "total": disk.total, "free": disk.free},
        "collected_at": datetime.now(UTC).isoformat(),
    }


def recent_log() -> str:
    """The daemon's recent journal lines, or why there are none."""
    journalctl = shutil.which("journalctl")
    if journalctl is None:
        return "(no journalctl on this machine)\n"
    command = [
        journalctl,
        "-u",
        "roomsystem",
        "-n",
        str(LOG_LINES),
        "--no-pager",
        "-o",
        "short-iso",
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"(journalctl failed: {exc})\n"
    return done.stdout + (f"(journalctl: {done.stderr.strip()})\n" if done.stderr.strip() else "")


def build_bundle(
    settings: Settings,
    config_text: str,
    state: dict[str, Any],
    log_text: str,
    fetch_error: str = "",
) -> dict[str, str]:
    """The archive's files by name, redacted and scrubbed."""
    state_dir = StateDir(settings.state_dir)
    token = _read_quietly(state_dir.path / "api-token")
    secrets = known_secrets(settings, state, token)
    settings_json = redact(settings.model_dump(mode="json"))
    files = {
        "versions.json": json.dumps(versions(), indent=2),
        "config.toml": redact_toml(config_text) or "# (no configuration file: demo defaults)\n",
        "settings.json": json.dumps(settings_json, indent=2),
        "state.json": json.dumps(state_summary(state), indent=2),
        "history.txt": history_text(state.get("lifecycle")),
        "log.txt": log_text,
        "system.json": json.dumps(system_facts(settings.state_dir), indent=2),
    }
    if fetch_error:
        files["state-error.txt"] = fetch_error + "\n"
    return {name: scrub(text, secrets) for name, text in files.items()}


def write_bundle(output: Path, files: dict[str, str]) -> None:
    """A gzip'd tar of ``files`` under one folder named after the archive, mode 0600."""
    folder = output.name.split(".")[0] or "roomsystem-diag"
    now = time.time()
    output.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as archive:
        for name, text in files.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size, info.mtime, info.mode = len(data), int(now), 0o600
            archive.addfile(info, io.BytesIO(data))


def default_output() -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path(f"roomsystem-diag-{platform.node() or 'room'}-{stamp}.tar.gz")
