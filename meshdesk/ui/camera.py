"""Scanning an invite QR code from live video: the default camera, or in the tests a video file.

Frames arrive on a QVideoSink (the viewfinder's) in the GUI thread. `FrameScanner` hands one at
a time to a worker thread, which reads its pixels and decodes them with the `decode` the app
lends (zxing-cpp, which releases the GIL; the ui layer does not import adapters). A frame that
arrives while the worker is busy is dropped, so a slow decode never queues frames up in the
GUI thread: the scanner always reads the newest frame it can.

Qt Multimedia comes with PySide6-Addons and loads native libraries (libpulse on Linux), so it
is imported only here and only when asked for, and its absence is a message, not a crash.
"""

from __future__ import annotations

import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage

log = logging.getLogger(__name__)

MULTIMEDIA_MISSING = ("Scanning with a camera needs Qt Multimedia (the PySide6-Addons package), which "
                      "could not load here: {error}. Paste the invite, or scan an image of it, instead.")
NO_CAMERA = ("No camera found on this computer. Paste the invite, or scan an image of it or "
             "the screen, instead.")
CAMERA_DENIED = ("MeshDesk may not use the camera: allow it in the system's privacy settings, "
                 "or paste the invite instead.")
# Formats whose first plane is 8-bit luma: the grey a QR decoder reads, with no conversion.
LUMA_PLANE_FORMATS = ("Format_YUV420P", "Format_YUV422P", "Format_YV12", "Format_NV12", "Format_NV21",
                      "Format_IMC1", "Format_IMC2", "Format_IMC3", "Format_IMC4", "Format_Y8")


@functools.cache
def multimedia_problem() -> str | None:
    """Why Qt Multimedia cannot be used here, or None when it can."""
    try:
        from PySide6 import QtMultimedia  # noqa: F401 (loading is the test)
    except (ImportError, OSError) as error:
        return MULTIMEDIA_MISSING.format(error=str(error) or type(error).__name__)
    return None


def camera_problem() -> str | None:
    """Why no camera can be opened now (asked on each scan: a camera may be plugged in later)."""
    if problem := multimedia_problem():
        return problem
    from PySide6.QtMultimedia import QMediaDevices

    return None if QMediaDevices.videoInputs() else NO_CAMERA


def frame_image(frame) -> QImage:
    """A QVideoFrame's pixels as a QImage, in any thread: the luma plane where the frame has
    one (cameras mostly send YUV), else Qt's own conversion; a null image if it has none."""
    from PySide6.QtMultimedia import QVideoFrame

    if frame.pixelFormat().name in LUMA_PLANE_FORMATS and frame.map(QVideoFrame.MapMode.ReadOnly):
        try:
            stride, height = frame.bytesPerLine(0), frame.height()
            plane = bytes(frame.bits(0)[: stride * height])
        finally:
            frame.unmap()
        return QImage(plane, frame.width(), height, stride, QImage.Format.Format_Grayscale8).copy()
    return frame.toImage()


class FrameScanner(QObject):
    """Looks for an invite in a sink's frames until it finds one or is stopped."""

    found = Signal(str)          # the invite's text; the scanner has stopped
    not_an_invite = Signal(str)  # a QR code that says something else; scanning goes on
    _decoded = Signal(object)    # from the worker thread: the texts of one frame

    def __init__(self, sink, decode: Callable[[QImage], list[str]], is_invite: Callable[[str], bool],
                 parent=None):
        super().__init__(parent)
        self.sink = sink
        self.decode = decode
        self.is_invite = is_invite
        self.running = False
        self.busy = False
        self.frames_seen = 0
        self.frames_decoded = 0
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qr-frames")
        self._decoded.connect(self._read)

    def start(self) -> None:
        self.running = True
        self.sink.videoFrameChanged.connect(self._frame)

    def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        self.sink.videoFrameChanged.disconnect(self._frame)
        self._worker.shutdown(wait=False)  # a decode under way ends by itself; its result is ignored

    def _frame(self, frame) -> None:
        self.frames_seen += 1
        if self.busy or not self.running or not frame.isValid():
            return  # dropped: the worker reads a newer one when it is free
        from PySide6.QtMultimedia import QVideoFrame

        self.busy = True
        # Kept past this slot by a new reference to the same pixels (QVideoFrame copies share them).
        self._worker.submit(self._decode_frame, QVideoFrame(frame))

    def _decode_frame(self, frame) -> None:
        """In the worker thread."""
        try:
            texts = self.decode(frame_image(frame))
        except Exception:  # one unreadable frame must not end the scan
            log.exception("could not decode a video frame")
            texts = []
        try:
            self._decoded.emit(texts)  # queued to the GUI thread, where the scanner lives
        except RuntimeError:
            pass  # the scanner was deleted while the frame was decoded

    def _read(self, texts: list[str]) -> None:
        self.busy = False
        self.frames_decoded += 1
        if not self.running:
            return
        invites = [text for text in texts if self.is_invite(text)]
        if invites:
            self.stop()
            self.found.emit(invites[0])
        elif texts:
            self.not_an_invite.emit(texts[0])


class CameraSource(QObject):
    """The default camera, feeding `sink` while started. Where the system asks the user first
    (macOS), the camera starts once they allow it; `failed` says so when they do not."""

    failed = Signal(str)  # a sentence for the user
    ended = Signal()      # never: a camera does not run out (a video file does)

    def __init__(self, sink, parent=None):
        super().__init__(parent)
        from PySide6.QtMultimedia import QCamera, QMediaCaptureSession

        self.session = QMediaCaptureSession(self)
        self.camera = QCamera(self)
        self.session.setCamera(self.camera)
        self.session.setVideoSink(sink)
        self.camera.errorOccurred.connect(
            lambda _error, text: self.failed.emit(f"The camera failed: {text or 'no reason given'}."))
        self.wanted = False

    def start(self) -> None:
        from PySide6.QtCore import QCameraPermission, QCoreApplication, Qt

        self.wanted = True
        if self.camera.cameraDevice().isNull():  # unplugged since camera_problem() looked
            self.failed.emit(NO_CAMERA)
            return
        permission = QCameraPermission()
        status = QCoreApplication.instance().checkPermission(permission)
        if status == Qt.PermissionStatus.Undetermined:
            # Answered later, maybe after Stop: start only if still wanted (the status is now known).
            QCoreApplication.instance().requestPermission(permission, self, lambda _: self.wanted and self.start())
        elif status == Qt.PermissionStatus.Denied:
            self.failed.emit(CAMERA_DENIED)
        else:
            self.camera.start()

    def stop(self) -> None:
        self.wanted = False
        self.camera.stop()

    def is_running(self) -> bool:
        return self.camera.isActive()
