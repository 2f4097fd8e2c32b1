"""The room's media: capture, encode-once fan-out, mixing, composition and recording.

`roomsystem.media.service.MediaService` puts the pieces together; docs/media.md explains
the design and its measurements.
"""
