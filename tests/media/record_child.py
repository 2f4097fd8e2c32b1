"""A process that records until it is killed: the crash-safety test kill -9s it.

    python -m tests.media.record_child DIRECTORY

Prints ``RECORDING <path>`` once the file is being written.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import av

from roomsystem.media.capture import AudioCapture, AudioSource, VideoCapture, VideoSource
from roomsystem.media.compositor import Compositor
from roomsystem.media.frames import FrameFanout
from roomsystem.media.mixer import AudioMixer
from roomsystem.media.recorder import Recorder


async def record(directory: Path) -> None:
    loop = asyncio.get_running_loop()
    mixer = AudioMixer()
    compositor = Compositor(640, 360, 15, active_speaker=lambda: mixer.active_speaker)
    camera = FrameFanout("video")
    compositor.add_participant("p-ada", "Ada")
    compositor.set_video("p-ada", camera.subscribe())

    def hear(frame: av.AudioFrame) -> None:
        loop.call_soon_threadsafe(mixer.feed, "p-ada", "Ada", frame)

    captures: list[VideoCapture | AudioCapture] = [
        VideoCapture(VideoSource(width=320, height=240, frame_rate=15), camera.publish_threadsafe),
        AudioCapture(AudioSource(frequency=440), hear),
    ]
    recorder = Recorder(directory, compositor.output, mixer, width=640, height=360, frame_rate=15)
    compositor.start()
    mixing = asyncio.ensure_future(mixer.run())
    for capture in captures:
        capture.start()
    await recorder.start("1234567890")
    print("RECORDING", recorder.path, flush=True)
    await mixing  # until killed


if __name__ == "__main__":
    asyncio.run(record(Path(sys.argv[1])))
