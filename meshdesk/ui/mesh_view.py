"""The Mesh tab: first the picture a friend reads (who is in, what each offers, their layers,
who is busy, round trips, joining progress); the engineers' facts below, under "Details"."""

from __future__ import annotations

import time
from typing import Callable

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QAbstractScrollArea, QFormLayout, QLabel, QToolButton, QVBoxLayout, QWidget

from meshdesk.core.status import StatusSnapshot
from meshdesk.ui.cluster_bar import ClusterBar
from meshdesk.ui.mesh_model import MeshSummary, mesh_summary
from meshdesk.ui.mesh_segments import ActivityWatch, ClusterSegment, cluster_segments
from meshdesk.ui.widgets import fill_table, read_only_table, selectable_label

WAITING_STYLE = "QLabel { background: #fff4d6; color: #6b4b00; padding: 8px; border-radius: 4px; }"
LEGEND = ("Each block is a machine, as wide as the memory it offers. Dark blue: the host; "
          "outlined: this computer; a green edge: busy with an answer now.")
MACHINE_HEADERS = ["Machine", "Role", "Layers", "Share", "Offers", "Round trip", "State"]
LOOK_MS = 1000  # how often the tab asks for a fresh status while it shows (activity is movement)


class MeshView(QWidget):
    refresh_wanted = Signal()  # a fresh status, please: counters that move are the activity

    def __init__(self, parent=None, clock: Callable[[], float] = time.monotonic):
        super().__init__(parent)
        self.clock = clock  # monotonic seconds: how long ago the activity counters last moved
        self.activity = ActivityWatch()
        self.snapshot: StatusSnapshot | None = None
        self.headline = QLabel()
        self.headline.setWordWrap(True)
        self.headline.setStyleSheet("QLabel { font-size: 15px; font-weight: bold; }")
        self.cluster_bar = ClusterBar()
        self.legend = QLabel(LEGEND)
        self.legend.setWordWrap(True)
        self.legend.setStyleSheet("QLabel { color: #5a6270; }")
        self.machines = read_only_table(MACHINE_HEADERS)
        self.machines.setSizeAdjustPolicy(QAbstractScrollArea.SizeAdjustPolicy.AdjustToContents)
        self.waiting = selectable_label()
        self.waiting.setStyleSheet(WAITING_STYLE)
        self.waiting.hide()
        self.mesh, self.models, self.draft = selectable_label(), selectable_label(), selectable_label()
        self.api, self.capacity, self.plans = selectable_label(), selectable_label(), selectable_label()
        self.refusals, self.traffic, self.layers = selectable_label(), selectable_label(), selectable_label()
        self.speculation = selectable_label()
        self.details_button, self.details = self._details()
        layout = QVBoxLayout(self)
        for widget in (self.headline, self.cluster_bar, self.legend, self.waiting):
            layout.addWidget(widget)
        layout.addWidget(self.machines)
        layout.addWidget(self.details_button)
        layout.addWidget(self.details)
        layout.addStretch(1)
        self.timer = QTimer(self, interval=LOOK_MS)
        self.timer.timeout.connect(self._look)

    def _details(self) -> tuple[QToolButton, QWidget]:
        button = QToolButton()
        button.setText("Details")
        button.setCheckable(True)
        button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        button.setArrowType(Qt.ArrowType.RightArrow)
        box = QWidget()
        form = QFormLayout(box)
        for title, label in (("Mesh", self.mesh), ("Pooled capacity", self.capacity),
                             ("Models", self.models), ("Draft", self.draft),
                             ("Speculation", self.speculation), ("API", self.api),
                             ("Plans", self.plans), ("Split traffic", self.traffic), ("Layers", self.layers),
                             ("Refused peers", self.refusals)):
            form.addRow(title, label)
        box.hide()
        button.toggled.connect(self.show_details)
        return button, box

    def show_details(self, shown: bool) -> None:
        self.details_button.setChecked(shown)
        self.details_button.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)
        self.details.setVisible(shown)

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.timer.start()

    def hideEvent(self, event) -> None:
        super().hideEvent(event)
        self.timer.stop()

    def _look(self) -> None:
        self.redraw_activity()
        self.refresh_wanted.emit()

    def show_status(self, snapshot: StatusSnapshot) -> None:
        self.snapshot = snapshot
        self.show_segments(cluster_segments(snapshot, self.activity.see(snapshot, self.clock())))
        self.show_summary(mesh_summary(snapshot))

    def redraw_activity(self) -> None:
        """Lets a busy mark run out when no new snapshot came (a generation that ended)."""
        if self.snapshot is not None:
            self.show_segments(cluster_segments(self.snapshot, self.activity.busy(self.clock())))

    def show_segments(self, segments: list[ClusterSegment]) -> None:
        if segments != self.cluster_bar.segments:
            self.cluster_bar.show_segments(segments)
            fill_table(self.machines, [segment.row() for segment in segments])

    def show_summary(self, summary: MeshSummary) -> None:
        self.headline.setText(summary.headline)
        self.mesh.setText(summary.mesh)
        self.capacity.setText(summary.capacity)
        self.models.setText(summary.models)
        self.draft.setText(summary.draft)
        self.speculation.setText(summary.speculation)
        self.api.setText(summary.api)
        self.plans.setText("\n".join(summary.plans) or "—")
        self.traffic.setText(summary.traffic)
        self.layers.setText(summary.layers)
        self.refusals.setText("\n".join(summary.refusals[-3:]) or "none")
        self.waiting.setText("\n".join(summary.waiting))
        self.waiting.setVisible(bool(summary.waiting))
