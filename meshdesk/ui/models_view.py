"""The Models tab: the catalog and local models with downloads, serve and drop; then what this
node serves or routes, and what peers hold."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (QCheckBox, QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout,
                               QWidget)

from meshdesk.core.status import StatusSnapshot
from meshdesk.ui.model_table import (COMFORTABLE, FIT_NOTE, HEADERS, SNUG, TOO_BIG, DownloadProgress, ModelTableRow,
                                     model_table)
from meshdesk.ui.models_model import local_model_rows, peer_model_rows
from meshdesk.ui.widgets import fill_table, read_only_table, selectable_label

LOOKING = "Looking at the models folder…"
FIT_COLOURS = {COMFORTABLE: QColor("#1f7a3a"), SNUG: QColor("#8a5a00"), TOO_BIG: QColor("#b3261e")}
MESH_COLUMN = HEADERS.index("This mesh")


class ModelsView(QWidget):
    """Redraws from `show_status`, `show_catalog` and `show_downloads`; its signals carry intents
    for the selected row."""

    download_requested = Signal(str, bool)  # catalog name, and whether to fetch its draft too
    resume_requested = Signal(str)           # catalog name with a partial file
    cancel_requested = Signal(str)           # catalog name being downloaded
    serve_requested = Signal(str)            # the model file, or the built-in model's name
    drop_requested = Signal(str)             # model id
    shown = Signal()                         # a chance to look at the models folder again

    def __init__(self, parent=None):
        super().__init__(parent)
        self.listing: list[dict] | None = None
        self.snapshot: StatusSnapshot | None = None  # until the first show_status
        self.downloads: dict[str, DownloadProgress] = {}
        self.rows: list[ModelTableRow] = []
        self.progress_bars: dict[str, QProgressBar] = {}
        self.table = read_only_table(HEADERS)
        self.table.horizontalHeaderItem(MESH_COLUMN).setToolTip(FIT_NOTE)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.looking = selectable_label(LOOKING)
        self.with_draft = QCheckBox("with its draft model")
        self.message = selectable_label()
        self.local = read_only_table(["Model", "Where", "Size", "State", "Path / error"])
        self.peers = read_only_table(["Model", "On", "Size", "State", "Detail"])
        self.progress_box = QVBoxLayout()
        self._lay_out()
        self._redraw()

    def _lay_out(self) -> None:
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<b>Catalog and models on this computer</b>"))
        layout.addWidget(self.table, 3)
        layout.addWidget(self.looking)
        layout.addLayout(self._buttons())
        layout.addLayout(self.progress_box)
        layout.addWidget(self.message)
        for title, table in (("Served here or routed through this node", self.local),
                             ("On peers' disks", self.peers)):
            layout.addWidget(QLabel(f"<b>{title}</b>"))
            layout.addWidget(table, 1)

    def _buttons(self) -> QHBoxLayout:
        row = QHBoxLayout()
        row.addWidget(self.with_draft)
        row.addStretch(1)
        self.buttons: dict[str, QPushButton] = {}
        for text, action in (("Download", self._download), ("Resume", self._resume),
                             ("Cancel", self._cancel), ("Serve", self._serve), ("Drop", self._drop)):
            button = QPushButton(text)
            button.clicked.connect(action)
            self.buttons[text] = button
            row.addWidget(button)
        return row

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.shown.emit()

    # --- what the app and node tell the view ---------------------------------------------

    def show_status(self, snapshot: StatusSnapshot) -> None:
        self.snapshot = snapshot
        fill_table(self.local, [tuple(vars(row).values()) for row in local_model_rows(snapshot)])
        fill_table(self.peers, [tuple(vars(row).values()) for row in peer_model_rows(snapshot)])
        self._redraw()

    def show_catalog(self, listing: list[dict]) -> None:
        """The models folder as `app.model_listing.model_rows` lists it."""
        self.listing = listing
        self._redraw()

    def show_downloads(self, downloads: dict[str, DownloadProgress]) -> None:
        self.downloads = dict(downloads)
        self._redraw()
        self._show_progress_bars()

    def show_message(self, text: str) -> None:
        self.message.setText(text)

    # --- drawing -------------------------------------------------------------------------

    def _redraw(self) -> None:
        self.looking.setVisible(self.listing is None)
        self.rows = model_table(self.listing or [], self.snapshot, self.downloads)
        fill_table(self.table, [row.cells() for row in self.rows])
        for index, row in enumerate(self.rows):
            colour = FIT_COLOURS.get(row.fit_mesh)  # items are reused: a dash gets the default back
            self.table.item(index, MESH_COLUMN).setForeground(QBrush() if colour is None else colour)
        self._update_buttons()

    def _show_progress_bars(self) -> None:
        for name in set(self.progress_bars) - set(self.downloads):
            self.progress_bars.pop(name).deleteLater()
        for name, download in self.downloads.items():
            bar = self.progress_bars.get(name)
            if bar is None:
                bar = self.progress_bars[name] = QProgressBar()
                self.progress_box.addWidget(bar)
            bar.setValue(download.percent)
            bar.setFormat(f"{name}: %p%" + (" (stopping)" if download.state != "downloading" else ""))

    def selected(self) -> ModelTableRow | None:
        index = self.table.currentRow()
        return self.rows[index] if 0 <= index < len(self.rows) and self.table.selectedItems() else None

    def _update_buttons(self) -> None:
        row = self.selected()
        for text, allowed in (("Download", "can_download"), ("Resume", "can_resume"), ("Cancel", "can_cancel"),
                              ("Serve", "can_serve"), ("Drop", "can_drop")):
            self.buttons[text].setEnabled(row is not None and getattr(row, allowed))
        self.with_draft.setEnabled(row is not None and row.can_download and row.draft_name is not None)

    # --- intents -------------------------------------------------------------------------

    def _download(self) -> None:
        row = self.selected()
        if row is not None and row.can_download:
            self.download_requested.emit(row.name, self.with_draft.isEnabled() and self.with_draft.isChecked())

    def _resume(self) -> None:
        row = self.selected()
        if row is not None and row.can_resume:
            self.resume_requested.emit(row.name)

    def _cancel(self) -> None:
        row = self.selected()
        if row is not None and row.can_cancel:
            self.cancel_requested.emit(row.name)

    def _serve(self) -> None:
        row = self.selected()
        if row is not None and row.can_serve and row.serve_target:
            self.serve_requested.emit(row.serve_target)

    def _drop(self) -> None:
        row = self.selected()
        if row is not None and row.can_drop and row.model_id:
            self.drop_requested.emit(row.model_id)
