"""Coalesces change notifications: the node notifies on every gossip message, but the window
redraws at most ten times a second, always ending on the latest state."""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QObject, QTimer

REDRAW_INTERVAL_MS = 100


class Throttle(QObject):
    """`poke()` as often as you like; `action` runs at once if it has not run for an interval,
    otherwise once when the interval ends."""

    def __init__(self, action: Callable[[], None], interval_ms: int = REDRAW_INTERVAL_MS, parent=None):
        super().__init__(parent)
        self.action = action
        self.pending = False
        self.timer = QTimer(self, singleShot=True, interval=interval_ms)
        self.timer.timeout.connect(self._interval_ended)

    def poke(self) -> None:
        if self.timer.isActive():
            self.pending = True
            return
        self._run()

    def _interval_ended(self) -> None:
        if self.pending:
            self._run()

    def _run(self) -> None:
        self.pending = False
        self.timer.start()
        self.action()
