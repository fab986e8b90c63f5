"""The main window: for now, what this node is and which models it serves."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QListWidget, QMainWindow, QVBoxLayout, QWidget

STATE_MARKS = {"ready": "●", "loading": "◌", "failed": "✕"}


def model_line(model: dict) -> str:
    mark = STATE_MARKS.get(model["state"], "?")
    line = f"{mark}  {model['id']}  —  {model['state']}"
    if model.get("error") and model["state"] == "failed":
        line += f": {model['error']}"
    return line


class MainWindow(QMainWindow):
    """Shows a node status snapshot (the dict of `/api/status`); call `show_status` to redraw."""

    def __init__(self):
        super().__init__()
        self.setWindowTitle("MeshDesk")
        self.resize(640, 400)
        self.title = QLabel()
        self.title.setTextFormat(Qt.TextFormat.PlainText)
        self.api_address = QLabel()
        self.api_address.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.models = QListWidget()
        layout = QVBoxLayout()
        for widget in (self.title, self.api_address, QLabel("Models"), self.models):
            layout.addWidget(widget)
        body = QWidget()
        body.setLayout(layout)
        self.setCentralWidget(body)

    def show_status(self, status: dict) -> None:
        node = status["node"]
        self.title.setText(f"{node['name']}  ({node['id']})  ·  MeshDesk {node['version']}")
        port = status.get("api_port")
        self.api_address.setText(f"API: http://127.0.0.1:{port}/v1" if port else "API: starting…")
        self.models.clear()
        self.models.addItems([model_line(model) for model in status["models"]])
