"""The state directory: atomic writes, the private token, corrupt files kept aside, one owner."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from pydantic import BaseModel

from roomsystem.statedir import TOKEN_FILE, StateDir, StateDirBusy


class Note(BaseModel):
    text: str


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = StateDir(tmp_path)
    state.save("note.json", Note(text="old"))

    def power_cut(src: str, dst: str) -> None:
        raise OSError("disk vanished")

    monkeypatch.setattr(os, "replace", power_cut)
    with pytest.raises(OSError, match="disk vanished"):
        state.save("note.json", Note(text="new"))
    monkeypatch.undo()
    assert state.load("note.json", Note) == Note(text="old")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["note.json"]


def test_saved_models_load_back(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    assert state.load("note.json", Note) is None
    state.save("note.json", Note(text="kept"))
    assert StateDir(tmp_path).load("note.json", Note) == Note(text="kept")


def test_an_unreadable_file_is_moved_aside_not_lost(tmp_path: Path) -> None:
    (tmp_path / "note.json").write_text('{"text": ')
    assert StateDir(tmp_path).load("note.json", Note) is None
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("note.json.corrupt-")]
    assert len(kept) == 1
    assert kept[0].read_text() == '{"text": '


def test_the_token_is_made_once_and_readable_only_by_its_owner(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "new")
    token = state.api_token()
    assert len(token) >= 40
    assert StateDir(tmp_path / "new").api_token() == token
    mode = stat.S_IMODE((tmp_path / "new" / TOKEN_FILE).stat().st_mode)
    assert mode == 0o600


def test_a_token_file_open_to_others_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / TOKEN_FILE
    path.write_text("secret-token\n")
    path.chmod(0o644)
    assert StateDir(tmp_path).api_token() == "secret-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_one_daemon_at_a_time_holds_the_directory(tmp_path: Path) -> None:
    first, second = StateDir(tmp_path), StateDir(tmp_path)
    first.lock()
    with pytest.raises(StateDirBusy, match=rf"in use by roomsystem \(pid {os.getpid()}\)"):
        second.lock()
    first.unlock()
    second.lock()
    second.unlock()
