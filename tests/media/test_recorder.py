"""Recordings survive a crash: kill -9 the recording process, the file still plays."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av

REPO = Path(__file__).resolve().parents[2]
RECORD_S = 5.0
MAY_LOSE_S = 2.0


def test_a_recording_killed_with_sigkill_still_plays(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.media.record_child", str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("RECORDING "), line
        path = Path(line.split(" ", 1)[1].strip())
        time.sleep(RECORD_S)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()

    last: dict[str, float] = {}
    decoded = 0
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        for packet in container.demux():
            if packet.pts is None or packet.time_base is None:
                continue
            kind = packet.stream.metadata.get("title", "")
            last[kind] = max(last.get(kind, 0.0), float(packet.pts * packet.time_base))
            if packet.stream is video:
                decoded += len(packet.decode())
    assert decoded >= (RECORD_S - MAY_LOSE_S) * 15 * 0.7  # 15 fps, minus a busy machine's drops
    assert last["composed video"] >= RECORD_S - MAY_LOSE_S
    assert last["meeting mix"] >= RECORD_S - MAY_LOSE_S
    assert last["participant 1"] >= RECORD_S - MAY_LOSE_S
    log = [json.loads(line) for line in path.with_suffix(".jsonl").read_text().splitlines()]
    assert [e["event"] for e in log] == ["started", "track"]  # no "stopped": it was killed
    assert log[1]["name"] == "Ada"
