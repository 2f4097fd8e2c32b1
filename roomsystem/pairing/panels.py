"""The paired panels, kept in the state directory with their tokens hashed.

Only the SHA-256 of each token is stored: a copy of the state directory does not let anyone
act as a panel. A token is 32 random bytes, so a plain hash is enough (there is nothing to
guess that a slow hash would protect). The file is rewritten atomically on every pairing and
revocation, so a revoked panel stays revoked after a restart; "last seen" is written at most
once a minute per panel, and when the room stops.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from roomsystem.pairing.state import PanelInfo
from roomsystem.statedir import PANELS_FILE, StateDir

logger = logging.getLogger(__name__)

TOKEN_BYTES = 32
SEEN_SAVED_EVERY = timedelta(seconds=60)

WallClock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class PanelRecord(BaseModel):
    """One paired panel as the state directory keeps it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    name: str
    address: str
    token_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    created_at: datetime
    last_seen: datetime | None = None

    def info(self) -> PanelInfo:
        return PanelInfo(
            id=self.id,
            name=self.name,
            address=self.address,
            created_at=self.created_at,
            last_seen=self.last_seen,
        )


class PanelsFile(BaseModel):
    """``panels.json``: every paired panel."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    panels: tuple[PanelRecord, ...] = ()


class AmbiguousPanel(LookupError):
    """Several panels have the name given; the id tells them apart."""


class PanelRegistry:
    """Paired panels by token hash: add, find by token, note when seen, revoke."""

    def __init__(self, state_dir: StateDir, wall: WallClock = utc_now) -> None:
        self._state_dir = state_dir
        self._wall = wall
        self._by_digest: dict[str, PanelRecord] = {}
        # last_seen as the file has it, to write it only now and then.
        self._saved_seen: dict[str, datetime | None] = {}

    def load(self) -> None:
        """Read the panels the room kept (an unreadable file is moved aside: none are paired)."""
        kept = self._state_dir.load(PANELS_FILE, PanelsFile) or PanelsFile()
        self._by_digest = {record.token_sha256: record for record in kept.panels}
        self._saved_seen = {record.id: record.last_seen for record in kept.panels}

    def records(self) -> list[PanelRecord]:
        return sorted(self._by_digest.values(), key=lambda r: (r.created_at, r.id))

    def add(self, name: str, address: str) -> tuple[PanelRecord, str]:
        """Pair a new panel: its record and its token (shown once, never stored)."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        now = self._wall()
        record = PanelRecord(
            id=f"panel-{secrets.token_hex(4)}",
            name=name,
            address=address,
            token_sha256=token_digest(token),
            created_at=now,
            last_seen=now,
        )
        if any(r.id == record.id for r in self._by_digest.values()):
            return self.add(name, address)  # 32 bits of id: a clash is rare, never kept
        self._save({**self._by_digest, record.token_sha256: record})
        return record, token

    def find(self, token: str) -> PanelRecord | None:
        # Looked up by the token's hash: the time a lookup takes says nothing about a token.
        return self._by_digest.get(token_digest(token))

    def seen(self, record: PanelRecord) -> PanelRecord:
        """Note that ``record``'s panel used its token now; written to disk now and then."""
        now = self._wall()
        current = record.model_copy(update={"last_seen": now})
        if current.token_sha256 not in self._by_digest:
            return current  # revoked meanwhile
        self._by_digest[current.token_sha256] = current
        saved = self._saved_seen.get(current.id)
        if saved is None or now - saved >= SEEN_SAVED_EVERY:
            self._save_seen()
        return current

    def revoke(self, name_or_id: str) -> PanelRecord:
        """Remove the panel with this id (or this name, if only one has it)."""
        record = self._match(name_or_id)
        kept = dict(self._by_digest)
        del kept[record.token_sha256]
        self._save(kept)
        return record

    def _match(self, wanted: str) -> PanelRecord:
        records = self.records()
        for record in records:
            if record.id == wanted:
                return record
        named = [r for r in records if r.name.casefold() == wanted.casefold()]
        if len(named) > 1:
            ids = ", ".join(r.id for r in named)
            raise AmbiguousPanel(f"several panels are called {wanted!r} ({ids}): give the id")
        if not named:
            known = ", ".join(f"{r.name} ({r.id})" for r in records) or "none"
            raise LookupError(f"no panel {wanted!r} is paired (paired: {known})")
        return named[0]

    def flush(self) -> None:
        """Write last-seen times that are only in memory."""
        if any(self._saved_seen.get(r.id) != r.last_seen for r in self._by_digest.values()):
            self._save_seen()

    def _save(self, panels: dict[str, PanelRecord]) -> None:
        """Write ``panels`` and only then take them: pairing and revoking happen on disk
        or not at all (an `OSError` reaches the caller)."""
        records = sorted(panels.values(), key=lambda r: (r.created_at, r.id))
        self._state_dir.save(PANELS_FILE, PanelsFile(panels=tuple(records)), mode=0o600)
        self._by_digest = dict(panels)
        self._saved_seen = {record.id: record.last_seen for record in records}

    def _save_seen(self) -> None:
        # Last seen is a courtesy: a full or read-only disk must not refuse a panel.
        try:
            self._save(self._by_digest)
        except OSError as exc:
            logger.warning("cannot note when panels were last seen: %s", exc)
            self._saved_seen = {r.id: r.last_seen for r in self._by_digest.values()}
