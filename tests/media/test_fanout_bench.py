"""The fan-out benchmark runs and reports what the issue asks for (figures are taken later)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHORT_RUN = ["--peers", "1,2", "--modes", "shared", "--duration", "1.5", "--warmup", "1.5"]
FIELDS = {"mode", "peers", "fps", "latency_p50_ms", "latency_p95_ms", "sender_cpu_pct"}


def test_the_benchmark_prints_a_json_line_per_run_and_a_table() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.fanout", *SHORT_RUN],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=50,
        check=True,
    )
    runs = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["mode"], r["peers"]) for r in runs] == [("shared", 1), ("shared", 2)]
    for run in runs:
        assert set(run) >= FIELDS
        assert run["fps"] > 5  # frames went through, even on a busy machine
        assert run["latency_p50_ms"] is not None
        assert 0 < run["latency_p50_ms"] <= run["latency_p95_ms"] < 5000
        assert run["sender_cpu_pct"] > 0
    assert "cpu/N=1" in done.stderr
    assert "shared      2" in done.stderr
