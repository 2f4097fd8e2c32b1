"""The state directory: what the room keeps across restarts, never half-written.

Every file is written to a temporary file in the same directory, flushed to disk and then
renamed over the old one, so a power cut leaves either the old or the new content. A file
that cannot be read back is moved aside (kept, not deleted) and the room starts without it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from roomsystem.errors import ConfigError

logger = logging.getLogger(__name__)

TOKEN_FILE = "api-token"
ENDPOINT_FILE = "api.json"
LOCK_FILE = "roomsystem.lock"
# Paired panels and the hashes of their tokens (roomsystem.pairing.panels).
PANELS_FILE = "panels.json"

ModelT = TypeVar("ModelT", bound=BaseModel)


def write_atomic(target: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``target`` with ``data`` (mode ``mode``) so that readers see the old file or
    the new one, never half of it, and the new one survives a power cut."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class StateDirBusy(ConfigError):
    """Another daemon already runs with this state directory."""


class StateDir:
    """A directory the room owns; one daemon at a time holds its lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_fd: int | None = None

    def ensure(self) -> None:
        try:
            self.path.mkdir(mode=0o750, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"state directory {self.path}: cannot create: {exc}") from None
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise ConfigError(f"state directory {self.path}: not writable by this user")

    def lock(self) -> None:
        """Take the directory for this process, or raise `StateDirBusy`."""
        self.ensure()
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StateDirBusy(
                f"state directory {self.path} is in use by roomsystem (pid {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def write_atomic(self, name: str, data: bytes, mode: int = 0o644) -> None:
        """Replace ``name`` with ``data`` so that readers see the old or the new file."""
        write_atomic(self.path / name, data, mode)

    def save(self, name: str, model: BaseModel, mode: int = 0o644) -> None:
        self.write_atomic(name, model.model_dump_json(indent=2).encode() + b"\n", mode)

    def load(self, name: str, model: type[ModelT]) -> ModelT | None:
        """The saved ``model``, or None when absent; an unreadable file is moved aside."""
        path = self.path / name
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return model.model_validate_json(raw)
        except ValidationError as exc:
            kept = path.with_name(f"{name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
            os.replace(path, kept)
            logger.error(
                "%s is unreadable (%s errors, first: %s); kept it as %s and started without it",
                path,
                exc.error_count(),
                exc.errors()[0]["msg"],
                kept.name,
            )
            return None

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.path / name).unlink()

    def api_token(self) -> str:
        """The API bearer token, made on first use and kept readable by this user only."""
        path = self.path / TOKEN_FILE
        try:
            token = path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            token = ""
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the API token: {exc}") from None
        if token:
            if path.stat().st_mode & 0o077:
                logger.warning("%s was readable by others; made it private (mode 0600)", path)
                path.chmod(0o600)
            return token
        self.ensure()
        token = secrets.token_urlsafe(32)
        self.write_atomic(TOKEN_FILE, token.encode() + b"\n", mode=0o600)
        return token


class Endpoint(BaseModel):
    """Where a running daemon serves its API; written while it runs, for the CLI."""

    url: str
    pid: int


def read_endpoint(state_dir: StateDir) -> Endpoint | None:
    path = state_dir.path / ENDPOINT_FILE
    try:
        return Endpoint.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return None
