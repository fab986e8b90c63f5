"""The Join view's camera scan: a viewfinder, a Stop button, and the scan behind them.

The viewfinder's own video sink is the one the scanner reads, so what the user sees is what
is decoded. It paints each frame with QPainter (QVideoFrame.paint, about 1 ms for 640x480
here) rather than in QVideoWidget's native window, which a window grab cannot see: the
README's screenshot and the tests see what the user sees.

The source (the default camera; a video file in the tests) is made by `make_source(sink,
parent)` and stopped when an invite is found, when Stop is pressed, and when the panel is
hidden (the user left the tab or closed the window).
"""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import QHBoxLayout, QPushButton, QVBoxLayout, QWidget

from meshdesk.ui.camera import CameraSource, FrameScanner, camera_problem

VIEWFINDER_SIZE = (320, 240)


class Viewfinder(QWidget):
    """The newest frame of its sink, scaled to fit; repaints coalesce, so none queue up."""

    def __init__(self, parent=None):
        super().__init__(parent)
        from PySide6.QtMultimedia import QVideoSink

        self.sink = QVideoSink(self)
        self.frame = None
        self.sink.videoFrameChanged.connect(self._show)
        self.setMinimumSize(*VIEWFINDER_SIZE)

    def _show(self, frame) -> None:
        from PySide6.QtMultimedia import QVideoFrame

        self.frame = QVideoFrame(frame)
        self.update()

    def paintEvent(self, _event) -> None:
        from PySide6.QtMultimedia import QVideoFrame

        painter = QPainter(self)
        painter.fillRect(self.rect(), Qt.GlobalColor.black)
        if self.frame is not None and self.frame.isValid():
            size = self.frame.size().scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio)
            area = QRectF((self.width() - size.width()) / 2, (self.height() - size.height()) / 2,
                          size.width(), size.height())
            self.frame.paint(painter, area, QVideoFrame.PaintOptions())
        painter.end()


class CameraPanel(QWidget):
    found = Signal(str)    # an invite's text; the camera has stopped
    message = Signal(str)  # what to tell the user

    def __init__(self, parent=None):
        super().__init__(parent)
        self.make_source: Callable = CameraSource
        self.find_problem: Callable[[], str | None] = camera_problem
        self.decode: Callable[[QImage], list[str]] | None = None
        self.is_invite: Callable[[str], bool] = lambda _text: False
        self.viewfinder = None  # made on the first scan: Qt Multimedia may be missing
        self.source = None
        self.scanner: FrameScanner | None = None
        self.stop_button = QPushButton("Stop camera")
        self.stop_button.clicked.connect(self.cancel)
        self.rows = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(self.stop_button)
        row.addStretch(1)
        self.rows.addLayout(row)
        self.hide()

    def start(self) -> None:
        problem = self.find_problem() or (None if self.decode else "Camera scanning is not set up.")
        if problem:
            self.message.emit(problem)
            return
        self.stop()
        sink = self._viewfinder().sink
        self.scanner = FrameScanner(sink, self.decode, self.is_invite, self)
        self.scanner.found.connect(self._found)
        self.scanner.not_an_invite.connect(self._not_an_invite)
        self.source = self.make_source(sink, self)
        self.source.failed.connect(self._failed)
        self.source.ended.connect(self._ended)
        self.show()
        self.scanner.start()
        self.source.start()
        self.message.emit("Hold the invite's QR code up to the camera…")

    def _viewfinder(self) -> Viewfinder:
        if self.viewfinder is None:
            self.viewfinder = Viewfinder()
            self.rows.insertWidget(0, self.viewfinder, 0, Qt.AlignmentFlag.AlignLeft)
        self.viewfinder.frame = None  # not the last scan's picture
        return self.viewfinder

    def stop(self) -> None:
        """Stops the source and the scan, if running; safe to call at any time."""
        if self.scanner is not None:
            self.scanner.stop()
        if self.source is not None:
            self.source.stop()
        self.scanner = self.source = None
        self.hide()

    def cancel(self) -> None:
        self.stop()
        self.message.emit("Camera stopped.")

    def _found(self, text: str) -> None:
        self.stop()
        self.found.emit(text)

    def _not_an_invite(self, text: str) -> None:
        shown = text if len(text) <= 40 else text[:40] + "…"
        self.message.emit(f"That QR code is not a MeshDesk invite (it says “{shown}”); still looking…")

    def _failed(self, text: str) -> None:
        self.stop()
        self.message.emit(text)

    def _ended(self) -> None:
        self.stop()
        self.message.emit("The video ended without a MeshDesk invite QR code.")

    def hideEvent(self, event) -> None:
        """Leaving the tab or closing the window hides the panel: the camera goes off with it."""
        if self.scanner is not None:
            self.stop()
        super().hideEvent(event)
