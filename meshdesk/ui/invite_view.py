"""The Invite tab: the current invite as token, link and QR code, with expiry and revoke."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QGuiApplication, QPixmap
from PySide6.QtWidgets import (QComboBox, QFormLayout, QHBoxLayout, QLabel, QPushButton,
                               QVBoxLayout, QWidget)

from meshdesk.core.invite import decode_token
from meshdesk.core.status import StatusSnapshot
from meshdesk.ui.qr_images import qr_image
from meshdesk.ui.text import expiry
from meshdesk.ui.widgets import CopyField, selectable_label

EXPIRY_CHOICES = (("1 hour", 3600), ("1 day", 86400), ("7 days", 7 * 86400), ("never", 0))
DEFAULT_EXPIRY = 2  # 7 days, as the startup invite printed in the terminal


class InviteView(QWidget):
    mint_requested = Signal(int)     # expires in seconds, 0 = never
    revoke_requested = Signal(str)   # token text

    def __init__(self, clock=time.time, parent=None):
        super().__init__(parent)
        self.clock = clock
        self.invite: dict | None = None
        self.qr_picture = None
        self.in_mesh = False
        self.qr = QLabel()
        self.qr.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.qr.setMinimumSize(240, 240)
        self.token, self.link = CopyField(), CopyField()
        self.copy_qr_button = QPushButton("Copy QR image")
        self.copy_qr_button.clicked.connect(self.copy_qr)
        self.expires = selectable_label()
        self.message = selectable_label()
        layout = QVBoxLayout(self)
        layout.addWidget(self.qr)
        layout.addLayout(self._fields())
        layout.addLayout(self._actions())
        layout.addWidget(self.message)
        layout.addStretch(1)
        self.show_invite(None)

    def _fields(self) -> QFormLayout:
        form = QFormLayout()
        form.addRow("Token", self.token)
        form.addRow("Link", self.link)
        form.addRow("Valid", self.expires)
        return form

    def _actions(self) -> QHBoxLayout:
        self.expiry_choice = QComboBox()
        for label, seconds in EXPIRY_CHOICES:
            self.expiry_choice.addItem(label, seconds)
        self.expiry_choice.setCurrentIndex(DEFAULT_EXPIRY)
        self.mint_button = QPushButton("New invite")
        self.mint_button.clicked.connect(
            lambda: self.mint_requested.emit(int(self.expiry_choice.currentData())))
        self.revoke_button = QPushButton("Revoke")
        self.revoke_button.clicked.connect(self._revoke)
        row = QHBoxLayout()
        for widget in (QLabel("Expires after"), self.expiry_choice, self.mint_button):
            row.addWidget(widget)
        row.addStretch(1)
        row.addWidget(self.copy_qr_button)
        row.addWidget(self.revoke_button)
        return row

    def _revoke(self) -> None:
        if self.invite:
            self.revoke_requested.emit(self.invite["token"])

    def show_status(self, snapshot: StatusSnapshot) -> None:
        self.in_mesh = snapshot.in_mesh
        self.mint_button.setEnabled(self.in_mesh)
        if not self.in_mesh and self.invite is None:
            self.message.setText("Not in a mesh yet: invites appear once the mesh is up.")
        self._show_expiry()

    def show_invite(self, invite: dict | None) -> None:
        """`invite` as `Node.mint_invite` returns it: token, link, expires_at, token_id."""
        self.invite = invite
        self.token.set_text(invite["token"] if invite else "")
        self.link.set_text(invite["link"] if invite else "")
        # Drawing a QR code is pure Python (~15 ms): once per invite, not per redraw or copy.
        # The code carries the token's QR form: two versions smaller than the link (core.invite).
        self.qr_picture = qr_image(decode_token(invite["link"]).qr_text()) if invite else None
        self.qr.setPixmap(QPixmap.fromImage(self.qr_picture) if invite else QPixmap())
        if not invite:
            self.qr.setText("No invite yet")
        self.revoke_button.setEnabled(invite is not None)
        self.copy_qr_button.setEnabled(invite is not None)
        self.message.clear()
        self._show_expiry()

    def show_revoked(self) -> None:
        self.show_invite(None)
        self.message.setText("Invite revoked: nobody can join with it any more. "
                             "Nodes that already joined stay members.")

    def show_message(self, text: str) -> None:
        self.message.setText(text)

    def _show_expiry(self) -> None:
        self.expires.setText(expiry(self.invite["expires_at"], self.clock()) if self.invite else "—")

    def copy_qr(self) -> None:
        if self.qr_picture is not None:
            larger = self.qr_picture.scaled(self.qr_picture.size() * 2)  # crisp: nearest pixel
            QGuiApplication.clipboard().setImage(larger)
