"""WebRTC peers: one aiortc peer connection per admitted participant.

The room makes the offer, so every peer has the same fixed set of transceivers and no
renegotiation is ever needed:

- ``audio`` (sendrecv): the room's sound out, the participant's microphone in;
- ``video`` (sendrecv): the room's camera out, the participant's camera in;
- ``content`` (recvonly): the participant's screen share in, handed to the room only while
  the meeting lets them share;
- ``content_out`` (sendonly): what the room shows as content (someone's share);
- ``SLOT_COUNT`` sendonly audio+video pairs that carry the other participants: when
  people come and go, the slots' tracks are swapped (``replaceTrack``), and the browser is
  told who is in which slot.

What goes out comes from the room's media (`RoomMedia`: the room's camera and microphone,
its content and the forwarded participants, each encoded once for everybody). Each track a
participant sends is read by one owned task (`Fanout`) that counts its frames and offers
the latest one to its consumers through gates that follow the meeting (no audio while
muted, no video while the camera is off, no screen without permission); a consumer that
falls behind skips frames instead of making a queue grow.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import av
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc import sdp as aiortc_sdp
from aiortc.exceptions import InvalidAccessError, InvalidStateError, OperationError
from aiortc.mediastreams import MediaStreamError

from roomsystem.media.ice import close_peer_connection

logger = logging.getLogger(__name__)

SLOT_COUNT = 3
Kind = Literal["audio", "video"]
Frame = av.AudioFrame | av.VideoFrame | av.Packet | av.frame.Frame


class PeerError(Exception):
    """A participant's peer connection could not do what was asked; the text says why."""


_SDP_PARSE_ERRORS = (
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    AssertionError,
    StopIteration,
)

# Applying a parsable but wrong answer fails in aiortc's checks the same ways, or with its
# own errors; a StopIteration inside the coroutine surfaces as a RuntimeError.
_ANSWER_ERRORS = (
    *_SDP_PARSE_ERRORS,
    RuntimeError,
    InvalidAccessError,
    InvalidStateError,
    OperationError,
)


def check_sdp(sdp: str) -> None:
    """Raise `PeerError` if aiortc cannot parse ``sdp``.

    aiortc's parser raises whatever a malformed line trips over, asserts and a
    StopIteration (which a coroutine would turn into a RuntimeError) included, so it is
    run here first, outside any coroutine machinery.
    """
    try:
        aiortc_sdp.SessionDescription.parse(sdp)
    except _SDP_PARSE_ERRORS as exc:
        reason = str(exc) or type(exc).__name__
        raise PeerError(f"the answer was refused: not valid SDP ({reason})") from None


class Tap(MediaStreamTrack):
    """One consumer's view of a `Fanout`: the latest frame, gated by ``is_open``.

    While the gate is closed, audio is replaced by silence (receivers keep their timing)
    and video frames are skipped.
    """

    def __init__(self, fanout: Fanout, is_open: Callable[[], bool] | None = None) -> None:
        super().__init__()
        self.kind = fanout.kind
        self._fanout = fanout
        self._is_open = is_open
        self._latest: Frame | None = None
        self._ended = False
        self._ready = asyncio.Event()
        self.delivered = 0

    def offer(self, frame: Frame | None) -> None:
        if frame is None:
            self._ended = True
        else:
            self._latest = frame
        self._ready.set()

    async def recv(self) -> Frame:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            await self._ready.wait()
            self._ready.clear()
            frame, self._latest = self._latest, None
            if frame is None:
                if self._ended:
                    self.stop()
                    raise MediaStreamError
                continue
            if self._is_open is None or self._is_open():
                self.delivered += 1
                return frame
            if isinstance(frame, av.AudioFrame):
                return _silence_like(frame)

    def stop(self) -> None:
        super().stop()
        self._fanout.unsubscribe(self)


def _silence_like(frame: av.AudioFrame) -> av.AudioFrame:
    silent = av.AudioFrame(
        format=frame.format.name, layout=frame.layout.name, samples=frame.samples
    )
    for plane in silent.planes:
        plane.update(bytes(plane.buffer_size))
    silent.sample_rate = frame.sample_rate
    silent.pts = frame.pts
    silent.time_base = frame.time_base
    return silent


class Fanout:
    """Reads one source track in an owned task and offers every frame to each `Tap`."""

    def __init__(self, source: MediaStreamTrack, name: str) -> None:
        self.kind: str = source.kind
        self.name = name
        self.frames = 0
        self._source = source
        self._taps: set[Tap] = set()
        self._task = asyncio.create_task(self._run(), name=f"fanout:{name}")

    def subscribe(self, is_open: Callable[[], bool] | None = None) -> Tap:
        tap = Tap(self, is_open)
        if self._task.done():
            tap.offer(None)
        self._taps.add(tap)
        return tap

    def unsubscribe(self, tap: Tap) -> None:
        self._taps.discard(tap)

    async def _run(self) -> None:
        try:
            while True:
                frame = await self._source.recv()
                self.frames += 1
                for tap in tuple(self._taps):
                    tap.offer(frame)
        except MediaStreamError:
            logger.debug("%s ended", self.name)
        finally:
            for tap in tuple(self._taps):
                tap.offer(None)

    async def close(self) -> None:
        self._source.stop()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class LavfiTrack(MediaStreamTrack):
    """A live test source from FFmpeg's lavfi (``testsrc2``, ``sine``), paced to real time.

    Decoding happens on the event loop: a small test pattern costs about a millisecond.
    """

    def __init__(self, kind: Kind, graph: str) -> None:
        super().__init__()
        self.kind = kind
        self._container = av.open(graph, format="lavfi")
        stream = self._container.streams[0]
        self._frames = self._container.decode(stream)
        self._started: float | None = None

    async def recv(self) -> Frame:
        if self.readyState != "live":
            raise MediaStreamError
        frame = next(self._frames)
        assert isinstance(frame, av.AudioFrame | av.VideoFrame)
        assert frame.pts is not None
        assert frame.time_base is not None
        due = float(frame.pts * frame.time_base)
        now = time.monotonic()
        if self._started is None:
            self._started = now - due
        delay = self._started + due - now
        if delay > 0:
            await asyncio.sleep(delay)
        return frame

    def stop(self) -> None:
        if self.readyState == "live":
            self._container.close()
        super().stop()


class RoomTracks(Protocol):
    """One peer's tracks of the room's own sound and camera."""

    @property
    def audio(self) -> MediaStreamTrack: ...

    @property
    def video(self) -> MediaStreamTrack: ...


@runtime_checkable
class RoomMedia(Protocol):
    """What peers need from the room's media (`roomsystem.media`): its outgoing tracks,
    and a home for what participants send (the mixer and the compositor)."""

    def room_tracks(self, peer_id: str) -> RoomTracks:
        """Fresh tracks for one peer's senders; the senders stop them."""

    def content_track(self, peer_id: str) -> MediaStreamTrack:
        """A track of whatever the room shows as content (a share); silent while none."""

    def forward_tracks(self, source_id: str, to_peer_id: str) -> RoomTracks:
        """Participant ``source_id``'s sound and picture, for ``to_peer_id``'s slot."""

    def prefer_codecs(self, transceiver: RTCRtpTransceiver) -> None:
        """Negotiate the codec the room's tracks are encoded in."""

    def attach_sender(self, peer_id: str, sender: RTCRtpSender) -> None:
        """Let the peer's feedback (keyframe requests, bandwidth) reach the room's encoder."""

    def detach(self, peer_id: str) -> None: ...

    def add_participant(self, peer_id: str, name: str) -> None: ...

    def set_track(self, peer_id: str, track: MediaStreamTrack) -> None:
        """Mix an audio track for the room, compose a video track for its display."""

    def set_content(self, peer_id: str, track: MediaStreamTrack | None) -> None:
        """Show a participant's screen share (or stop showing it)."""

    def set_muted(self, peer_id: str, muted: bool) -> None: ...

    async def remove_participant(self, peer_id: str) -> None:
        """Stop reading the participant's tracks and take its tile away."""


@dataclass(frozen=True, slots=True)
class SyntheticTracks:
    audio: MediaStreamTrack
    video: MediaStreamTrack


class SwitchedTrack(MediaStreamTrack):
    """Frames of whichever source is switched in; waits while there is none."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self.source: MediaStreamTrack | None = None
        self._switched = asyncio.Event()

    def switch(self, source: MediaStreamTrack | None) -> None:
        self.source = source
        self._switched.set()

    async def recv(self) -> Frame:
        while self.readyState == "live":
            source = self.source
            self._switched.clear()
            if source is None:
                await self._switched.wait()
                continue
            receiving = asyncio.ensure_future(source.recv())
            switching = asyncio.ensure_future(self._switched.wait())
            try:
                await asyncio.wait({receiving, switching}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in (receiving, switching):
                    if not waiter.done():
                        waiter.cancel()
                await asyncio.gather(receiving, switching, return_exceptions=True)
            if receiving.cancelled():
                continue
            error = receiving.exception()
            if error is None:
                frame: Frame = receiving.result()
                return frame
            if not isinstance(error, MediaStreamError):
                raise error
            if self.source is source:
                self.source = None
        raise MediaStreamError


class SyntheticMedia:
    """Room media made of lavfi test sources, encoded by aiortc for each peer.

    The room's camera is ``testsrc2`` and its microphone a 440 Hz ``sine``. What it
    receives it reads (and counts) and forwards to the other participants. It stands in
    where the room's media service does not run.
    """

    def __init__(self, size: str = "640x360", rate: int = 30) -> None:
        self._video_graph = f"testsrc2=size={size}:rate={rate}"
        self._audio_graph = "sine=frequency=440:sample_rate=48000"
        self._room: dict[str, Fanout] = {}
        self._incoming: dict[str, dict[str, Fanout]] = {}
        self._content = SwitchedTrack()
        self._content_by: str | None = None
        self._handed_out: dict[str, list[MediaStreamTrack]] = {}
        self.names: dict[str, str] = {}
        self.muted: dict[str, bool] = {}

    def _fanout(self, key: str) -> Fanout:
        if key not in self._room:
            if key == "content":
                self._room[key] = Fanout(self._content, "room-content")
            else:
                graph = self._video_graph if key == "video" else self._audio_graph
                self._room[key] = Fanout(
                    LavfiTrack("video" if key == "video" else "audio", graph), f"room-{key}"
                )
        return self._room[key]

    def _hand_out(self, peer_id: str, *tracks: MediaStreamTrack) -> None:
        self._handed_out.setdefault(peer_id, []).extend(tracks)

    def room_tracks(self, peer_id: str) -> SyntheticTracks:
        tracks = SyntheticTracks(
            self._fanout("audio").subscribe(), self._fanout("video").subscribe()
        )
        self._hand_out(peer_id, tracks.audio, tracks.video)
        return tracks

    def content_track(self, peer_id: str) -> MediaStreamTrack:
        track = self._fanout("content").subscribe()
        self._hand_out(peer_id, track)
        return track

    def forward_tracks(self, source_id: str, to_peer_id: str) -> SyntheticTracks:
        incoming = self._incoming[source_id]
        tracks = SyntheticTracks(incoming["audio"].subscribe(), incoming["video"].subscribe())
        self._hand_out(to_peer_id, tracks.audio, tracks.video)
        return tracks

    def prefer_codecs(self, transceiver: RTCRtpTransceiver) -> None:
        """aiortc encodes these tracks itself, in whatever codec was negotiated."""

    def attach_sender(self, peer_id: str, sender: RTCRtpSender) -> None:
        """aiortc's own encoder already follows each peer's feedback."""

    def detach(self, peer_id: str) -> None:
        for track in self._handed_out.pop(peer_id, ()):
            track.stop()

    def add_participant(self, peer_id: str, name: str) -> None:
        self.names[peer_id] = name
        self._incoming[peer_id] = {}

    def set_track(self, peer_id: str, track: MediaStreamTrack) -> None:
        self._incoming[peer_id][track.kind] = Fanout(track, f"{peer_id}-{track.kind}")

    def received(self, peer_id: str, kind: str) -> int:
        fanout = self._incoming.get(peer_id, {}).get(kind)
        return fanout.frames if fanout is not None else 0

    def set_content(self, peer_id: str, track: MediaStreamTrack | None) -> None:
        if track is not None:
            self._content_by = peer_id
            self._content.switch(track)
        elif self._content_by == peer_id:
            self._content_by = None
            self._content.switch(None)

    def set_muted(self, peer_id: str, muted: bool) -> None:
        self.muted[peer_id] = muted

    async def remove_participant(self, peer_id: str) -> None:
        self.set_content(peer_id, None)
        self.names.pop(peer_id, None)
        for fanout in self._incoming.pop(peer_id, {}).values():
            await fanout.close()

    async def close(self) -> None:
        for peer_id in list(self._incoming):
            await self.remove_participant(peer_id)
        for fanout in self._room.values():
            await fanout.close()
        self._room.clear()


@dataclass
class Slot:
    """A sendonly audio+video pair showing one other participant (or nobody)."""

    audio: RTCRtpTransceiver
    video: RTCRtpTransceiver
    showing: str | None = None
    tracks: list[MediaStreamTrack] = field(default_factory=list)


class ParticipantPeer:
    """The room's peer connection with one participant."""

    def __init__(
        self,
        participant_id: str,
        name: str,
        configuration: RTCConfiguration,
        room_tracks: RoomTracks,
        content_out: MediaStreamTrack | None = None,
    ) -> None:
        self.id = participant_id
        self.name = name
        self.pc = RTCPeerConnection(configuration)
        self.audio = self.pc.addTransceiver(room_tracks.audio, direction="sendrecv")
        self.video = self.pc.addTransceiver(room_tracks.video, direction="sendrecv")
        self.content = self.pc.addTransceiver("video", direction="recvonly")
        self.content_out = self.pc.addTransceiver(content_out or "video", direction="sendonly")
        self.slots = [
            Slot(
                self.pc.addTransceiver("audio", direction="sendonly"),
                self.pc.addTransceiver("video", direction="sendonly"),
            )
            for _ in range(SLOT_COUNT)
        ]
        self.incoming: dict[str, Fanout] = {}
        # What was handed to the room's media, by channel: their counts say what got through.
        self.room_taps: dict[str, Tap] = {}
        # What the meeting lets through; read by the gates of everything forwarded.
        self.audio_on = False
        self.video_on = False
        self.sharing = False

    async def offer(self) -> str:
        """The room's offer, with every ICE candidate in it (aiortc gathers before returning)."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def accept_answer(self, sdp: str) -> None:
        """Apply the browser's answer; a malformed or unacceptable one is a `PeerError`."""
        if self.pc.signalingState != "have-local-offer":
            raise PeerError(f"no offer is waiting for an answer (state {self.pc.signalingState})")
        check_sdp(sdp)
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        except _ANSWER_ERRORS as exc:
            reason = str(exc) or type(exc).__name__
            raise PeerError(f"the answer was refused: {reason}") from None
        for name, transceiver in (
            ("audio", self.audio),
            ("video", self.video),
            ("content", self.content),
        ):
            track = transceiver.receiver.track
            if track is not None and name not in self.incoming:
                self.incoming[name] = Fanout(track, f"{self.id}-{name}")

    def tap(self, name: str) -> Tap | None:
        """A gated consumer of what this participant sends on ``name``."""
        fanout = self.incoming.get(name)
        if fanout is None:
            return None
        gates = {
            "audio": lambda: self.audio_on,
            "video": lambda: self.video_on,
            "content": lambda: self.sharing,
        }
        return fanout.subscribe(gates[name])

    def frames_received(self, name: str) -> int:
        fanout = self.incoming.get(name)
        return fanout.frames if fanout is not None else 0

    def show_in_slots(self, others: Iterable[ParticipantPeer], media: RoomMedia) -> bool:
        """Put ``others`` (in order) into the slots; True if anything changed.

        Only participants whose media reached the room can be forwarded (the room's media
        encodes each of them once for everybody).
        """
        wanted = [peer for peer in others if peer is not self and peer.forwardable]
        changed = False
        for index, slot in enumerate(self.slots):
            showing = wanted[index].id if index < len(wanted) else None
            if slot.showing == showing:
                continue
            changed = True
            for track in slot.tracks:
                track.stop()
            slot.tracks = []
            slot.audio.sender.replaceTrack(None)
            slot.video.sender.replaceTrack(None)
            if showing is not None:
                tracks = media.forward_tracks(showing, self.id)
                slot.tracks = [tracks.audio, tracks.video]
                for transceiver, track in ((slot.audio, tracks.audio), (slot.video, tracks.video)):
                    transceiver.sender.replaceTrack(track)
                    media.attach_sender(self.id, transceiver.sender)
            slot.showing = showing
        return changed

    @property
    def forwardable(self) -> bool:
        return "audio" in self.room_taps and "video" in self.room_taps

    def slot_map(self, names: dict[str, str]) -> list[dict[str, str | None]]:
        """Which participant each slot's video shows, by the transceivers' mids."""
        return [
            {
                "audio_mid": slot.audio.mid,
                "video_mid": slot.video.mid,
                "participant_id": slot.showing,
                "name": names.get(slot.showing) if slot.showing else None,
            }
            for slot in self.slots
        ]

    async def close(self) -> None:
        for slot in self.slots:
            for track in slot.tracks:
                track.stop()
        await close_peer_connection(self.pc)
        for fanout in self.incoming.values():
            await fanout.close()


SlotsChanged = Callable[[str, list[dict[str, str | None]]], None]


class PeerHub:
    """Every participant's peer in one meeting room, and who sees whom."""

    def __init__(
        self, configuration: RTCConfiguration, media: RoomMedia, on_slots: SlotsChanged
    ) -> None:
        # One transport for every transceiver. aiortc's default (balanced) leaves a second
        # transceiver of a kind on a transport that BUNDLE then orphans: its media is lost.
        self._configuration = dataclasses.replace(
            configuration, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE
        )
        self._media = media
        self._on_slots = on_slots
        self.peers: dict[str, ParticipantPeer] = {}

    async def connect(self, participant_id: str, name: str) -> str:
        """Make the peer for an admitted participant; returns the room's SDP offer."""
        if participant_id in self.peers:
            raise PeerError("this participant is already connected")
        media = self._media
        peer = ParticipantPeer(
            participant_id,
            name,
            self._configuration,
            media.room_tracks(participant_id),
            media.content_track(participant_id),
        )
        self.peers[participant_id] = peer
        for transceiver in (peer.audio, peer.video, peer.content_out):
            media.prefer_codecs(transceiver)
            media.attach_sender(participant_id, transceiver.sender)
        for slot in peer.slots:
            # Forwarded participants come encoded by the room's media, in the room's codec.
            media.prefer_codecs(slot.audio)
            media.prefer_codecs(slot.video)
        media.add_participant(participant_id, name)
        return await peer.offer()

    async def answer(self, participant_id: str, sdp: str) -> None:
        peer = self._peer(participant_id)
        await peer.accept_answer(sdp)
        for name in ("audio", "video"):
            tap = peer.tap(name)
            if tap is not None and name not in peer.room_taps:
                peer.room_taps[name] = tap
                self._media.set_track(participant_id, tap)
        self._rearrange()

    def set_forwarding(self, participant_id: str, *, audio: bool, video: bool) -> None:
        """What the meeting lets through of this participant's microphone and camera."""
        peer = self.peers.get(participant_id)
        if peer is None:
            return
        if peer.audio_on != audio:
            self._media.set_muted(participant_id, not audio)
        peer.audio_on, peer.video_on = audio, video

    def set_sharing(self, participant_id: str, on: bool) -> None:
        peer = self._peer(participant_id)
        if on == peer.sharing:
            return
        if on and "content" not in peer.incoming:
            raise PeerError("the connection has no screen-share channel yet")
        peer.sharing = on
        old = peer.room_taps.pop("content", None)
        tap = peer.tap("content") if on else None
        if tap is not None:
            peer.room_taps["content"] = tap
        self._media.set_content(participant_id, tap)
        if old is not None:
            old.stop()

    async def disconnect(self, participant_id: str) -> None:
        peer = self.peers.pop(participant_id, None)
        if peer is None:
            return
        if peer.sharing:
            self._media.set_content(participant_id, None)
        await self._media.remove_participant(participant_id)
        self._media.detach(participant_id)
        self._rearrange()
        await peer.close()

    async def close(self) -> None:
        await asyncio.gather(*(self.disconnect(pid) for pid in list(self.peers)))

    def _peer(self, participant_id: str) -> ParticipantPeer:
        try:
            return self.peers[participant_id]
        except KeyError:
            raise PeerError("not connected: wait for the room's offer") from None

    def _rearrange(self) -> None:
        order = list(self.peers.values())
        names = {peer.id: peer.name for peer in order}
        for peer in order:
            if peer.show_in_slots(order, self._media):
                self._on_slots(peer.id, peer.slot_map(names))
