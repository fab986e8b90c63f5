"""The Models tab: models on this node and on peers, and the catalog once nodes publish one."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from meshdesk.ui.models_model import CatalogRow, catalog_rows, local_model_rows, peer_model_rows
from meshdesk.ui.widgets import fill_table, read_only_table, selectable_label

NO_CATALOG = ("The model catalog (sizes, quantizations, fit labels, draft pairings, downloads) "
              "appears here once this node publishes one.")


class ModelsView(QWidget):
    # Catalog intents, by model name. The controller connects them to the node's model
    # commands where it has them; until then the buttons stay disabled.
    download_requested = Signal(str)
    serve_requested = Signal(str)
    drop_requested = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.local = read_only_table(["Model", "Where", "Size", "State", "Path / error"])
        self.peers = read_only_table(["Model", "On", "Size", "State", "Detail"])
        self.catalog = read_only_table(["Model", "Size", "Quant", "Fit", "Draft", "Here"])
        self.no_catalog = selectable_label(NO_CATALOG)
        self.catalog_buttons = self._catalog_buttons()
        self.actions_available = False
        layout = QVBoxLayout(self)
        sections = (("Served here or routed through this node", self.local),
                    ("On peers' disks", self.peers), ("Catalog", self.catalog))
        for title, widget in sections:
            layout.addWidget(QLabel(f"<b>{title}</b>"))
            layout.addWidget(widget)
        layout.addWidget(self.no_catalog)
        layout.addLayout(self.catalog_buttons)
        self.show_catalog(None)

    def _catalog_buttons(self) -> QHBoxLayout:
        row = QHBoxLayout()
        row.addStretch(1)
        self.buttons = {}
        for text, signal in (("Download", self.download_requested), ("Serve", self.serve_requested),
                             ("Drop", self.drop_requested)):
            button = QPushButton(text)
            button.clicked.connect(lambda _=False, s=signal: self._emit_for_selection(s))
            self.buttons[text] = button
            row.addWidget(button)
        return row

    def _emit_for_selection(self, signal) -> None:
        row = self.catalog.currentRow()
        if row >= 0:
            signal.emit(self.catalog.item(row, 0).text())

    def set_actions_available(self, available: bool) -> None:
        self.actions_available = available
        for button in self.buttons.values():
            button.setEnabled(available and not self.catalog.isHidden())

    def show_status(self, snapshot: dict) -> None:
        fill_table(self.local, [tuple(vars(row).values()) for row in local_model_rows(snapshot)])
        fill_table(self.peers, [tuple(vars(row).values()) for row in peer_model_rows(snapshot)])
        self.show_catalog(catalog_rows(snapshot))

    def show_catalog(self, rows: list[CatalogRow] | None) -> None:
        self.catalog.setVisible(rows is not None)
        self.no_catalog.setVisible(rows is None)
        if rows is not None:
            fill_table(self.catalog, [(r.name, r.size, r.quant, r.fit, r.draft,
                                       "yes" if r.downloaded else "") for r in rows])
        for button in self.buttons.values():
            button.setEnabled(self.actions_available and rows is not None)
