"""The MeshDesk icon, drawn in code in the colour of the node's state (no image files needed)."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPen, QPixmap

from meshdesk.ui.mesh_model import TrayState

STATE_COLOURS = {TrayState.READY: "#2e9d5a", TrayState.LOADING: "#d99a1e", TrayState.FAILED: "#c94040",
                 TrayState.NO_MESH: "#8a8f98"}
# Three nodes of a mesh, as fractions of the icon's side.
NODES = (QPointF(0.30, 0.32), QPointF(0.72, 0.40), QPointF(0.45, 0.74))


def state_pixmap(state: TrayState, side: int = 64) -> QPixmap:
    colour = QColor(STATE_COLOURS[state])
    pixmap = QPixmap(side, side)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(colour)
    painter.drawRoundedRect(QRectF(2, 2, side - 4, side - 4), side * 0.22, side * 0.22)
    points = [QPointF(p.x() * side, p.y() * side) for p in NODES]
    painter.setPen(QPen(QColor("white"), side * 0.06))
    for index, point in enumerate(points):
        painter.drawLine(point, points[(index + 1) % len(points)])
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(QColor("white"))
    for point in points:
        painter.drawEllipse(point, side * 0.1, side * 0.1)
    painter.end()
    return pixmap


def state_icon(state: TrayState) -> QIcon:
    icon = QIcon()
    for side in (16, 32, 64):
        icon.addPixmap(state_pixmap(state, side))
    return icon
