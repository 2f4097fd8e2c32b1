"""Kivy building blocks with the room's look: large text, large targets, clear states."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kivy.graphics import Color, Rectangle
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.button import Button
from kivy.uix.label import Label
from kivy.uix.widget import Widget

Colour = tuple[float, float, float, float]

BACKGROUND: Colour = (0.08, 0.09, 0.11, 1)
CARD: Colour = (0.14, 0.16, 0.19, 1)
TEXT: Colour = (0.95, 0.96, 0.97, 1)
MUTED_TEXT: Colour = (0.65, 0.68, 0.72, 1)
ACCENT: Colour = (0.16, 0.45, 0.85, 1)
GOOD: Colour = (0.14, 0.6, 0.35, 1)
DANGER: Colour = (0.8, 0.2, 0.2, 1)
WARNING: Colour = (0.85, 0.55, 0.1, 1)
NEUTRAL: Colour = (0.24, 0.27, 0.31, 1)
DISABLED: Colour = (0.18, 0.19, 0.21, 1)
MIN_TARGET_PX = 48


def paint(widget: Widget, color: tuple[float, float, float, float]) -> Widget:
    """Give ``widget`` a solid background that follows its size; call again to recolour."""
    widget.canvas.before.clear()
    with widget.canvas.before:
        widget._paint_color = Color(*color)
        rect = Rectangle(pos=widget.pos, size=widget.size)

    def follow(*_: Any) -> None:
        rect.pos = widget.pos
        rect.size = widget.size

    widget.bind(pos=follow, size=follow)
    return widget


class Text(Label):
    """A label that wraps inside its box."""

    def __init__(self, text: str = "", size: float = 22, **kwargs: Any) -> None:
        kwargs.setdefault("color", TEXT)
        kwargs.setdefault("halign", "left")
        kwargs.setdefault("valign", "middle")
        super().__init__(text=text, font_size=size, **kwargs)
        self.bind(size=self._wrap)

    def _wrap(self, *_: Any) -> None:
        self.text_size = (self.width, self.height)


class TouchButton(Button):
    """A flat, large button; ``tone`` is its colour while enabled."""

    def __init__(
        self,
        text: str,
        tone: tuple[float, float, float, float] = NEUTRAL,
        size: float = 24,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("background_normal", "")
        kwargs.setdefault("background_down", "")
        kwargs.setdefault("halign", "center")
        kwargs.setdefault("valign", "middle")
        super().__init__(text=text, font_size=size, **kwargs)
        self.tone = tone
        self.background_disabled_normal = ""
        self.background_disabled_down = ""
        self.disabled_color = MUTED_TEXT
        self.bind(disabled=self._recolour, state=self._recolour, size=self._wrap)
        self._recolour()

    def set_tone(self, tone: tuple[float, float, float, float]) -> None:
        self.tone = tone
        self._recolour()

    def _recolour(self, *_: Any) -> None:
        if self.disabled:
            self.background_color = DISABLED
        elif self.state == "down":
            # Immediate feedback under the finger, before the room answers.
            self.background_color = pressed(self.tone)
        else:
            self.background_color = self.tone

    def _wrap(self, *_: Any) -> None:
        self.text_size = (self.width - 8, None)


def pressed(tone: Colour) -> Colour:
    """A lighter ``tone``, for a button under the finger."""
    red, green, blue, _ = tone
    return (min(1.0, red * 1.5 + 0.1), min(1.0, green * 1.5 + 0.1), min(1.0, blue * 1.5 + 0.1), 1)


def row(*children: Widget, spacing: float = 12, **kwargs: Any) -> BoxLayout:
    box = BoxLayout(orientation="horizontal", spacing=spacing, **kwargs)
    for child in children:
        box.add_widget(child)
    return box


def column(*children: Widget, spacing: float = 12, **kwargs: Any) -> BoxLayout:
    box = BoxLayout(orientation="vertical", spacing=spacing, **kwargs)
    for child in children:
        box.add_widget(child)
    return box


def card(*children: Widget, **kwargs: Any) -> BoxLayout:
    kwargs.setdefault("padding", 16)
    box = column(*children, **kwargs)
    paint(box, CARD)
    return box


def on_press(button: Button, action: Callable[[], None]) -> Button:
    button.bind(on_press=lambda *_: action())
    return button
