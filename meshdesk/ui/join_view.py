"""The Join tab: paste a token or link, or scan a QR code from a file, the clipboard, the
screen or a camera. Decoding happens off the GUI thread, in the controller."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtGui import QGuiApplication, QImage
from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QLineEdit, QPushButton, QVBoxLayout, QWidget

from meshdesk.core.status import StatusSnapshot
from meshdesk.ui.camera import UNAVAILABLE_REASON, StillCamera, camera_supported
from meshdesk.ui.widgets import selectable_label

IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.bmp *.gif *.webp);;All files (*)"


class JoinView(QWidget):
    join_requested = Signal(str)
    scan_file_requested = Signal(str)              # path; the controller reads it off-thread
    scan_image_requested = Signal(QImage, str)     # image, where it came from

    def __init__(self, parent=None):
        super().__init__(parent)
        self.token = QLineEdit()
        self.token.setPlaceholderText("Paste an invite token or meshdesk://join/… link")
        self.token.returnPressed.connect(self._join)
        self.join_button = QPushButton("Join")
        self.join_button.clicked.connect(self._join)
        self.result = selectable_label()
        self.camera: StillCamera | None = None
        layout = QVBoxLayout(self)
        layout.addWidget(selectable_label(
            "Ask someone in the mesh for an invite (their Invite tab), then paste it here or "
            "scan its QR code."))
        row = QHBoxLayout()
        row.addWidget(self.token, 1)
        row.addWidget(self.join_button)
        layout.addLayout(row)
        layout.addLayout(self._scan_buttons())
        layout.addWidget(self.result)
        layout.addStretch(1)

    def _scan_buttons(self) -> QHBoxLayout:
        self.file_button = QPushButton("Scan image file…")
        self.file_button.clicked.connect(self.choose_file)
        self.clipboard_button = QPushButton("Scan clipboard")
        self.clipboard_button.clicked.connect(self.scan_clipboard)
        self.screen_button = QPushButton("Scan screen")
        self.screen_button.clicked.connect(self.scan_screen)
        self.camera_button = QPushButton("Scan with camera")
        self.camera_button.clicked.connect(self.scan_camera)
        self.camera_button.setEnabled(camera_supported())
        if not camera_supported():
            self.camera_button.setToolTip(UNAVAILABLE_REASON)
        row = QHBoxLayout()
        for button in (self.file_button, self.clipboard_button, self.screen_button, self.camera_button):
            row.addWidget(button)
        return row

    def _join(self) -> None:
        text = self.token.text().strip()
        if text:
            self.join_requested.emit(text)

    def choose_file(self) -> None:
        dialog = QFileDialog(self, "Choose an image with an invite QR code", "", IMAGE_FILTER)
        dialog.setFileMode(QFileDialog.FileMode.ExistingFile)
        dialog.fileSelected.connect(self.scan_file_requested)
        dialog.open()  # not exec(): a nested loop would hold up the node's asyncio tasks

    def scan_clipboard(self) -> None:
        clipboard = QGuiApplication.clipboard()
        image = clipboard.image()
        if not image.isNull():
            self.scan_image_requested.emit(image, "the clipboard")
        elif clipboard.text().strip():
            self.token.setText(clipboard.text().strip())
            self.show_result("Pasted the clipboard's text; press Join.")
        else:
            self.show_result("The clipboard holds no image or text.")

    def scan_screen(self) -> None:
        screen = QGuiApplication.primaryScreen()
        if screen is None:
            self.show_result("No screen to grab.")
            return
        self.scan_image_requested.emit(screen.grabWindow(0).toImage(), "the screen")

    def scan_camera(self) -> None:
        self.camera = StillCamera(self)
        self.camera.captured.connect(lambda image: self.scan_image_requested.emit(image, "the camera"))
        self.camera.failed.connect(self.show_result)
        self.camera.start()
        self.show_result("Hold the QR code up to the camera…")

    def show_scanning(self, source: str) -> None:
        self.show_result(f"Looking for a QR code in {source}…")

    def show_scan_result(self, token_texts: list[str], source: str) -> None:
        if not token_texts:
            self.show_result(f"No MeshDesk invite QR code found in {source}.")
            return
        self.token.setText(token_texts[0])
        self.show_result(f"Found an invite in {source}; press Join.")

    def show_joining(self) -> None:
        self.join_button.setEnabled(False)
        self.show_result("Joining…")

    def show_join_result(self, message: str) -> None:
        self.join_button.setEnabled(True)
        self.show_result(message)

    def show_result(self, message: str) -> None:
        self.result.setText(message)

    def show_status(self, snapshot: StatusSnapshot) -> None:
        """Nothing here depends on the snapshot; present so every tab is driven alike."""
