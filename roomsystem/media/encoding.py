"""Encode once: one encoder per outgoing stream, the same packets for every peer.

aiortc encodes a track separately for each ``RTCRtpSender``: with four peers the room's
camera is encoded four times. Here each stream (room camera, room audio, content) is
encoded once, in its own thread, and every subscribed peer gets a `PacketTrack` whose
``recv()`` returns the shared ``av.Packet`` (aiortc only packetizes those).

aiortc then no longer does two things its per-sender encoder did, so the stream does them:

* a keyframe when any peer asks for one (RTCP PLI or FIR), coalesced across peers;
* a bitrate that follows the peers' bandwidth estimates (RTCP REMB): the weakest peer's,
  within configured limits, so nobody gets more than their link carries.

`EncodedStream.attach_sender` hooks an aiortc sender's RTCP handling to get both.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Literal

import av
from aiortc import MediaStreamTrack, RTCRtpSender
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpSrPacket,
    unpack_remb_fci,
)
from av.audio.codeccontext import AudioCodecContext
from av.video.codeccontext import VideoCodecContext

logger = logging.getLogger(__name__)

VIDEO_TIME_BASE = fractions.Fraction(1, 90000)
AUDIO_RATE = 48000
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)
AUDIO_FRAME_SAMPLES = 960  # 20 ms at 48 kHz: what browsers send and expect

VideoCodec = Literal["vp8", "h264"]
MIME_TYPES: dict[str, str] = {"vp8": "video/VP8", "h264": "video/H264", "opus": "audio/opus"}

# A peer that lost packets asks again at once; keyframes are large, so answer at most
# this often (a request inside the window is remembered, not dropped).
KEYFRAME_MIN_INTERVAL_S = 0.3
# Re-tune the encoder only on a real change: a VP8 re-tune costs a keyframe.
BITRATE_CHANGE_RATIO = 0.1
VP8_RETUNE_S = 1.0
# Packets a slow peer may have queued before it is resynchronised with a keyframe.
TRACK_QUEUE_PACKETS = {"video": 30, "audio": 50}


@dataclass(frozen=True, kw_only=True)
class VideoEncoderConfig:
    """How the room's video is encoded: realtime settings, bitrate limits in bit/s."""

    codec: VideoCodec = "vp8"
    frame_rate: int = 30
    min_bitrate: int = 250_000
    max_bitrate: int = 1_500_000
    start_bitrate: int = 1_000_000

    def clamp(self, bitrate: int) -> int:
        return max(self.min_bitrate, min(bitrate, self.max_bitrate))


class VideoEncoder:
    """A realtime VP8 or H.264 encoder for yuv420p frames; used by one thread at a time."""

    def __init__(self, config: VideoEncoderConfig) -> None:
        self.config = config
        self.bitrate = config.clamp(config.start_bitrate)
        self._codec: VideoCodecContext | None = None
        self._retuned_at = 0.0

    def encode(
        self, frame: av.VideoFrame | av.AudioFrame, keyframe: bool, bitrate: int
    ) -> list[av.Packet]:
        """Encode ``frame`` (pts in 1/90000 s); ``keyframe`` forces a complete picture."""
        if not isinstance(frame, av.VideoFrame):
            raise TypeError(f"a video encoder takes video frames, got {type(frame).__name__}")
        self._retune(frame, bitrate)
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        frame.pict_type = (
            av.video.frame.PictureType.I if keyframe else av.video.frame.PictureType.NONE
        )
        if self._codec is None:
            self._codec = self._open(frame.width, frame.height)
        packets = self._codec.encode(frame)
        for packet in packets:
            packet.time_base = VIDEO_TIME_BASE
        return packets

    def _retune(self, frame: av.VideoFrame, bitrate: int) -> None:
        codec = self._codec
        changed = abs(bitrate - self.bitrate) > BITRATE_CHANGE_RATIO * self.bitrate
        now = time.monotonic()
        if changed and self.config.codec == "vp8" and now - self._retuned_at < VP8_RETUNE_S:
            changed = False  # each VP8 re-tune costs a keyframe: not more than this often
        if changed:
            self.bitrate = bitrate
            self._retuned_at = now
        if codec is None:
            return
        if codec.width != frame.width or codec.height != frame.height:
            self._codec = None
        elif changed and self.config.codec == "h264":
            # libx264 reconfigures its rate control in place, without a keyframe.
            codec.bit_rate = bitrate
        elif changed:
            # libvpx through FFmpeg only takes a new bitrate when opened again.
            self._codec = None

    def _open(self, width: int, height: int) -> VideoCodecContext:
        name = "libvpx" if self.config.codec == "vp8" else "libx264"
        codec = av.CodecContext.create(name, "w")
        assert isinstance(codec, VideoCodecContext)
        codec.width = width
        codec.height = height
        codec.pix_fmt = "yuv420p"
        codec.time_base = VIDEO_TIME_BASE
        codec.framerate = fractions.Fraction(self.config.frame_rate)
        codec.bit_rate = self.bitrate
        # Keyframes only when a peer asks: periodic ones waste bandwidth at a steady state.
        codec.gop_size = 3000
        # One thread: on a busy 2-core room box a second thread costs more than it saves.
        codec.thread_count = 1
        if self.config.codec == "vp8":
            codec.qmin = 4
            codec.qmax = 56
            codec.options = {
                "deadline": "realtime",
                # Negative: a fixed speed. A positive value lets libvpx adapt its speed to
                # a CPU budget and costs about twice as much here (7 vs 4 ms at 720p).
                "cpu-used": "-6",
                "lag-in-frames": "0",
                "error-resilient": "1",
                "static-thresh": "1",
                "undershoot-pct": "95",
                "overshoot-pct": "15",
                "bufsize": str(self.bitrate),
                "maxrate": str(self.bitrate),
            }
        else:
            codec.profile = "Baseline"
            codec.options = {
                "preset": "ultrafast",
                "tune": "zerolatency",
                "level": "31",
                "maxrate": str(self.bitrate),
                "bufsize": str(self.bitrate),
            }
        codec.open()
        return codec


class AudioEncoder:
    """Opus, 48 kHz stereo, 20 ms packets, as browsers expect."""

    def __init__(self, bitrate: int = 64_000) -> None:
        codec = av.CodecContext.create("libopus", "w")
        assert isinstance(codec, AudioCodecContext)
        codec.bit_rate = bitrate
        codec.format = "s16"
        codec.layout = "stereo"
        codec.sample_rate = AUDIO_RATE
        codec.time_base = AUDIO_TIME_BASE
        codec.options = {"application": "voip"}
        self._codec = codec
        self._resampler = av.AudioResampler(
            format="s16", layout="stereo", rate=AUDIO_RATE, frame_size=AUDIO_FRAME_SAMPLES
        )
        self._next_pts = 0

    def encode(
        self, frame: av.VideoFrame | av.AudioFrame, keyframe: bool = False, bitrate: int = 0
    ) -> list[av.Packet]:
        """Encode ``frame``; keyframes and bitrate do not apply to this voice codec."""
        if not isinstance(frame, av.AudioFrame):
            raise TypeError(f"an audio encoder takes audio frames, got {type(frame).__name__}")
        packets: list[av.Packet] = []
        for chunk in self._resampler.resample(frame):
            chunk.pts = self._next_pts
            chunk.time_base = AUDIO_TIME_BASE
            self._next_pts += chunk.samples
            packets += self._codec.encode(chunk)
        for packet in packets:
            packet.time_base = AUDIO_TIME_BASE
        return packets


class BitrateByWeakestPeer:
    """The bitrate the weakest peer can take, from each peer's latest REMB estimates.

    A peer may receive a stream through more than one sender (``via``); each keeps its
    own estimate until that sender moves to another stream or the peer is forgotten.
    """

    def __init__(self, config: VideoEncoderConfig) -> None:
        self.config = config
        self._estimates: dict[Hashable, dict[int, int]] = {}

    def report(self, peer: Hashable, bitrate: int, via: int = 0) -> None:
        self._estimates.setdefault(peer, {})[via] = bitrate

    def forget(self, peer: Hashable, via: int | None = None) -> None:
        if via is None:
            self._estimates.pop(peer, None)
            return
        estimates = self._estimates.get(peer, {})
        estimates.pop(via, None)
        if not estimates:
            self._estimates.pop(peer, None)

    @property
    def target(self) -> int:
        values = [rate for per_sender in self._estimates.values() for rate in per_sender.values()]
        if not values:
            return self.config.clamp(self.config.start_bitrate)
        return self.config.clamp(min(values))


class PacketTrack(MediaStreamTrack):
    """One peer's view of an `EncodedStream`: ``recv()`` returns the shared packets.

    A video track starts at a keyframe and asks for one; if its peer falls behind by more
    than a queue's worth, it drops what is queued and resynchronises at the next keyframe.
    """

    def __init__(self, stream: EncodedStream) -> None:
        super().__init__()
        self.kind = stream.kind
        self._stream = stream
        self._queue: asyncio.Queue[av.Packet | None] = asyncio.Queue()
        self._limit = TRACK_QUEUE_PACKETS[stream.kind]
        self._waiting_for_keyframe = stream.kind == "video"
        # Asked for on the next recv(): a track nobody reads (replaced in its sender and
        # never stopped) must not make the shared encoder send keyframes.
        self._keyframe_due = self._waiting_for_keyframe
        self.packets_sent = 0
        self.resyncs = 0

    @property
    def stream(self) -> EncodedStream:
        """The shared stream this track is a view of."""
        return self._stream

    def deliver(self, packet: av.Packet) -> None:
        """Queue ``packet`` for this peer (on the event loop)."""
        if self._waiting_for_keyframe:
            if not packet.is_keyframe:
                return
            self._waiting_for_keyframe = False
        if self._queue.qsize() >= self._limit:
            self._resync()
            return
        self._queue.put_nowait(packet)

    def _resync(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()
        self.resyncs += 1
        if self.kind == "video":
            self._waiting_for_keyframe = True
            self._keyframe_due = True

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self._keyframe_due:
            self._keyframe_due = False
            self._stream.request_keyframe()
        packet = await self._queue.get()
        if packet is None:
            raise MediaStreamError
        self.packets_sent += 1
        return packet

    def stop(self) -> None:
        if self.readyState == "live":
            self._stream.unsubscribe(self)
            self._queue.put_nowait(None)
        super().stop()


Encoder = VideoEncoder | AudioEncoder


class EncodedStream:
    """One outgoing stream, encoded once in its own thread, fanned out to `PacketTrack`s.

    Frames come from any thread through `push`; packets are delivered on the event loop
    the subscribers subscribed on.
    ``on_active(bool)`` is told when the first peer subscribes and the last one leaves,
    so that capture only runs while someone receives.
    """

    def __init__(
        self,
        kind: Literal["audio", "video"],
        encoder: Encoder,
        *,
        name: str,
        bitrate: BitrateByWeakestPeer | None = None,
        on_active: Callable[[bool], None] | None = None,
    ) -> None:
        self.kind = kind
        self.name = name
        self._encoder = encoder
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bitrate = bitrate
        self._on_active = on_active
        self._tracks: set[PacketTrack] = set()
        # Video: only the newest frame matters, an old one would add latency.
        # Audio: every frame matters, a short backlog is tolerated.
        self._frames: queue.Queue[av.VideoFrame | av.AudioFrame | None] = queue.Queue(
            maxsize=1 if kind == "video" else 50
        )
        self._keyframe_wanted = False
        self._last_forced_keyframe = 0.0
        self._thread: threading.Thread | None = None
        self.frames_encoded = 0
        self.frames_dropped = 0
        self.keyframes_forced = 0
        self.bytes_encoded = 0
        # Each sender's latest RTCP receiver report about this stream: (fraction, lost).
        self._losses: dict[tuple[Hashable, int], tuple[float, int]] = {}

    # -- subscribers (event loop) --------------------------------------------------

    def subscribe(self) -> PacketTrack:
        """A new peer's track (on the event loop)."""
        self._loop = asyncio.get_running_loop()
        track = PacketTrack(self)
        self._tracks.add(track)
        if len(self._tracks) == 1 and self._on_active is not None:
            self._on_active(True)
        return track

    def unsubscribe(self, track: PacketTrack) -> None:
        if track in self._tracks:
            self._tracks.discard(track)
            if not self._tracks and self._on_active is not None:
                self._on_active(False)

    @property
    def subscribers(self) -> int:
        return len(self._tracks)

    def _deliver(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            for track in tuple(self._tracks):
                track.deliver(packet)

    # -- peer feedback -------------------------------------------------------------

    def request_keyframe(self) -> None:
        """Make the next frame a keyframe (soon, if one was just forced)."""
        self._keyframe_wanted = True

    def report_bitrate(self, peer: Hashable, bitrate: int, via: int = 0) -> None:
        if self._bitrate is not None:
            self._bitrate.report(peer, bitrate, via)

    def forget_peer(self, peer: Hashable, via: int | None = None) -> None:
        """Drop ``peer``'s estimates (only those through sender ``via``, if given)."""
        if self._bitrate is not None:
            self._bitrate.forget(peer, via)
        for key in [k for k in self._losses if k[0] == peer and via in (None, k[1])]:
            del self._losses[key]

    def report_loss(self, peer: Hashable, via: int, report: RtcpReceiverInfo) -> None:
        """Keep a peer's receiver report (RTCP RR/SR) on this stream."""
        self._losses[(peer, via)] = (report.fraction_lost / 256, max(0, report.packets_lost))

    @property
    def fraction_lost(self) -> float:
        """The worst peer's fraction of packets lost since its previous report (0..1)."""
        return max((fraction for fraction, _ in self._losses.values()), default=0.0)

    @property
    def packets_lost(self) -> int:
        """The packets that the current peers reported lost, summed."""
        return sum(lost for _, lost in self._losses.values())

    @property
    def target_bitrate(self) -> int:
        return self._target()

    def attach_sender(self, peer: Hashable, sender: RTCRtpSender) -> None:
        """`attach_sender` for a sender of this stream (any stream's works the same)."""
        attach_sender(peer, sender)

    # -- frames in, packets out (encoder thread) -----------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"encode-{self.name}", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """End every subscriber's track and stop the encoder thread (on the event loop)."""
        self.end_tracks()
        self.stop_encoder()

    def end_tracks(self) -> None:
        """End every subscriber's track (on the event loop: tracks are asyncio objects)."""
        for track in tuple(self._tracks):
            track.stop()

    def stop_encoder(self) -> None:
        """Stop the encoder thread and wait for it (any thread: it may block briefly)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._put(None)
            thread.join(timeout=5)

    def push(self, frame: av.VideoFrame | av.AudioFrame) -> None:
        """Hand a frame to the encoder (any thread); video keeps only the newest."""
        if self._thread is None or not self._tracks:
            return
        self._put(frame)

    def _put(self, item: av.VideoFrame | av.AudioFrame | None) -> None:
        while True:
            try:
                self._frames.put_nowait(item)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._frames.get_nowait()
                    self.frames_dropped += 1

    def _run(self) -> None:
        while (frame := self._frames.get()) is not None:
            try:
                packets = self._encoder.encode(frame, self._take_keyframe(), self._target())
            except (av.FFmpegError, ValueError):
                logger.exception("%s: encoding failed; the frame is dropped", self.name)
                continue
            self.frames_encoded += 1
            self.bytes_encoded += sum(packet.size for packet in packets)
            if packets and self._loop is not None:
                try:
                    self._loop.call_soon_threadsafe(self._deliver, packets)
                except RuntimeError:
                    return  # the loop closed under us: nobody is left to send to

    def _take_keyframe(self) -> bool:
        if not self._keyframe_wanted:
            return False
        now = time.monotonic()
        if now - self._last_forced_keyframe < KEYFRAME_MIN_INTERVAL_S:
            return False
        self._keyframe_wanted = False
        self._last_forced_keyframe = now
        self.keyframes_forced += 1
        return True

    def _target(self) -> int:
        return self._bitrate.target if self._bitrate is not None else 0


def attach_sender(peer: Hashable, sender: RTCRtpSender) -> None:
    """Route ``sender``'s PLI/FIR to a keyframe and its REMB to the bitrate of the
    `EncodedStream` its track belongs to at the time the feedback arrives.

    aiortc drops both for packet tracks; wrapping the sender's RTCP handler is the one
    place that sees them, and aiortc's own handling still runs afterwards. Attaching a
    sender again (after ``replaceTrack``) changes nothing: the stream is looked up per
    packet, and the estimate left in a stream the sender no longer sends is dropped.
    """
    if getattr(sender, "_roomsystem_feedback", None) is not None:
        return
    feedback = _SenderFeedback(peer, sender)
    setattr(sender, "_roomsystem_feedback", feedback)  # noqa: B010 (marks the wrapped sender)
    setattr(sender, "_handle_rtcp_packet", feedback.handle_rtcp)  # noqa: B010 (an instance hook)


class _SenderFeedback:
    """One sender's RTCP feedback, passed to the stream it currently sends."""

    def __init__(self, peer: Hashable, sender: RTCRtpSender) -> None:
        self._peer = peer
        self._sender = sender
        self._original = sender._handle_rtcp_packet
        self._reported_to: EncodedStream | None = None

    async def handle_rtcp(self, packet: AnyRtcpPacket) -> None:
        track = self._sender.track
        if isinstance(track, PacketTrack):
            if isinstance(packet, RtcpPsfbPacket):
                self._on_feedback(track.stream, packet)
            elif isinstance(packet, RtcpRrPacket | RtcpSrPacket):
                self._on_reports(track.stream, packet.reports)
        await self._original(packet)

    def _on_reports(self, stream: EncodedStream, reports: list[RtcpReceiverInfo]) -> None:
        for report in reports:
            if report.ssrc == self._sender._ssrc:
                stream.report_loss(self._peer, id(self._sender), report)

    def _on_feedback(self, stream: EncodedStream, packet: RtcpPsfbPacket) -> None:
        if packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            stream.request_keyframe()
        elif packet.fmt == RTCP_PSFB_APP:
            with contextlib.suppress(ValueError):
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
                if self._sender._ssrc in ssrcs:
                    via = id(self._sender)
                    if self._reported_to is not None and self._reported_to is not stream:
                        self._reported_to.forget_peer(self._peer, via)
                    stream.report_bitrate(self._peer, bitrate, via)
                    self._reported_to = stream
