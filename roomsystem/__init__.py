"""roomsystem: open, self-hosted software for a conference room appliance."""

__version__ = "0.1.0"
