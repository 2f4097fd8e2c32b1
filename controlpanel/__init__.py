"""The room's Kivy apps (touch panel and main display): clients of the local API only."""

__version__ = "0.1.0"
