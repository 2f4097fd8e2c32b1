"""Device protocols: sans-I/O codecs, thin asyncio transports and wire-faithful simulators.

A library boundary: nothing here imports anything else from ``roomsystem``. The device
layer (``roomsystem.devices``) maps these errors to device states.
"""

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())
