"""One still from the default camera, where Qt Multimedia is installed (PySide6-Essentials
lacks it; the full PySide6 package has it). Untested on the build machines, which have none."""

from __future__ import annotations

import importlib.util

from PySide6.QtCore import QObject, Signal

UNAVAILABLE_REASON = ("Scanning with a camera needs Qt Multimedia (install the full PySide6 "
                      "package instead of PySide6-Essentials).")


def camera_supported() -> bool:
    return importlib.util.find_spec("PySide6.QtMultimedia") is not None


class StillCamera(QObject):
    """Starts the default camera, captures one image, stops; emits `captured` or `failed`."""

    captured = Signal(object)  # QImage
    failed = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        from PySide6 import QtMultimedia

        self.session = QtMultimedia.QMediaCaptureSession(self)
        self.camera = QtMultimedia.QCamera(self)
        self.capture = QtMultimedia.QImageCapture(self)
        self.session.setCamera(self.camera)
        self.session.setImageCapture(self.capture)
        self.capture.readyForCaptureChanged.connect(self._ready)
        self.capture.imageCaptured.connect(self._captured)
        self.capture.errorOccurred.connect(lambda _id, _error, text: self._fail(text))
        self.camera.errorOccurred.connect(lambda _error, text: self._fail(text))

    def start(self) -> None:
        self.camera.start()

    def _ready(self, ready: bool) -> None:
        if ready:
            self.capture.capture()

    def _captured(self, _id: int, image) -> None:
        self.camera.stop()
        self.captured.emit(image)

    def _fail(self, text: str) -> None:
        self.camera.stop()
        self.failed.emit(text or "the camera failed")
