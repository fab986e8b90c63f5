"""The Mesh tab's picture in a real widget (pytest-qt, offscreen): segment widths, their text,
activity lighting up while counters move and going out when they stop, joining progress."""

from __future__ import annotations

from dataclasses import replace

from PySide6.QtGui import QColor

from meshdesk.core.status import LayersStatus
from meshdesk.ui.cluster_bar import ACTIVE_OUTLINE
from meshdesk.ui.mesh_segments import ACTIVE_HOLD_S
from meshdesk.ui.mesh_view import MeshView
from tests.test_ui_mesh_segments import MB, Clock, moved
from tests.test_ui_snapshots import QWEN, split


def view_of(qtbot, clock=None) -> MeshView:
    view = MeshView(clock=clock or Clock())
    qtbot.addWidget(view)
    view.resize(900, 420)
    view.show()
    qtbot.waitExposed(view)
    return view


def test_segments_are_as_wide_as_what_each_machine_offers(qtbot):
    view = view_of(qtbot)
    view.show_status(split())
    widths = [rect.width() for rect in view.cluster_bar.segment_rects()]
    offered = [24, 16, 8]  # GB: alice, bob, carol; dave offers nothing and keeps a sliver
    for width, gigabytes in zip(widths[1:3], offered[1:]):
        assert abs(width / widths[0] - gigabytes / offered[0]) < 0.02
    assert 0 < widths[3] < widths[2]


def test_the_picture_comes_first_and_the_details_are_folded(qtbot):
    view = view_of(qtbot)
    view.show_status(split())
    assert view.headline.text() == f"4 machines · 48 GB pooled · serving {QWEN} split over 3 of them"
    assert view.layout().indexOf(view.cluster_bar) < view.layout().indexOf(view.details)
    assert view.details.isHidden() and view.traffic.text().startswith("weights sent 0 B")
    view.details_button.click()
    assert view.details.isVisible() and view.details_button.isChecked()
    texts = [s.label_lines() for s in view.cluster_bar.segments]
    assert texts[1] == ["bob-desktop · worker", "layers 0–20 · 33%", "16 GB · 3.2 ms", "ready"]
    assert "carol-laptop · worker · layers 21–31 · 17% · 8.0 GB · 12 ms" in view.cluster_bar.toolTip()
    table = view.machines  # every fact in full under the picture, where a segment is narrow
    assert [table.item(3, column).text() for column in range(table.columnCount())] == [
        "dave-phone", "client", "—", "—", "0 GB", "24 ms", "lite client"]


def edge_colour(view: MeshView, index: int) -> QColor:
    """The colour of a segment's left edge, in the middle of its height, as drawn."""
    image = view.cluster_bar.grab().toImage()
    rect = view.cluster_bar.segment_rects()[index]
    return image.pixelColor(int(rect.left() + 2 * image.devicePixelRatio()) + 1, int(rect.center().y()))


def test_activity_lights_up_while_counters_move_and_goes_out_when_they_stop(qtbot):
    clock = Clock()
    view = view_of(qtbot, clock)
    view.show_status(split())
    assert not any(s.active for s in view.cluster_bar.segments)
    assert edge_colour(view, 1) != ACTIVE_OUTLINE
    clock.now += 1
    view.show_status(moved(split(), activations=8192, round_trips=4))  # a token went round the split
    assert [s.active for s in view.cluster_bar.segments] == [True, True, True, False]
    assert view.cluster_bar.segments[1].state_text() == "● busy · ready"
    assert view.machines.item(1, 6).text() == "● busy · ready"
    assert edge_colour(view, 1) == ACTIVE_OUTLINE
    clock.now += ACTIVE_HOLD_S + 0.1  # no counter moved since: the generation ended
    view.redraw_activity()
    assert not any(s.active for s in view.cluster_bar.segments)
    assert view.machines.item(1, 6).text() == "ready"
    assert edge_colour(view, 1) != ACTIVE_OUTLINE


def test_while_shown_the_tab_asks_for_fresh_status_and_lets_activity_run_out(qtbot):
    clock = Clock()
    view = view_of(qtbot, clock)
    view.show_status(split())
    view.show_status(moved(split(), activations=1))
    assert view.cluster_bar.segments[0].active
    clock.now += ACTIVE_HOLD_S + 1
    with qtbot.waitSignal(view.refresh_wanted, timeout=3000):
        pass  # the tab's own timer: it redraws activity, then asks for a snapshot
    assert not view.cluster_bar.segments[0].active
    view.hide()
    assert not view.timer.isActive()


def test_receiving_layers_shows_its_progress(qtbot):
    view = view_of(qtbot)
    view.show_status(replace(split(), layers=LayersStatus(QWEN, 30 * MB, 120 * MB)))
    own = view.cluster_bar.segments[0]
    assert own.label_lines()[3] == "receiving layers 25% · 30 of 120 MB"
    image = view.cluster_bar.grab().toImage()
    rect = view.cluster_bar.segment_rects()[0]
    ratio = image.devicePixelRatio()
    bar_y = int((rect.bottom() - 6 - 3) * ratio)  # the progress bar along the segment's bottom
    filled = image.pixelColor(int((rect.left() + 10 + 0.1 * (rect.width() - 16)) * ratio), bar_y)
    empty = image.pixelColor(int((rect.left() + 8 + 0.9 * (rect.width() - 16)) * ratio), bar_y)
    assert filled.green() > filled.red() + 60 and filled != empty


def test_through_the_app_a_node_busy_without_telling_lights_up_on_the_mesh_tab(qtbot):
    """The node notifies on gossip, not on every token: the tab's own looks find the counters
    that moved (the real controller, a node that never notifies)."""
    from tests.test_ui_controller import FakeMeshNode, desktop

    node = FakeMeshNode()
    node.snapshot = split()
    _, window, _, _ = desktop(qtbot, node)
    window.show_tab(window.mesh)
    window.show()
    qtbot.waitExposed(window)
    assert not window.mesh.cluster_bar.segments[0].active
    node.snapshot = moved(split(), activations=4096, round_trips=2)  # no listener is told
    qtbot.waitUntil(lambda: window.mesh.cluster_bar.segments[0].active, timeout=5000)
    assert [s.active for s in window.mesh.cluster_bar.segments] == [True, True, True, False]
