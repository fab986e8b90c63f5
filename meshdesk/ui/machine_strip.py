"""A one-line strip above the chat: this machine's part in the mesh (what it hosts or lends, its
layers and share of the work, its state), with a button to the full Mesh view.

`machine_line` is the Qt-free view model; `MachineStrip` only shows it."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QSizePolicy

from meshdesk.core.planning import Plan
from meshdesk.core.states import Role
from meshdesk.core.status import StatusSnapshot, layer_spans
from meshdesk.ui.mesh_model import TrayState, tray_state
from meshdesk.ui.text import share_percent

STATE_WORDS = {TrayState.READY: "ready", TrayState.LOADING: "loading", TrayState.FAILED: "failed",
               TrayState.NO_MESH: "no mesh yet"}


def part_in_plan(plan: Plan, node_id: str) -> str | None:
    """E.g. "hosts Qwen · layers 0–13 of 24 · 58% share"; None when this node has no part in `plan`."""
    member = next((member for member in plan.members if member.node_id == node_id), None)
    if member is None:
        return f"hosts {plan.model}" if plan.host == node_id else None
    total = sum(member.layers for member in plan.members)
    verb = "hosts" if plan.host == node_id else "lends layers to"
    if len(plan.members) < 2:
        return f"{verb} {plan.model} · all {total} layers" if total else f"{verb} {plan.model}"
    span = layer_spans(plan).get(node_id)
    layers = f"layers {span[0]}–{span[1]} of {total}" if span else "no layers"
    return f"{verb} {plan.model} · {layers} · {share_percent(member.share)} share"


def machine_line(snapshot: StatusSnapshot) -> str:
    node = snapshot.node
    parts = [part for plan in snapshot.plans if (part := part_in_plan(plan, node.id))]
    if not parts:
        parts = ["uses the mesh, lends no memory" if node.role == Role.CLIENT else "serves nothing now"]
    machines = 1 + len(snapshot.peers) if snapshot.mesh is not None else 1
    others = f"mesh of {machines} machine{'s' if machines != 1 else ''}"
    return f"This machine ({node.name}): " + "; ".join(parts) + \
        f" · {STATE_WORDS[tray_state(snapshot)]} · {others}"


class MachineStrip(QFrame):
    details_requested = Signal()  # the user wants the full Mesh view

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("machineStrip")
        self.setStyleSheet("#machineStrip { background: #f5f7fa; border: 1px solid #dde2ea;"
                           " border-radius: 4px; }")
        self.full_text = "This machine: starting…"
        self.line = QLabel(self.full_text)
        self.line.setTextFormat(Qt.TextFormat.PlainText)
        # Elided to the width it gets (the tooltip has it all), so a long line never widens the window.
        self.line.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.line.setStyleSheet("color: #475467;")
        self.details = QPushButton("Mesh view")
        self.details.setFlat(True)
        self.details.clicked.connect(self.details_requested)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 2, 4, 2)
        layout.addWidget(self.line, 1)
        layout.addWidget(self.details)

    def show_status(self, snapshot: StatusSnapshot) -> None:
        self.full_text = machine_line(snapshot)
        self.line.setToolTip(self.full_text)
        self._elide()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        width = max(self.line.width(), 40)
        self.line.setText(self.line.fontMetrics().elidedText(self.full_text, Qt.TextElideMode.ElideRight, width))
