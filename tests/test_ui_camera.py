"""The camera scan, without a camera: a QMediaPlayer plays a real video of a QR code into the
same frame pipeline (a video sink: the viewfinder's, or a bare one) that a camera feeds.

The videos are written by Qt itself, QMediaRecorder fed through QVideoFrameInput (Qt 6.8+):
no test-only library, and the file is decoded back by the same FFmpeg backend that plays a
camera's frames. Motion JPEG in Matroska: every frame is a key frame, so the QR code is sharp
from the first frame on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
from PySide6.QtCore import QEventLoop, QObject, QSize, QTimer, QUrl, Signal
from PySide6.QtGui import QImage, QPainter

from meshdesk.ui.camera import NO_CAMERA, multimedia_problem

if multimedia_problem():
    pytest.skip(multimedia_problem(), allow_module_level=True)

from PySide6 import QtMultimedia  # noqa: E402 (only where it loads)

from meshdesk.app.desktop import decode_image  # noqa: E402
from meshdesk.core.invite import decode_token  # noqa: E402
from meshdesk.ui.camera import CameraSource, FrameScanner, frame_image  # noqa: E402
from meshdesk.ui.join_view import JoinView, is_invite  # noqa: E402
from meshdesk.ui.qr_images import qr_image  # noqa: E402
from tests.test_ui_controller import LINK, desktop  # noqa: E402
from tests.test_ui_join import LINK as OTHER_MESH_LINK  # noqa: E402
from tests.test_ui_join import JoiningNode, drain, loop  # noqa: E402, F401 (fixture)

FRAME = QSize(640, 480)
FPS = 10
FRAME_PACE_MS = 20
WAIT_MS = 15_000
QR_TEXT = decode_token(LINK).qr_text()  # what the Invite tab's QR code says


def frame_with(text: str | None) -> QImage:
    frame = QImage(FRAME, QImage.Format.Format_RGB32)
    frame.fill(0xFFF4F1EA)  # off-white, as a lit screen
    if text is not None:
        code = qr_image(text, module_pixels=4)
        painter = QPainter(frame)
        painter.drawImage((FRAME.width() - code.width()) // 2, (FRAME.height() - code.height()) // 2, code)
        painter.end()
    return frame


def wait_for(signal, timeout_ms: int = WAIT_MS) -> None:
    loop = QEventLoop()
    signal.connect(loop.quit)
    QTimer.singleShot(timeout_ms, loop.quit)
    loop.exec()


def wait_until(condition, signal) -> None:
    """Runs Qt's loop until `condition()` holds, waking on `signal`, for WAIT_MS at most."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while not condition() and time.monotonic() < deadline:
        wait_for(signal, int((deadline - time.monotonic()) * 1000) + 1)


def write_video(path, image: QImage, seconds: float) -> str:
    """A Motion JPEG video of `image`, `seconds` long, written by QMediaRecorder.

    Frames go in one every FRAME_PACE_MS, each stamped with its place in the video, until the
    recorder says it has encoded them all: frames sent in a burst while its encoder starts
    were sometimes accepted and then lost (an empty file, 5 times in 12), paced ones never."""
    session = QtMultimedia.QMediaCaptureSession()
    frames = QtMultimedia.QVideoFrameInput(QtMultimedia.QVideoFrameFormat(
        FRAME, QtMultimedia.QVideoFrameFormat.PixelFormat.Format_BGRX8888))
    recorder = QtMultimedia.QMediaRecorder()
    session.setVideoFrameInput(frames)
    session.setRecorder(recorder)
    media = QtMultimedia.QMediaFormat(QtMultimedia.QMediaFormat.FileFormat.Matroska)
    media.setVideoCodec(QtMultimedia.QMediaFormat.VideoCodec.MotionJPEG)
    recorder.setMediaFormat(media)
    recorder.setQuality(QtMultimedia.QMediaRecorder.Quality.VeryHighQuality)
    recorder.setVideoFrameRate(FPS)
    recorder.setOutputLocation(QUrl.fromLocalFile(str(path)))
    last_frame_ms = (seconds * FPS - 1) * 1000 // FPS
    sent = [0]

    def send_one() -> None:
        if recorder.duration() >= last_frame_ms:
            pace.stop()
            recorder.stop()
            return
        frame = QtMultimedia.QVideoFrame(image)
        frame.setStartTime(sent[0] * 1_000_000 // FPS)
        frame.setEndTime((sent[0] + 1) * 1_000_000 // FPS)
        if frames.sendVideoFrame(frame):  # False: the recorder's queue is full, try again next tick
            sent[0] += 1

    pace = QTimer()
    pace.timeout.connect(send_one)
    recorder.record()
    pace.start(FRAME_PACE_MS)
    wait_until(lambda: recorder.recorderState() == QtMultimedia.QMediaRecorder.RecorderState.StoppedState,
               recorder.recorderStateChanged)
    pace.stop()
    assert recorder.duration() >= last_frame_ms and path.stat().st_size > 10_000, recorder.errorString()
    return str(path)


@pytest.fixture(scope="module")
def videos(qapp, tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    return {"invite": write_video(folder / "invite.mkv", frame_with(QR_TEXT), 3),
            "no-qr": write_video(folder / "no-qr.mkv", frame_with(None), 1),
            "website": write_video(folder / "website.mkv", frame_with("https://example.org/"), 1),
            "other-mesh": write_video(folder / "other-mesh.mkv",
                                      frame_with(decode_token(OTHER_MESH_LINK).qr_text()), 2)}


class PlayerSource(QObject):
    """A video file in the place of the camera: the same start/stop/failed/ended surface."""

    failed = Signal(str)
    ended = Signal()

    def __init__(self, path: str, sink, parent=None):
        super().__init__(parent)
        self.player = QtMultimedia.QMediaPlayer(self)
        self.player.setVideoSink(sink)
        self.player.setSource(QUrl.fromLocalFile(path))
        self.player.errorOccurred.connect(lambda _error, text: self.failed.emit(text))
        self.player.mediaStatusChanged.connect(
            lambda status: status == QtMultimedia.QMediaPlayer.MediaStatus.EndOfMedia and self.ended.emit())
        self.stopped = False

    def start(self) -> None:
        self.player.play()

    def stop(self) -> None:
        self.player.stop()
        self.stopped = True

    def is_running(self) -> bool:
        return self.player.playbackState() == QtMultimedia.QMediaPlayer.PlaybackState.PlayingState


class RecordingDecoder:
    """The app's decoder, noting the thread of each call and how many ran at once."""

    def __init__(self, hold: threading.Event | None = None):
        self.threads: set[int] = set()
        self.running = self.most_at_once = 0
        self.lock = threading.Lock()
        self.hold = hold

    def __call__(self, image: QImage) -> list[str]:
        with self.lock:
            self.threads.add(threading.get_ident())
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        if self.hold is not None:
            assert self.hold.wait(WAIT_MS / 1000)
        try:
            return decode_image(image)
        finally:
            with self.lock:
                self.running -= 1


def test_frame_pixels_come_from_the_luma_plane_or_from_qts_conversion(qapp):
    rgb = QtMultimedia.QVideoFrame(frame_with(QR_TEXT))  # no luma plane: Qt converts it
    assert rgb.pixelFormat().name not in ("Format_YUV420P", "Format_NV12")
    assert decode_image(frame_image(rgb)) == [QR_TEXT]
    yuv = QtMultimedia.QVideoFrame(QtMultimedia.QVideoFrameFormat(
        FRAME, QtMultimedia.QVideoFrameFormat.PixelFormat.Format_NV12))
    assert yuv.map(QtMultimedia.QVideoFrame.MapMode.WriteOnly)
    luma = frame_with(QR_TEXT).convertToFormat(QImage.Format.Format_Grayscale8)
    grey, plane = bytes(luma.constBits()), yuv.bits(0)
    for row in range(FRAME.height()):  # the grey picture as the frame's first plane
        start, source = row * yuv.bytesPerLine(0), row * luma.bytesPerLine()
        plane[start:start + FRAME.width()] = grey[source:source + FRAME.width()]
    yuv.unmap()
    image = frame_image(yuv)
    assert image.format() == QImage.Format.Format_Grayscale8 and decode_image(image) == [QR_TEXT]
    assert frame_image(QtMultimedia.QVideoFrame()).isNull()


def test_a_video_of_the_invite_qr_is_decoded_off_the_gui_thread_and_the_player_stops(qtbot, videos):
    sink = QtMultimedia.QVideoSink()
    decoder = RecordingDecoder()
    scanner = FrameScanner(sink, decoder, is_invite)
    source = PlayerSource(videos["invite"], sink)
    scanner.start()
    with qtbot.waitSignal(scanner.found, timeout=WAIT_MS) as found:
        source.start()
    source.stop()  # as the panel does on `found`
    assert found.args == [QR_TEXT] and decode_token(QR_TEXT) == decode_token(LINK)
    assert decoder.threads and threading.get_ident() not in decoder.threads
    assert not scanner.running and not source.is_running()


def test_frames_are_dropped_while_one_is_decoded(qtbot, videos):
    """The GUI thread never queues frames behind a slow decode: one at a time, the rest dropped."""
    sink = QtMultimedia.QVideoSink()
    hold = threading.Event()
    decoder = RecordingDecoder(hold)
    scanner = FrameScanner(sink, decoder, is_invite)
    source = PlayerSource(videos["invite"], sink)
    scanner.start()
    source.start()
    qtbot.waitUntil(lambda: scanner.frames_seen >= 5, timeout=WAIT_MS)
    assert decoder.running == 1 and scanner.frames_decoded == 0 and scanner.busy
    with qtbot.waitSignal(scanner.found, timeout=WAIT_MS):
        hold.set()
    source.stop()
    assert decoder.most_at_once == 1
    assert scanner.frames_decoded < scanner.frames_seen - 3


def join_view(qtbot, video: str, view: JoinView | None = None) -> tuple[JoinView, list[PlayerSource]]:
    if view is None:
        view = JoinView()
        qtbot.addWidget(view)
        view.use_frame_decoder(RecordingDecoder())
    sources: list[PlayerSource] = []

    def play(sink, parent) -> PlayerSource:
        sources.append(PlayerSource(video, sink, parent))
        return sources[-1]

    view.camera.find_problem = lambda: None  # there is no camera here: the video stands in for it
    view.camera.make_source = play
    view.show()
    return view, sources


def test_the_viewfinder_shows_what_is_scanned(qtbot, videos):
    """A grab of the view while scanning holds the QR code: the user sees the frames decoded."""
    view, sources = join_view(qtbot, videos["invite"])
    view.use_frame_decoder(lambda image: [])  # finds nothing, so the video keeps playing
    view.camera_button.click()
    qtbot.waitUntil(lambda: view.camera.viewfinder.frame is not None, timeout=WAIT_MS)
    assert decode_image(view.grab().toImage()) == [QR_TEXT]
    view.camera.stop_button.click()


def test_screenshot_of_the_join_tab_scanning_with_the_camera(qtbot, videos):
    """docs/screenshots/join-camera.png for the README; its viewfinder must hold a readable QR."""
    from meshdesk.ui.main_window import MainWindow
    from tests.test_ui_screenshots import SIZE, check, save

    window = MainWindow()
    qtbot.addWidget(window)
    window.resize(*SIZE)
    window.tabs.setCurrentWidget(window.join)
    window.show()
    view, _ = join_view(qtbot, videos["invite"], window.join)
    view.use_frame_decoder(lambda image: [])  # keeps the viewfinder open for the picture
    view.camera_button.click()
    qtbot.waitUntil(lambda: view.camera.viewfinder.frame is not None, timeout=WAIT_MS)
    path = save(window, "join-camera", qtbot)
    check(path)
    assert decode_image(QImage(str(path))) == [QR_TEXT]
    view.camera.stop_button.click()


def test_the_join_view_scans_a_video_into_the_confirm_before_join_flow(qtbot, videos):
    view, sources = join_view(qtbot, videos["invite"])
    view.camera_button.click()
    assert view.camera.isVisible() and view.camera.viewfinder.isVisible()
    qtbot.waitUntil(lambda: view.token.text() == LINK, timeout=WAIT_MS)  # the canonical link
    assert "Found an invite in the camera" in view.result.text()
    assert sources[0].stopped and not sources[0].is_running() and not view.camera.isVisible()
    assert view.camera.decode.threads and threading.get_ident() not in view.camera.decode.threads
    with qtbot.waitSignal(view.review_requested) as review:  # nothing joins before the offer
        view.join_button.click()
    assert review.args == [LINK]


def test_through_the_app_a_scanned_invite_joins_only_once_the_offer_is_confirmed(qtbot, videos, loop):
    node = JoiningNode()
    controller, window, _, _ = desktop(qtbot, node)  # lends the app's decoder to both Join views
    assert window.join.camera.decode is controller.services.decode_image
    assert window.first_run.join.camera.decode is controller.services.decode_image
    window.show()
    window.tabs.setCurrentWidget(window.join)
    view, sources = join_view(qtbot, videos["other-mesh"], window.join)
    view.camera_button.click()
    qtbot.waitUntil(lambda: view.token.text() == OTHER_MESH_LINK, timeout=WAIT_MS)
    assert sources[0].stopped and node.joins == []
    view.join_button.click()  # "Join…": the offer
    assert view.offer is not None and view.confirm_button.isEnabled() and node.joins == []
    view.confirm_button.click()
    drain(qtbot, controller)
    assert node.joins == [(OTHER_MESH_LINK, False)]


def test_a_video_without_a_qr_code_ends_with_a_clear_message(qtbot, videos):
    view, sources = join_view(qtbot, videos["no-qr"])
    view.camera_button.click()
    qtbot.waitUntil(lambda: "ended" in view.result.text(), timeout=WAIT_MS)
    assert view.result.text() == "The video ended without a MeshDesk invite QR code."
    assert sources[0].stopped and view.token.text() == "" and not view.camera.isVisible()


def test_a_qr_code_that_is_not_an_invite_says_so_and_scanning_goes_on(qtbot, videos):
    view, sources = join_view(qtbot, videos["website"])
    messages: list[str] = []
    view.camera.message.connect(messages.append)
    view.camera_button.click()
    qtbot.waitUntil(lambda: any("not a MeshDesk invite" in text for text in messages), timeout=WAIT_MS)
    assert "https://example.org/" in next(text for text in messages if "not a MeshDesk" in text)
    assert view.camera.scanner is not None and view.camera.scanner.running  # still looking
    qtbot.waitUntil(lambda: "ended" in view.result.text(), timeout=WAIT_MS)
    assert view.token.text() == "" and sources[0].stopped


def test_leaving_the_view_or_pressing_stop_turns_the_camera_off(qtbot, videos):
    view, sources = join_view(qtbot, videos["no-qr"])
    view.camera_button.click()
    qtbot.waitUntil(lambda: sources[0].is_running(), timeout=WAIT_MS)
    view.hide()  # another tab, or the window closed
    assert sources[0].stopped and not sources[0].is_running() and view.camera.scanner is None
    view.show()
    view.camera_button.click()
    qtbot.waitUntil(lambda: sources[1].is_running(), timeout=WAIT_MS)
    view.camera.stop_button.click()
    assert sources[1].stopped and view.result.text() == "Camera stopped."


def test_without_a_camera_the_button_says_so(qtbot):
    if QtMultimedia.QMediaDevices.videoInputs():
        pytest.skip("this machine has a camera")
    view = JoinView()
    qtbot.addWidget(view)
    view.use_frame_decoder(decode_image)
    view.show()
    view.camera_button.click()
    assert view.result.text() == NO_CAMERA and not view.camera.isVisible()


def test_the_camera_source_without_a_camera_fails_with_the_same_message(qtbot):
    if QtMultimedia.QMediaDevices.videoInputs():
        pytest.skip("this machine has a camera")
    source = CameraSource(QtMultimedia.QVideoSink())
    with qtbot.waitSignal(source.failed) as failed:
        source.start()
    assert failed.args == [NO_CAMERA] and not source.is_running()
    source.stop()


def test_without_qt_multimedia_the_button_says_why(tmp_path):
    """As on a machine whose PySide6 lacks the add-ons, or lacks libpulse: a message, no crash."""
    program = (
        "import sys; sys.modules['PySide6.QtMultimedia'] = None\n"
        "from PySide6.QtWidgets import QApplication; app = QApplication([])\n"
        "from meshdesk.ui.join_view import JoinView\n"
        "view = JoinView(); view.use_frame_decoder(lambda image: []); view.camera_button.click()\n"
        "print(view.result.text())\n")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Scanning with a camera needs Qt Multimedia (the PySide6-Addons package), "
                                  "which could not load here: import of PySide6.QtMultimedia halted")
    assert "Paste the invite" in done.stdout
