"""Fan-out benchmark: the room's 720p30 camera to N receiving WebRTC peers.

For each mode and each N, a sending process (the room) captures the synthetic camera,
stamps the capture time into every frame (a barcode of luma blocks, which survives
encoding) and sends it to N aiortc peers in this process, which decode every frame and
read the stamp back:

* ``stock``: aiortc's own per-sender encoder, one encode per peer;
* ``shared``: the room's shared encoder (roomsystem.media.encoding), one encode for all.

All traffic stays on loopback (ICE host 127.0.0.1, no STUN/TURN). Prints one JSON line per
run (mode, peers, fps, latency_p50_ms, latency_p95_ms, sender_cpu_pct, ...) and a table.

    python -m bench.fanout                       # N = 1, 2, 4, 8, both modes, 10 s each
    python -m bench.fanout --peers 1,4 --duration 3 --modes shared
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Literal

import av
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from roomsystem.media.capture import VideoCapture, VideoSource
from roomsystem.media.encoding import (
    BitrateByWeakestPeer,
    EncodedStream,
    VideoEncoder,
    VideoEncoderConfig,
)
from roomsystem.media.frames import FrameFanout
from roomsystem.media.ice import host_addresses, rtc_configuration
from roomsystem.media.yuv import C_NEUTRAL, Y_BLACK, Y_WHITE, planes

Mode = Literal["stock", "shared"]
MODES: tuple[Mode, ...] = ("stock", "shared")

# The stamp: 40 bits of wall-clock milliseconds and an 8-bit check, one 16x16 luma block
# per bit along the top of the picture; blocks this big survive any sane bitrate.
STAMP_BITS = 48
STAMP_BLOCK = 16
STAMP_MODULUS = 1 << 40


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _stamp_bits(value: int) -> list[int]:
    value %= STAMP_MODULUS
    check = sum(value.to_bytes(5, "big")) & 0xFF
    word = (value << 8) | check
    return [(word >> (STAMP_BITS - 1 - i)) & 1 for i in range(STAMP_BITS)]


def stamp(frame: av.VideoFrame, ms: int | None = None) -> av.VideoFrame:
    """Write ``ms`` (default: now, wall clock) into ``frame``'s top rows, in place."""
    y, u, v = planes(frame)
    for index, bit in enumerate(_stamp_bits(_wall_ms() if ms is None else ms)):
        x = index * STAMP_BLOCK
        y[0:STAMP_BLOCK, x : x + STAMP_BLOCK] = Y_WHITE if bit else Y_BLACK
    half = STAMP_BLOCK // 2
    u[0:half, 0 : STAMP_BITS * half] = C_NEUTRAL
    v[0:half, 0 : STAMP_BITS * half] = C_NEUTRAL
    return frame


def read_stamp(frame: av.VideoFrame) -> int | None:
    """The milliseconds `stamp` wrote, or None when the check does not match."""
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    y = planes(frame)[0]
    inner = y[4:12, : STAMP_BITS * STAMP_BLOCK].reshape(8, STAMP_BITS, STAMP_BLOCK)
    means = inner[:, :, 4:12].mean(axis=(0, 2))
    word = 0
    for mean in means:
        word = (word << 1) | int(mean > (Y_BLACK + Y_WHITE) / 2)
    value, check = word >> 8, word & 0xFF
    if sum(value.to_bytes(5, "big")) & 0xFF != check:
        return None
    return value


def latency_ms(stamped: int, now_ms: int) -> int:
    return (now_ms - stamped) % STAMP_MODULUS


# -- the sending process (the room) --------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    mode: Mode
    peers: int
    codec: Literal["vp8", "h264"]
    width: int
    height: int
    frame_rate: int


def _prefer(pc: RTCPeerConnection, codec: str) -> None:
    mime = {"vp8": "video/VP8", "h264": "video/H264"}[codec]
    codecs = RTCRtpSender.getCapabilities("video").codecs
    chosen = [c for c in codecs if c.mimeType == mime]
    chosen += [c for c in codecs if c.mimeType == "video/rtx"]
    for transceiver in pc.getTransceivers():
        transceiver.setCodecPreferences(chosen)


async def _recv_message(conn: Connection, timeout: float = 60.0) -> Any:
    """Wait for the other process without blocking the loop or borrowing its threads."""
    deadline = time.monotonic() + timeout
    while not conn.poll():
        if time.monotonic() > deadline:
            raise TimeoutError("the other benchmark process did not answer")
        await asyncio.sleep(0.02)
    return conn.recv()


async def _send_room(conn: Connection, spec: RunSpec) -> None:
    source = VideoSource(width=spec.width, height=spec.height, frame_rate=spec.frame_rate)
    stream: EncodedStream | None = None
    make_track: Callable[[], MediaStreamTrack]
    sink: Callable[[av.VideoFrame], None]
    if spec.mode == "shared":
        config = VideoEncoderConfig(codec=spec.codec, frame_rate=spec.frame_rate)
        stream = EncodedStream(
            "video", VideoEncoder(config), name="camera", bitrate=BitrateByWeakestPeer(config)
        )
        stream.start()
        shared = stream
        make_track = stream.subscribe

        def sink(frame: av.VideoFrame) -> None:
            shared.push(stamp(frame))

    else:
        fanout = FrameFanout("video")
        make_track = fanout.subscribe

        def sink(frame: av.VideoFrame) -> None:
            fanout.publish_threadsafe(stamp(frame))

    capture = VideoCapture(source, sink)
    pcs: list[RTCPeerConnection] = []
    try:
        offers = []
        for index in range(spec.peers):
            pc = RTCPeerConnection(rtc_configuration())
            pcs.append(pc)
            transceiver = pc.addTransceiver(make_track(), direction="sendonly")
            _prefer(pc, spec.codec)
            if stream is not None:
                stream.attach_sender(index, transceiver.sender)
            await pc.setLocalDescription(await pc.createOffer())
            offers.append(pc.localDescription.sdp)
        capture.start()
        conn.send(offers)
        answers = await _recv_message(conn)
        for pc, sdp in zip(pcs, answers, strict=True):
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        assert await _recv_message(conn) == "start"
        cpu0, wall0, captured0 = time.process_time(), time.monotonic(), capture.frames
        keyframes0 = stream.keyframes_forced if stream is not None else 0
        encoded0 = stream.frames_encoded if stream is not None else 0
        assert await _recv_message(conn) == "stop"
        elapsed = time.monotonic() - wall0
        conn.send(
            {
                "sender_cpu_pct": 100 * (time.process_time() - cpu0) / elapsed,
                "captured_fps": (capture.frames - captured0) / elapsed,
                "keyframes_forced": (stream.keyframes_forced - keyframes0) if stream else None,
                "encoded_fps": (stream.frames_encoded - encoded0) / elapsed if stream else None,
                "capture_error": capture.error,
            }
        )
    finally:
        capture.stop()
        for pc in pcs:
            await pc.close()
        if stream is not None:
            stream.stop()


def _sender_process(conn: Connection, spec: RunSpec) -> None:
    with host_addresses(["127.0.0.1"]):
        asyncio.run(_send_room(conn, spec))


# -- the receiving peers (this process) -------------------------------------------


@dataclass
class _Receiver:
    measuring: bool = False
    frames: list[int] = field(default_factory=list)
    latencies: list[int] = field(default_factory=list)
    unreadable: int = 0

    async def consume(self, track: MediaStreamTrack, peer: int) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                now = _wall_ms()
                if not self.measuring or not isinstance(frame, av.VideoFrame):
                    continue
                self.frames[peer] += 1
                stamped = read_stamp(frame)
                if stamped is None:
                    self.unreadable += 1
                else:
                    self.latencies.append(latency_ms(stamped, now))


def _percentile(values: Sequence[int], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))])


async def run_once(spec: RunSpec, warmup_s: float, duration_s: float) -> dict[str, Any]:
    """One measurement: start the room process, connect N peers, measure, tear down."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_sender_process, args=(child, spec), daemon=True)
    process.start()
    receiver = _Receiver(frames=[0] * spec.peers)
    pcs: list[RTCPeerConnection] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        offers = await _recv_message(parent)
        answers = []
        for peer, sdp in enumerate(offers):
            pc = RTCPeerConnection(rtc_configuration())
            pcs.append(pc)

            def on_track(track: MediaStreamTrack, peer: int = peer) -> None:
                tasks.append(asyncio.ensure_future(receiver.consume(track, peer)))

            pc.on("track", on_track)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            answers.append(pc.localDescription.sdp)
        parent.send(answers)
        await asyncio.sleep(warmup_s)
        receiver.measuring = True
        parent.send("start")
        started = time.monotonic()
        await asyncio.sleep(duration_s)
        receiver.measuring = False
        parent.send("stop")
        elapsed = time.monotonic() - started
        sender = await _recv_message(parent)
    finally:
        for pc in pcs:
            await pc.close()
        for task in tasks:
            task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        process.join(timeout=15)
        if process.is_alive():
            process.kill()
            process.join()
    for outcome in outcomes:
        if isinstance(outcome, Exception):
            raise RuntimeError(f"a receiving peer failed: {outcome!r}") from outcome
    fps = [count / elapsed for count in receiver.frames]
    p50 = _percentile(receiver.latencies, 0.50)
    p95 = _percentile(receiver.latencies, 0.95)
    return {
        "mode": spec.mode,
        "peers": spec.peers,
        "codec": spec.codec,
        "fps": round(statistics.fmean(fps), 1),
        "fps_min": round(min(fps), 1),
        "latency_p50_ms": p50,
        "latency_p95_ms": p95,
        "sender_cpu_pct": round(sender["sender_cpu_pct"], 1),
        "duration_s": round(elapsed, 2),
        "captured_fps": round(sender["captured_fps"], 1),
        "keyframes_forced": sender["keyframes_forced"],
        "encoded_fps": None if sender["encoded_fps"] is None else round(sender["encoded_fps"], 1),
        "unreadable_stamps": receiver.unreadable,
    }


def _table(results: Sequence[dict[str, Any]]) -> str:
    cpu_at_one = {r["mode"]: r["sender_cpu_pct"] for r in results if r["peers"] == 1}
    lines = [
        f"{'mode':<7}{'peers':>6}{'fps':>7}{'p50 ms':>8}{'p95 ms':>8}{'cpu %':>8}{'cpu/N=1':>9}"
    ]
    for r in results:
        base = cpu_at_one.get(r["mode"])
        ratio = f"{r['sender_cpu_pct'] / base:.2f}" if base else "-"
        lines.append(
            f"{r['mode']:<7}{r['peers']:>6}{r['fps']:>7.1f}{_ms(r['latency_p50_ms']):>8}"
            f"{_ms(r['latency_p95_ms']):>8}{r['sender_cpu_pct']:>8.1f}{ratio:>9}"
        )
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,2,4,8, got {text!r}") from None
    if not values or min(values) < 1 or max(values) > 32:
        raise argparse.ArgumentTypeError(f"peer counts must be 1 to 32, got {text!r}")
    return values


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    if not (width.isdigit() and height.isdigit()) or int(width) % 2 or int(height) % 4:
        raise argparse.ArgumentTypeError(f"size must be like 1280x720 (even sizes), got {text!r}")
    # The time stamp is a row of 48 blocks of 16 pixels: the picture must be that wide.
    if not (STAMP_BITS * STAMP_BLOCK <= int(width) <= 3840 and 64 <= int(height) <= 2160):
        raise argparse.ArgumentTypeError(f"size must be 768x64 to 3840x2160, got {text!r}")
    return int(width), int(height)


def _modes(text: str) -> list[Mode]:
    modes = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise argparse.ArgumentTypeError(f"modes are stock and shared, got {text!r}")
    return [m for m in MODES if m in modes]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fanout", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--peers", type=_int_list, default=[1, 2, 4, 8], help="e.g. 1,2,4,8")
    parser.add_argument("--modes", type=_modes, default=list(MODES), help="stock,shared")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--codec", choices=("vp8", "h264"), default="vp8")
    parser.add_argument("--size", type=_size, default=(1280, 720), help="e.g. 1280x720")
    parser.add_argument("--rate", type=int, choices=range(5, 61), default=30, metavar="5..60")
    args = parser.parse_args(argv)
    width, height = args.size
    results = []
    with host_addresses(["127.0.0.1"]):
        for mode in args.modes:
            for peers in args.peers:
                spec = RunSpec(mode, peers, args.codec, width, height, args.rate)
                result = asyncio.run(run_once(spec, args.warmup, args.duration))
                print(json.dumps(result), flush=True)
                results.append(result)
    # The table goes to stderr so that stdout stays one JSON document per line.
    print(_table(results), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
