"""The Mesh tab: the cluster bar, and the mesh's model, draft, API and plans at a glance."""

from __future__ import annotations

from PySide6.QtWidgets import QFormLayout, QVBoxLayout, QWidget

from meshdesk.core.status import StatusSnapshot
from meshdesk.ui.cluster_bar import ClusterBar
from meshdesk.ui.mesh_model import MeshSummary, cluster_segments, mesh_summary
from meshdesk.ui.widgets import selectable_label

WAITING_STYLE = "QLabel { background: #fff4d6; color: #6b4b00; padding: 8px; border-radius: 4px; }"


class MeshView(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.cluster_bar = ClusterBar()
        self.waiting = selectable_label()
        self.waiting.setStyleSheet(WAITING_STYLE)
        self.waiting.hide()
        self.mesh, self.models, self.draft = selectable_label(), selectable_label(), selectable_label()
        self.api, self.capacity, self.plans = selectable_label(), selectable_label(), selectable_label()
        self.refusals, self.traffic, self.layers = selectable_label(), selectable_label(), selectable_label()
        self.speculation = selectable_label()
        layout = QVBoxLayout(self)
        layout.addWidget(self.cluster_bar)
        layout.addWidget(self.waiting)
        layout.addLayout(self._facts())
        layout.addStretch(1)

    def _facts(self) -> QFormLayout:
        form = QFormLayout()
        for title, label in (("Mesh", self.mesh), ("Pooled capacity", self.capacity),
                             ("Models", self.models), ("Draft", self.draft),
                             ("Speculation", self.speculation), ("API", self.api),
                             ("Plans", self.plans), ("Split traffic", self.traffic), ("Layers", self.layers),
                             ("Refused peers", self.refusals)):
            form.addRow(title, label)
        return form

    def show_status(self, snapshot: StatusSnapshot) -> None:
        self.cluster_bar.show_segments(cluster_segments(snapshot))
        self.show_summary(mesh_summary(snapshot))

    def show_summary(self, summary: MeshSummary) -> None:
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
