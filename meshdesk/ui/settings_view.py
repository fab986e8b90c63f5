"""The Settings tab: what this node offers (live), its name and ports, start at login, and
commands that point coding agents at the API."""

from __future__ import annotations

import shutil

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QCheckBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QPushButton, QSlider, QVBoxLayout, QWidget)

from meshdesk.core.agents import best_model, ready_models
from meshdesk.core.launcher import runs_modules
from meshdesk.core.status import OfferStatus, StatusSnapshot
from meshdesk.node.child_process import this_runtime
from meshdesk.ui.agents import agent_commands, own_launcher
from meshdesk.ui.agent_box import AgentBox
from meshdesk.ui.models_model import chat_model_choices
from meshdesk.ui.text import DASH, GIB, gigabytes, text_or_dash
from meshdesk.ui.widgets import selectable_label

STEPS_PER_GB = 10
DEBOUNCE_MS = 300  # the cap is sent once the slider rests, not on every pixel of a drag


def cap_to_position(cap_bytes: int | None, measured_bytes: int) -> int:
    """Slider position (tenths of a GB) for a cap; no cap is the far right."""
    top = measured_bytes * STEPS_PER_GB // GIB
    if cap_bytes is None:
        return top
    return max(0, min(top, round(cap_bytes * STEPS_PER_GB / GIB)))


def position_to_cap(position: int, maximum: int) -> float | None:
    """The cap in GB for a slider position; the far right means no cap (all of it)."""
    return None if position >= maximum else position / STEPS_PER_GB


class SettingsView(QWidget):
    capacity_cap_requested = Signal(object)   # GB as float, or None for no cap
    start_at_login_toggled = Signal(bool)
    rename_requested = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.debounce = QTimer(self, singleShot=True, interval=DEBOUNCE_MS)
        self.debounce.timeout.connect(self._send_cap)
        layout = QVBoxLayout(self)
        layout.addWidget(self._capacity_group())
        layout.addWidget(self._node_group())
        layout.addWidget(self._agents_group())
        layout.addStretch(1)

    def _capacity_group(self) -> QGroupBox:
        group = QGroupBox("Capacity offered to the mesh")
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setEnabled(False)
        self.slider.valueChanged.connect(self._slider_moved)
        self.slider.sliderReleased.connect(self._send_cap)
        self.cap_label = QLabel(DASH)
        self.advertised = selectable_label(DASH)
        row = QHBoxLayout()
        row.addWidget(self.slider, 1)
        row.addWidget(self.cap_label)
        form = QFormLayout(group)
        form.addRow("Offer up to", row)
        form.addRow("Advertised now", self.advertised)
        return group

    def _node_group(self) -> QGroupBox:
        group = QGroupBox("This node")
        self.name_edit = QLineEdit()
        self.name_edit.setMaxLength(64)
        self.name_edit.returnPressed.connect(self._request_rename)
        self.rename_button = QPushButton("Rename")
        self.rename_button.clicked.connect(self._request_rename)
        name_row = QHBoxLayout()
        name_row.addWidget(self.name_edit)
        name_row.addWidget(self.rename_button)
        self.name, self.node_id, self.home = selectable_label(), selectable_label(), selectable_label()
        self.api_port, self.mesh_port = selectable_label(), selectable_label()
        self.secrets = selectable_label()
        self.start_at_login = QCheckBox("Start MeshDesk when I log in")
        self.start_at_login.toggled.connect(self.start_at_login_toggled)
        self.login_note = selectable_label()
        self.login_note.hide()
        form = QFormLayout(group)
        form.addRow("Name", name_row)
        for title, widget in (("Node id", self.node_id), ("Home", self.home),
                              ("API port", self.api_port), ("Mesh port (UDP + TCP)", self.mesh_port),
                              ("Secrets", self.secrets),
                              ("", self.start_at_login), ("", self.login_note)):
            form.addRow(title, widget)
        return group

    def _agents_group(self) -> QGroupBox:
        group = QGroupBox("Use with coding agents")
        self.agents_note = selectable_label("Commands appear once a model is served.")
        self.agent_boxes: dict[str, AgentBox] = {}
        self.agents_layout = QVBoxLayout(group)
        self.agents_layout.addWidget(self.agents_note)
        return group

    def _slider_moved(self) -> None:
        self._show_cap_label()
        self.debounce.start()

    def _show_cap_label(self) -> None:
        cap = position_to_cap(self.slider.value(), self.slider.maximum())
        self.cap_label.setText("all of it" if cap is None else f"{cap:.1f} GB")

    def _send_cap(self) -> None:
        self.debounce.stop()
        self.capacity_cap_requested.emit(position_to_cap(self.slider.value(), self.slider.maximum()))

    def show_status(self, snapshot: StatusSnapshot) -> None:
        self._show_offer(snapshot.offer)
        self._show_node(snapshot)
        choices = chat_model_choices(snapshot)  # the agents' model: the one `meshdesk run` picks
        model = best_model(ready_models(snapshot)) or (choices[0] if choices else None)
        self._show_agents(snapshot.api_port, model, snapshot.node.home)

    def _show_offer(self, offer: OfferStatus) -> None:
        measured = offer.measured_bytes
        if measured <= 0:
            self.slider.setEnabled(False)
            self.advertised.setText(gigabytes(offer.capacity_bytes))
            return
        if not (self.slider.isSliderDown() or self.debounce.isActive()):
            self.slider.blockSignals(True)
            self.slider.setMaximum(measured * STEPS_PER_GB // GIB)
            self.slider.setValue(cap_to_position(offer.cap_bytes, measured))
            self.slider.blockSignals(False)
            self._show_cap_label()
        self.slider.setEnabled(True)
        note = "" if offer.donating else " (donating is off in the tray menu)"
        self.advertised.setText(f"{gigabytes(offer.capacity_bytes)} of "
                                f"{gigabytes(measured)} measured{note}")

    def _show_node(self, snapshot: StatusSnapshot) -> None:
        node, mesh, secrets = snapshot.node, snapshot.mesh, snapshot.secrets
        self.name.setText(text_or_dash(node.name))
        if not self.name_edit.hasFocus():
            self.name_edit.setText(node.name)
        self.node_id.setText(text_or_dash(node.id))
        self.home.setText(text_or_dash(node.home))
        self.api_port.setText(text_or_dash(snapshot.api_port))
        self.mesh_port.setText(text_or_dash(None if mesh is None else mesh.port))
        if secrets is None:
            self.secrets.setText(DASH)
        else:
            self.secrets.setText(secrets.backend + (f"\n{secrets.warning}" if secrets.warning else ""))

    def _show_agents(self, port, model, home: str | None = None) -> None:
        runtime = this_runtime()
        launcher = own_launcher(runtime.executable, not runs_modules(runtime), shutil.which)
        commands = agent_commands(port, model, home or None, launcher=launcher)
        self.agents_note.setVisible(not commands)
        for command in commands:
            box = self.agent_boxes.get(command.agent)
            if box is None:
                box = self.agent_boxes[command.agent] = AgentBox(command.agent)
                self.agents_layout.addWidget(box)
            box.show_command(command)

    def _request_rename(self) -> None:
        name = self.name_edit.text().strip()
        if name and name != self.name.text():
            self.rename_requested.emit(name)

    def show_start_at_login(self, enabled: bool, note: str = "") -> None:
        self.start_at_login.blockSignals(True)
        self.start_at_login.setChecked(enabled)
        self.start_at_login.blockSignals(False)
        self.login_note.setText(note)
        self.login_note.setVisible(bool(note))
