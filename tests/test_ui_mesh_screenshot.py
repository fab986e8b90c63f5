"""The Mesh tab's screenshots for the README, from the real window: a split answering (its
machines busy) and a friend's machine receiving its layers. Each asserts what a person looks at:
who is busy, how wide each machine is, how far the layers have come, the details folded away."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QPoint
from PySide6.QtGui import QColor, QImage
from PySide6.QtWidgets import QApplication

from meshdesk.core.status import StatusSnapshot
from meshdesk.ui.cluster_bar import ACTIVE_OUTLINE, PROGRESS_FILL
from meshdesk.ui.main_window import MainWindow
from tests.test_ui_mesh_segments import Clock, moved
from tests.test_ui_snapshots import ALICE, CAROL, DAVE, GB, QWEN, model_wire, peer_wire, split, split_wire

FOLDER = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
SIZE = (900, 620)
MB = 1024 ** 2


def joining_wire() -> dict:
    """Carol has just joined alice's split: she receives her layers while alice's host loads;
    dave's machine is still connecting."""
    wire = split_wire()
    advert = wire["peers"][0]["models"][0]
    wire["node"] = {"id": CAROL, "name": "carol-laptop", "home": "/home/carol/.local/share/meshdesk",
                    "version": "0.1.0", "role": "worker"}
    wire["models"] = [model_wire(QWEN, "loading")]
    wire["offer"] = {"measured_bytes": 8 * GB, "cap_bytes": None, "donating": True, "capacity_bytes": 8 * GB}
    wire["peers"] = [peer_wire(ALICE, "alice", "host", 24, 2.9, [advert]), wire["peers"][0],
                     peer_wire(DAVE, "dave-phone", "client", 0, None) | {"linked": False}]
    wire["layers"] = {"model": QWEN, "received_bytes": 1200 * MB, "missing_bytes": 2700 * MB,
                      "receiving": True, "problem": None}
    wire["traffic"] = {"weights_sent_bytes": 0, "weights_referenced_bytes": 0, "activations_bytes": 0,
                       "round_trips": 0}
    return wire


def window_on_mesh(qtbot) -> MainWindow:
    window = MainWindow()
    qtbot.addWidget(window)
    window.mesh.clock = Clock()  # time stands still: the busy mark holds while the grab runs
    window.resize(*SIZE)
    window.show_tab(window.mesh)
    window.show()
    qtbot.waitExposed(window)
    return window


def save(window: MainWindow, name: str) -> QImage:
    QApplication.sendPostedEvents()
    QApplication.processEvents()
    path = FOLDER / f"{name}.png"
    FOLDER.mkdir(parents=True, exist_ok=True)
    assert window.grab().save(str(path))
    assert path.stat().st_size < 250_000  # modest enough to commit
    return QImage(str(path))


def segment_spans(window: MainWindow, image: QImage) -> list[tuple[int, int, int]]:
    """Each segment's (left, right, middle row) in the saved image's pixels."""
    bar = window.mesh.cluster_bar
    origin = bar.mapTo(window, QPoint(0, 0))
    ratio = image.width() / window.width()
    return [(round((origin.x() + rect.left()) * ratio), round((origin.x() + rect.right()) * ratio),
             round((origin.y() + rect.center().y()) * ratio)) for rect in bar.segment_rects()]


def greens_at_left_edge(image: QImage, span: tuple[int, int, int], colour: QColor) -> bool:
    left, _, row = span
    return any(image.pixelColor(x, row) == colour for x in range(left, left + 8))


def test_screenshot_of_a_split_answering(qtbot):
    window = window_on_mesh(qtbot)
    window.show_status(split())
    window.show_status(moved(split(), activations=8192, round_trips=4))  # tokens went round the split
    image = save(window, "mesh")
    spans = segment_spans(window, image)
    assert [greens_at_left_edge(image, span, ACTIVE_OUTLINE) for span in spans] == [True, True, True, False]
    widths = [right - left for left, right, _ in spans]  # alice 24 GB, bob 16, carol 8, dave none
    assert abs(widths[1] / widths[0] - 16 / 24) < 0.03 and abs(widths[2] / widths[0] - 8 / 24) < 0.03
    assert window.mesh.headline.text().startswith("4 machines · 48 GB pooled · serving")
    assert window.mesh.details.isHidden()  # the engineers' facts are folded under "Details"
    assert [s.label_lines()[1] for s in window.mesh.cluster_bar.segments[:3]] == [
        "layers 32–63 · 50%", "layers 0–20 · 33%", "layers 21–31 · 17%"]


def test_screenshot_of_a_friend_receiving_layers(qtbot):
    window = window_on_mesh(qtbot)
    window.show_status(StatusSnapshot.from_wire(joining_wire()))
    image = save(window, "mesh-joining")
    segments = window.mesh.cluster_bar.segments
    assert [s.state_text() for s in segments] == [
        "receiving layers 44% · 1200 of 2700 MB", "loading", "loading", "connecting"]
    left, right, _ = segment_spans(window, image)[0]
    bar = window.mesh.cluster_bar
    ratio = image.width() / window.width()
    row = round((bar.mapTo(window, QPoint(0, 0)).y() + bar.segment_rects()[0].bottom() - 6 - 3) * ratio)
    filled = [x for x in range(left, right) if image.pixelColor(x, row) == PROGRESS_FILL]
    inner = (right - left) - round(16 * ratio)
    assert abs(len(filled) / inner - 0.44) < 0.05  # the progress bar shows 44% of the layers in
