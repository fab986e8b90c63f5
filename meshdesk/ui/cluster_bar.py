"""The cluster bar: one segment per node, as wide as its capacity; the host stands out."""

from __future__ import annotations

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QFontMetrics, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from meshdesk.ui.mesh_model import ClusterSegment, proportions

HOST_FILL, MEMBER_FILL, IDLE_FILL = QColor("#2f62c9"), QColor("#b9cbef"), QColor("#e3e6eb")
HOST_TEXT, MEMBER_TEXT = QColor("white"), QColor("#1d2330")
SELF_OUTLINE = QColor("#1d2330")
GAP = 4


class ClusterBar(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.segments: list[ClusterSegment] = []
        self.setMinimumHeight(72)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def show_segments(self, segments: list[ClusterSegment]) -> None:
        if segments == self.segments:
            return
        self.segments = segments
        self.setToolTip("\n".join(" · ".join(s.label_lines()) for s in segments))
        self.update()

    def segment_rects(self) -> list[QRectF]:
        usable = max(0.0, self.width() - GAP * max(0, len(self.segments) - 1))
        rects, left = [], 0.0
        for fraction in proportions([s.capacity_bytes for s in self.segments]):
            rects.append(QRectF(left, 0, usable * fraction, self.height() - 1))
            left += usable * fraction + GAP
        return rects

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        for segment, rect in zip(self.segments, self.segment_rects()):
            self._paint_segment(painter, segment, rect)
        painter.end()

    def _paint_segment(self, painter: QPainter, segment: ClusterSegment, rect: QRectF) -> None:
        fill = HOST_FILL if segment.is_host else (MEMBER_FILL if segment.capacity_bytes else IDLE_FILL)
        painter.setBrush(fill)
        painter.setPen(QPen(SELF_OUTLINE, 2) if segment.is_self else Qt.PenStyle.NoPen)
        painter.drawRoundedRect(rect.adjusted(1, 1, -1, -1), 6, 6)
        painter.setPen(HOST_TEXT if segment.is_host else MEMBER_TEXT)
        metrics = QFontMetrics(painter.font())
        inner = rect.adjusted(8, 6, -8, -6)
        for index, line in enumerate(segment.label_lines()):
            text = metrics.elidedText(line, Qt.TextElideMode.ElideRight, int(inner.width()))
            painter.drawText(QRectF(inner.left(), inner.top() + index * metrics.height(),
                                    inner.width(), metrics.height()), Qt.AlignmentFlag.AlignLeft, text)
