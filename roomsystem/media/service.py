"""The room's media: what the meeting sends, what it receives, and what the room shows.

`MediaService` owns one pipeline per room:

* out: the camera and microphone, each captured once and encoded once (`EncodedStream`),
  and the shared content (a laptop's or a participant's screen), also encoded once; every
  peer gets `PacketTrack`s of the same packets (`room_tracks`, `content_track`);
* in: remote participants' audio goes to the `AudioMixer` (the room speaker's mix), their
  video to the `Compositor` (the room display's picture, `display`);
* the `Recorder` writes the composed picture and the audio while a meeting records.

Capture only runs while a peer receives the room or a recording runs. In the demo, the
composed picture is written once a second to ``<state_dir>/media/display.jpg`` with its
layout in ``display.json``, so anyone can look at what the room display shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
from aiortc import MediaStreamTrack, RTCRtpSender, RTCRtpTransceiver

from roomsystem.bus import StateBus
from roomsystem.commands import Arguments, Command
from roomsystem.config import MediaSettings, WebRTCSettings
from roomsystem.lifecycle import Service
from roomsystem.media import yuv
from roomsystem.media.capture import (
    AudioCapture,
    AudioSource,
    VideoCapture,
    VideoSource,
    silence_like,
    stamped_now,
)
from roomsystem.media.compositor import Compositor, DisplayLayout, DisplayOutput
from roomsystem.media.encoding import (
    MIME_TYPES,
    AudioEncoder,
    BitrateByWeakestPeer,
    EncodedStream,
    PacketTrack,
    VideoEncoder,
    VideoEncoderConfig,
    attach_sender,
)
from roomsystem.media.frames import FrameFanout
from roomsystem.media.ice import apply_webrtc_settings
from roomsystem.media.mixer import ROOM, AudioMixer
from roomsystem.media.playback import PlaybackError, SpeakerPlayback
from roomsystem.media.recorder import Recorder
from roomsystem.media.shm import SharedFrameWriter, default_path
from roomsystem.media.state import DisplayFeed, MediaState, StreamStats

logger = logging.getLogger(__name__)

SNAPSHOT_INTERVAL_S = 1.0
STATS_INTERVAL_S = 1.0
# While the camera is off, peers get a black picture this often (new peers need one).
CAMERA_OFF_FRAME_S = 1.0


class CameraArgs(Arguments):
    on: bool


@dataclass(frozen=True)
class RoomStreams:
    """The encoded-once streams of one participant, for the others."""

    audio: EncodedStream
    video: EncodedStream

    def end_tracks(self) -> None:
        self.audio.end_tracks()
        self.video.end_tracks()

    def stop_encoders(self) -> None:
        self.audio.stop_encoder()
        self.video.stop_encoder()


@dataclass(frozen=True)
class RoomTracks:
    """One peer's tracks of the room: its own, stopped when the peer goes."""

    audio: PacketTrack
    video: PacketTrack


class ShareDisplay:
    """Shows a laptop's share (from the sharing service) as the display's content."""

    def __init__(self, media: MediaService) -> None:
        self._media = media
        self._session: str | None = None
        self._name = ""

    def share_started(self, session_id: str, name: str) -> None:
        self._session, self._name = session_id, name

    def share_frame(self, frame: av.VideoFrame) -> None:
        if self._session is not None:
            self._media.show_content_frame(self._name, frame)

    def share_ended(self, session_id: str) -> None:
        if session_id == self._session:
            self._session = None
            self._media.show_content_frame(None, None)


class MediaService(Service):
    """Capture, encode-once fan-out, mixing, composition and recording for one room."""

    name = "media"

    def __init__(
        self,
        settings: MediaSettings,
        webrtc: WebRTCSettings,
        bus: StateBus | None,
        *,
        state_dir: Path,
        write_snapshots: bool = True,
        display_shm: Path | None = None,
    ) -> None:
        self.settings = settings
        self._webrtc = webrtc
        self._bus = bus
        self._state_dir = state_dir
        self._write_snapshots = write_snapshots
        width, height = (int(n) for n in settings.video_size.split("x"))
        self.video_config = VideoEncoderConfig(
            codec=settings.video_codec,
            frame_rate=settings.frame_rate,
            min_bitrate=settings.min_bitrate_kbps * 1000,
            max_bitrate=settings.max_bitrate_kbps * 1000,
            start_bitrate=min(1_000_000, settings.max_bitrate_kbps * 1000),
        )
        self.camera = self._video_stream("camera")
        self.content = self._video_stream("content")
        self.microphone = EncodedStream(
            "audio", AudioEncoder(), name="microphone", on_active=self._capture_needed
        )
        self._video_capture = VideoCapture(
            VideoSource(
                device=settings.camera,
                input_format=settings.camera_format,
                width=width,
                height=height,
                frame_rate=settings.frame_rate,
            ),
            self.camera.push,
        )
        self._audio_capture = AudioCapture(AudioSource(device=settings.microphone), self._on_mic)
        self.mixer = AudioMixer()
        self.compositor = Compositor(
            width, height, settings.frame_rate, active_speaker=lambda: self.mixer.active_speaker
        )
        self.recorder = Recorder(
            settings.recordings_dir or state_dir / "recordings",
            self.compositor.output,
            self.mixer,
            width=width,
            height=height,
            frame_rate=settings.frame_rate,
            on_change=self._capture_needed,
        )
        self.share_display = ShareDisplay(self)
        self._peers: dict[str, list[MediaStreamTrack]] = {}
        self._names: dict[str, str] = {}
        self._forwards: dict[str, RoomStreams] = {}
        self._muted: set[str] = set()
        self._mic_muted = False
        self._volume = 50
        self._playback: SpeakerPlayback | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._undo_ice: Callable[[], None] | None = None
        self._content_by: str | None = None
        self._camera_on = True
        self._camera_switched = asyncio.Event()
        self._stats = _StreamMeter()
        # The composed picture for the display app, in shared memory (see media/shm.py).
        self.display_shm_path = display_shm or default_path(state_dir)
        self._shm: SharedFrameWriter | None = None
        self._unlisten_shm: Callable[[], None] | None = None

    def _video_stream(self, name: str) -> EncodedStream:
        return EncodedStream(
            "video",
            VideoEncoder(self.video_config),
            name=name,
            bitrate=BitrateByWeakestPeer(self.video_config),
            on_active=self._capture_needed if name == "camera" else None,
        )

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start the pipeline (idempotent); `run` does this under the daemon."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._undo_ice = apply_webrtc_settings(self._webrtc)
        for stream in (self.camera, self.content, self.microphone):
            stream.start()
        self._shm = SharedFrameWriter(
            self.display_shm_path, self.compositor.width, self.compositor.height
        )
        self._unlisten_shm = self.display.listen(self._shm.write)
        self.compositor.start()
        self._tasks = [
            asyncio.ensure_future(self.mixer.run()),
            asyncio.ensure_future(self._black_while_camera_off()),
        ]
        if self._bus is not None:
            self._tasks.append(asyncio.ensure_future(self._follow_room(self._bus)))
            self._tasks.append(asyncio.ensure_future(self._publish_stats()))
        if self._write_snapshots:
            self._tasks.append(asyncio.ensure_future(self._write_display_snapshots()))
        if self.settings.speaker:
            self._start_playback(self.settings.speaker)

    def _start_playback(self, device: str) -> None:
        playback = SpeakerPlayback(device, lambda: self._volume)
        try:
            playback.start(self.mixer.speaker.subscribe())
        except PlaybackError as exc:
            # The meeting works without the speaker; the room's health shows the device.
            logger.error("%s: remote participants will not be heard in the room", exc)
            return
        self._playback = playback

    async def run(self) -> None:
        await self.start()
        await asyncio.Event().wait()

    async def close(self) -> None:
        """Stop everything this service started; idempotent."""
        if self._loop is None:
            return
        await self.recorder.stop()
        if self._playback is not None:
            await self._playback.stop()
            self._playback = None
        for peer in list(self._peers):
            self.detach(peer)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for stream in (self.camera, self.content, self.microphone):
            stream.end_tracks()
        await asyncio.to_thread(self._stop_threads)
        for peer_id in list(self._names):
            await self.remove_participant(peer_id)
        await self.compositor.stop()
        if self._unlisten_shm is not None:
            self._unlisten_shm()
        if self._shm is not None:
            self._shm.close()
            self._shm = None
        await self.mixer.close()
        if self._undo_ice is not None:
            self._undo_ice()
            self._undo_ice = None
        self._loop = None
        self._publish()

    def _stop_threads(self) -> None:
        self._video_capture.stop()
        self._audio_capture.stop()
        for stream in (self.camera, self.content, self.microphone):
            stream.stop_encoder()

    def _capture_needed(self, _active: bool) -> None:
        # A camera turned off is not read at all (its light goes out), not just hidden.
        video = self.camera.subscribers > 0 and self._camera_on
        audio = self.microphone.subscribers > 0 or self.recorder.recording
        for capture, wanted in ((self._video_capture, video), (self._audio_capture, audio)):
            if wanted:
                capture.start()
            else:
                capture.stop()
        self._publish()

    # -- the room's camera -----------------------------------------------------------

    @property
    def camera_on(self) -> bool:
        return self._camera_on

    def set_camera_on(self, on: bool) -> None:
        """Turn the room's camera on or off for everyone who receives it."""
        if on != self._camera_on:
            self._camera_on = on
            logger.info("room camera %s", "on" if on else "off")
            self._capture_needed(on)
            self._camera_switched.set()

    async def _black_while_camera_off(self) -> None:
        """While the camera is off, a black picture at once and then now and then; while it
        is on, nothing until it is switched."""
        width, height = self.compositor.width, self.compositor.height
        while True:
            if not self._camera_on and self.camera.subscribers:
                self.camera.push(stamped_now(yuv.blank(width, height)))
            self._camera_switched.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if self._camera_on else CAMERA_OFF_FRAME_S):
                    await self._camera_switched.wait()

    def commands(self) -> list[Command]:
        return [
            Command(
                "media/camera",
                "Turn the room's camera on or off (off: participants see black).",
                CameraArgs,
                MediaState,
                self._api_camera,
            )
        ]

    async def _api_camera(self, args: CameraArgs) -> MediaState:
        self.set_camera_on(args.on)
        return self.snapshot()

    # -- the media topic -------------------------------------------------------------

    def snapshot(self) -> MediaState:
        running = self._loop is not None
        display = None
        if running:
            display = DisplayFeed(
                path=str(self.display_shm_path),
                width=self.compositor.width,
                height=self.compositor.height,
                frame_rate=self.compositor.frame_rate,
            )
        return MediaState(
            running=running,
            camera_on=self._camera_on,
            display=display,
            streams=self._stats.streams,
            recording=self.recorder.recording,
            recording_error=self.recorder.error,
        )

    def _publish(self) -> None:
        if self._bus is not None:
            self._bus.publish("media", self.snapshot())

    async def _publish_stats(self) -> None:
        while True:
            self._stats.measure(self._all_streams())
            self._publish()
            await asyncio.sleep(STATS_INTERVAL_S)

    def _all_streams(self) -> list[tuple[EncodedStream, bool]]:
        """Every outgoing stream, and whether it forwards a participant's."""
        own = [(s, False) for s in (self.camera, self.content, self.microphone)]
        forwarded = [(s, True) for f in self._forwards.values() for s in (f.audio, f.video)]
        return own + forwarded

    # -- outgoing ----------------------------------------------------------------------

    def _require_started(self) -> None:
        # Tracks handed out before the encoders run would stay silent: say so instead.
        if self._loop is None:
            raise RuntimeError("the media service has not started (await start() first)")

    @property
    def video_mime(self) -> str:
        """The codec of the room's video packets, e.g. ``video/VP8``."""
        return MIME_TYPES[self.settings.video_codec]

    def room_tracks(self, peer_id: str) -> RoomTracks:
        """Fresh tracks of the room's microphone and camera for ``peer_id`` (encoded once)."""
        self._require_started()
        tracks = RoomTracks(audio=self.microphone.subscribe(), video=self.camera.subscribe())
        self._peers.setdefault(peer_id, []).extend([tracks.audio, tracks.video])
        return tracks

    def content_track(self, peer_id: str) -> PacketTrack:
        """A track of whatever the room shows as content (encoded once); silent otherwise."""
        self._require_started()
        track = self.content.subscribe()
        self._peers.setdefault(peer_id, []).append(track)
        return track

    def attach_sender(self, peer_id: str, sender: RTCRtpSender) -> None:
        """Let ``sender``'s keyframe requests and bandwidth estimates reach the encoder of
        whichever of the room's streams it sends; once per sender is enough (a later
        ``replaceTrack`` is followed), attaching again changes nothing."""
        attach_sender(peer_id, sender)

    def prefer_codecs(self, transceiver: RTCRtpTransceiver) -> None:
        """Make ``transceiver`` negotiate the codec the room's packets are in."""
        kind = transceiver.kind
        mime = self.video_mime if kind == "video" else MIME_TYPES["opus"]
        codecs = RTCRtpSender.getCapabilities(kind).codecs
        chosen = [c for c in codecs if c.mimeType == mime]
        if kind == "video":
            if self.settings.video_codec == "h264":
                chosen = [c for c in chosen if c.parameters.get("packetization-mode") == "1"]
            chosen += [c for c in codecs if c.mimeType == "video/rtx"]
        transceiver.setCodecPreferences(chosen)

    def detach(self, peer_id: str) -> None:
        """Stop ``peer_id``'s tracks and forget its feedback."""
        for track in self._peers.pop(peer_id, []):
            track.stop()
        for stream in (self.camera, self.content, self.microphone):
            stream.forget_peer(peer_id)
        for forward in self._forwards.values():
            forward.video.forget_peer(peer_id)

    def _on_mic(self, frame: av.AudioFrame) -> None:
        """A microphone frame, in the capture thread."""
        if self._mic_muted:
            frame = silence_like(frame)
        self.microphone.push(frame)
        loop = self._loop
        if self.recorder.recording and loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.mixer.feed, ROOM, "Room", frame)

    async def _follow_room(self, bus: StateBus) -> None:
        """Follow ``devices.audio`` (silence while the mic is muted; the speaker's volume)
        and the meeting (the camera comes back on when a meeting ends, so that the next
        one does not start dark by surprise)."""
        with bus.subscribe() as subscription:
            topics = subscription.snapshot.topics
            if "devices" in topics:
                self._take_room_audio(topics["devices"])
            in_meeting = bool(getattr(topics.get("meeting"), "in_meeting", False))
            async for change in subscription:
                if change.topic == "devices":
                    self._take_room_audio(change.value)
                elif change.topic == "meeting":
                    was, in_meeting = in_meeting, bool(getattr(change.value, "in_meeting", False))
                    if was and not in_meeting:
                        self.set_camera_on(True)

    def _take_room_audio(self, devices: object) -> None:
        audio = getattr(devices, "audio", None)
        self._mic_muted = bool(getattr(audio, "mic_muted", False))
        self._volume = int(getattr(audio, "volume", self._volume))

    # -- incoming ----------------------------------------------------------------------

    def add_participant(self, peer_id: str, name: str) -> None:
        """Give ``peer_id`` a tile on the display, labelled ``name``."""
        self._require_started()
        self._names[peer_id] = name
        self.compositor.add_participant(peer_id, name)
        if peer_id not in self._forwards:
            forward = RoomStreams(
                audio=EncodedStream("audio", AudioEncoder(), name=f"{peer_id}-audio"),
                video=self._video_stream(f"{peer_id}-video"),
            )
            forward.audio.start()
            forward.video.start()
            self._forwards[peer_id] = forward

    def forward_tracks(self, source_id: str, to_peer_id: str) -> RoomTracks:
        """Participant ``source_id``'s sound and picture for ``to_peer_id``.

        Encoded once for all the participants who receive them, like the room's own
        tracks: give them senders the same way (`prefer_codecs`, `attach_sender`).
        """
        self._require_started()
        forward = self._forwards.get(source_id)
        if forward is None:
            raise KeyError(f"participant {source_id!r} was not added")
        tracks = RoomTracks(audio=forward.audio.subscribe(), video=forward.video.subscribe())
        self._peers.setdefault(to_peer_id, []).extend([tracks.audio, tracks.video])
        return tracks

    def _forward_frame(self, peer_id: str, frame: av.VideoFrame | av.AudioFrame) -> None:
        forward = self._forwards.get(peer_id)
        if forward is None:
            return
        if isinstance(frame, av.AudioFrame):
            forward.audio.push(silence_like(frame) if peer_id in self._muted else frame)
        else:
            forward.video.push(frame)

    def set_track(self, peer_id: str, track: MediaStreamTrack) -> None:
        """Mix (audio) or show (video) a participant's incoming ``track``."""
        name = self._names.get(peer_id)
        if name is None:
            raise KeyError(f"participant {peer_id!r} was not added")
        tapped = _Tap(track, lambda frame: self._forward_frame(peer_id, frame))
        if track.kind == "audio":
            self.mixer.add_track(peer_id, name, tapped)
        elif track.kind == "video":
            self.compositor.set_video(peer_id, tapped)
        else:
            raise ValueError(f"a track must be audio or video, got {track.kind!r}")

    def set_content(self, peer_id: str, track: MediaStreamTrack | None) -> None:
        """Show ``peer_id``'s screen share as content; None ends it."""
        if track is None:
            if self._content_by == peer_id:
                self._content_by = None
                self.compositor.show_content("", None)
            return
        self._content_by = peer_id
        tapped = _Tap(track, self.content.push)
        self.compositor.show_content(self._names.get(peer_id, peer_id), tapped)

    def show_content_frame(self, by: str | None, frame: av.VideoFrame | None) -> None:
        """Show one frame of content from ``by`` (a laptop share); None ends the content."""
        self.compositor.content_frame(by, frame)
        if frame is not None:
            self.content.push(frame)

    def set_muted(self, peer_id: str, muted: bool) -> None:
        """Keep (or stop keeping) ``peer_id``'s audio out of the mix and from the others."""
        self.mixer.set_muted(peer_id, muted)
        self.compositor.set_muted(peer_id, muted)
        if muted:
            self._muted.add(peer_id)
        else:
            self._muted.discard(peer_id)

    async def remove_participant(self, peer_id: str) -> None:
        """Stop reading ``peer_id``'s tracks and take its tile away."""
        self._names.pop(peer_id, None)
        if self._content_by == peer_id:
            self.set_content(peer_id, None)
        self._muted.discard(peer_id)
        await self.mixer.remove(peer_id)
        await self.compositor.remove_participant(peer_id)
        forward = self._forwards.pop(peer_id, None)
        if forward is not None:
            forward.end_tracks()
            await asyncio.to_thread(forward.stop_encoders)

    # -- the room display and speaker --------------------------------------------------

    @property
    def display(self) -> DisplayOutput:
        """The composed picture of the room display."""
        return self.compositor.output

    @property
    def speaker(self) -> FrameFanout:
        """The mix of remote participants for the room speaker (``speaker.subscribe()``)."""
        return self.mixer.speaker

    async def _write_display_snapshots(self) -> None:
        directory = self._state_dir / "media"
        written = -1
        while True:
            await asyncio.sleep(SNAPSHOT_INTERVAL_S)
            frame, layout = self.display.latest(), self.display.layout()
            if frame is None or layout is None or self.display.frames == written:
                continue
            written = self.display.frames
            try:
                await asyncio.to_thread(
                    _write_snapshot, directory, frame, layout, written, self.display_shm_path
                )
            except OSError as exc:
                logger.warning("cannot write the display snapshot in %s: %s", directory, exc)


class _StreamMeter:
    """Turns the streams' counters into rates between two measurements."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int, int]] = {}
        self.streams: tuple[StreamStats, ...] = ()

    def measure(self, streams: list[tuple[EncodedStream, bool]]) -> None:
        now = time.monotonic()
        last, self._last = self._last, {}
        measured = []
        for stream, forwarded in streams:
            self._last[stream.name] = (now, stream.frames_encoded, stream.bytes_encoded)
            then, frames, sent = last.get(stream.name, self._last[stream.name])
            elapsed = now - then
            measured.append(
                StreamStats(
                    name=stream.name,
                    kind=stream.kind,
                    forwarded=forwarded,
                    peers=stream.subscribers,
                    fps=round((stream.frames_encoded - frames) / elapsed, 1) if elapsed else 0.0,
                    bitrate_bps=round((stream.bytes_encoded - sent) * 8 / elapsed)
                    if elapsed
                    else 0,
                    target_bitrate_bps=stream.target_bitrate,
                    keyframes_forced=stream.keyframes_forced,
                    frames_dropped=stream.frames_dropped,
                    fraction_lost=round(stream.fraction_lost, 4),
                    packets_lost=stream.packets_lost,
                )
            )
        self.streams = tuple(measured)


class _Tap(MediaStreamTrack):
    """Reads ``source`` for its one consumer and hands each frame to ``tap`` as well."""

    def __init__(
        self, source: MediaStreamTrack, tap: Callable[[av.VideoFrame | av.AudioFrame], None]
    ) -> None:
        super().__init__()
        self.kind = source.kind
        self._source = source
        self._tap = tap

    async def recv(self) -> av.VideoFrame | av.AudioFrame:
        frame = await self._source.recv()
        if isinstance(frame, av.VideoFrame | av.AudioFrame):
            self._tap(frame)
        return frame  # type: ignore[return-value]


def _write_snapshot(
    directory: Path, frame: av.VideoFrame, layout: DisplayLayout, frames: int, shm: Path
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    image = frame.to_image()
    partial = directory / "display.jpg.part"
    image.save(partial, format="JPEG", quality=80)
    partial.replace(directory / "display.jpg")
    summary = {"frames": frames, "shm": str(shm), "layout": dataclasses.asdict(layout)}
    partial = directory / "display.json.part"
    partial.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    partial.replace(directory / "display.json")
