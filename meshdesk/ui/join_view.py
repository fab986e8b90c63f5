"""The Join tab: paste a token or link, or scan a QR code from a file, the clipboard, the
screen or a camera. Decoding happens off the GUI thread: images in the controller, camera
frames in `ui.camera`'s worker (with the decoder the controller lends, `use_frame_decoder`).

Nothing here joins by itself: an invite, however it came (a link opened from a browser
included), is first shown as an offer (`ui.join_offer`): the mesh, the inviter, the
addresses, the expiry and what joining leaves. Only the confirm button asks for the join, and
when the join leaves a mesh with other members it stays disabled until the user ticks that
they mean to leave it."""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import Signal
from PySide6.QtGui import QGuiApplication, QImage
from PySide6.QtWidgets import (QCheckBox, QFileDialog, QGroupBox, QHBoxLayout, QLineEdit, QPushButton,
                               QVBoxLayout, QWidget)

from meshdesk.core.invite import TokenError, decode_token
from meshdesk.core.status import StatusSnapshot
from meshdesk.ui.camera_panel import CameraPanel
from meshdesk.ui.join_offer import JoinOffer
from meshdesk.ui.widgets import selectable_label

IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.bmp *.gif *.webp);;All files (*)"


class JoinView(QWidget):
    review_requested = Signal(str)                 # text to look at; the controller makes the offer
    join_confirmed = Signal(str, bool)             # the offer's text, consent to leave the current mesh
    scan_file_requested = Signal(str)              # path; the controller reads it off-thread
    scan_image_requested = Signal(QImage, str)     # image, where it came from

    def __init__(self, parent=None):
        super().__init__(parent)
        self.token = QLineEdit()
        self.token.setPlaceholderText("Paste an invite token or meshdesk://join/… link")
        self.token.returnPressed.connect(self._review)
        self.join_button = QPushButton("Join…")
        self.join_button.clicked.connect(self._review)
        self.result = selectable_label()
        self.camera = CameraPanel()
        self.camera.is_invite = is_invite
        self.camera.found.connect(self._found_by_camera)
        self.camera.message.connect(self.show_result)
        self.offer: JoinOffer | None = None
        layout = QVBoxLayout(self)
        layout.addWidget(selectable_label(
            "Ask someone in the mesh for an invite (their Invite tab), then paste it here or "
            "scan its QR code."))
        row = QHBoxLayout()
        row.addWidget(self.token, 1)
        row.addWidget(self.join_button)
        layout.addLayout(row)
        layout.addLayout(self._scan_buttons())
        layout.addWidget(self.camera)
        layout.addWidget(self._offer_box())
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
        self.camera_button.clicked.connect(self.scan_camera)  # says why, where it cannot
        row = QHBoxLayout()
        for button in (self.file_button, self.clipboard_button, self.screen_button, self.camera_button):
            row.addWidget(button)
        return row

    def _offer_box(self) -> QGroupBox:
        self.offer_box = QGroupBox()
        self.offer_details = selectable_label()
        self.offer_leaving = selectable_label()
        self.offer_leaving.setStyleSheet("font-weight: bold")
        self.offer_note = selectable_label()
        self.leave_check = QCheckBox()
        self.leave_check.toggled.connect(self._update_confirm)
        self.confirm_button = QPushButton()
        self.confirm_button.clicked.connect(self._confirm)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.confirm_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self.offer_box)
        for widget in (self.offer_details, self.offer_leaving, self.leave_check, self.offer_note):
            layout.addWidget(widget)
        layout.addLayout(buttons)
        self.offer_box.hide()
        return self.offer_box

    def _review(self) -> None:
        text = self.token.text().strip()
        if text:
            self.review_requested.emit(text)

    def show_offer(self, offer: JoinOffer) -> None:
        """Shows what joining means; nothing is joined until the confirm button is pressed."""
        self.offer = offer
        self.token.setText(offer.text)
        self.offer_box.setTitle(offer.title)
        self.offer_details.setText("\n".join(offer.details))
        self.offer_leaving.setText(offer.leaving or "")
        self.offer_leaving.setVisible(offer.leaving is not None)
        self.leave_check.setText(offer.leave_label or "")
        self.leave_check.setChecked(False)
        self.leave_check.setVisible(offer.needs_leave_confirmation)
        self.offer_note.setText(offer.problem or offer.note or "")
        self.offer_note.setVisible(bool(offer.problem or offer.note))
        self.confirm_button.setText(offer.confirm_label)
        self.offer_box.show()
        self._update_confirm()
        self.show_result("Check who invites you and where; then confirm, or cancel."
                         if offer.can_join else "This invite cannot be used.")

    def _update_confirm(self) -> None:
        offer = self.offer
        self.confirm_button.setEnabled(offer is not None and offer.can_join
                                       and (not offer.needs_leave_confirmation or self.leave_check.isChecked()))

    def _confirm(self) -> None:
        offer = self.offer
        if offer is None or not self.confirm_button.isEnabled():
            return
        self.join_confirmed.emit(offer.text, offer.needs_leave_confirmation and self.leave_check.isChecked())

    def cancel(self) -> None:
        self.offer = None
        self.offer_box.hide()
        self.token.clear()
        self.show_result("Not joined.")

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
            self.show_result("Pasted the clipboard's text; press Join… to see it.")
        else:
            self.show_result("The clipboard holds no image or text.")

    def scan_screen(self) -> None:
        screen = QGuiApplication.primaryScreen()
        if screen is None:
            self.show_result("No screen to grab.")
            return
        self.scan_image_requested.emit(screen.grabWindow(0).toImage(), "the screen")

    def use_frame_decoder(self, decode: Callable[[QImage], list[str]]) -> None:
        """The QR decoder for camera frames; it runs in a worker thread."""
        self.camera.decode = decode

    def scan_camera(self) -> None:
        """Opens the viewfinder; a found invite goes the way a scanned image's does."""
        self.camera.start()

    def _found_by_camera(self, text: str) -> None:
        self.show_scan_result([text], "the camera")

    def show_scanning(self, source: str) -> None:
        self.show_result(f"Looking for a QR code in {source}…")

    def show_scan_result(self, token_texts: list[str], source: str) -> None:
        if not token_texts:
            self.show_result(f"No MeshDesk invite QR code found in {source}.")
            return
        self.token.setText(canonical_link(token_texts[0]))
        self.show_result(f"Found an invite in {source}; press Join… to see it.")

    def show_joining(self) -> None:
        self.join_button.setEnabled(False)
        self.confirm_button.setEnabled(False)
        self.show_result("Joining…")

    def show_join_result(self, message: str, joined: bool = False) -> None:
        self.join_button.setEnabled(True)
        if joined:
            self.offer = None
            self.offer_box.hide()
        self._update_confirm()
        self.show_result(message)

    def show_result(self, message: str) -> None:
        self.result.setText(message)

    def show_status(self, snapshot: StatusSnapshot) -> None:
        """Nothing here depends on the snapshot; present so every tab is driven alike."""


def canonical_link(text: str) -> str:
    """The meshdesk://join/ link of an invite in any form (a QR code's says the same shorter);
    text that is no invite is left as it is, for the offer to say what is wrong with it."""
    try:
        return decode_token(text).link()
    except TokenError:
        return text


def is_invite(text: str) -> bool:
    try:
        decode_token(text)
    except TokenError:
        return False
    return True
