"""The cluster bar: one segment per machine, as wide as its capacity; the host stands out, a busy
machine glows green, and one receiving its layers shows how far it has come."""

from __future__ import annotations

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QFontMetrics, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from meshdesk.ui.mesh_segments import ClusterSegment, SegmentState, proportions

HOST_FILL, MEMBER_FILL, IDLE_FILL = QColor("#2f62c9"), QColor("#b9cbef"), QColor("#e3e6eb")
HOST_TEXT, MEMBER_TEXT = QColor("white"), QColor("#1d2330")
SELF_OUTLINE, ACTIVE_OUTLINE = QColor("#1d2330"), QColor("#1fa34a")
PROGRESS_TRACK, PROGRESS_FILL = QColor(255, 255, 255, 150), QColor("#1fa34a")
WAITING_STATES = (SegmentState.CONNECTING, SegmentState.NOT_ANSWERING, SegmentState.NO_MESH)
GAP = 4
LINES = 4
PROGRESS_HEIGHT = 6


class ClusterBar(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.segments: list[ClusterSegment] = []
        metrics = QFontMetrics(self.font())
        self.setMinimumHeight(LINES * metrics.height() + 12 + PROGRESS_HEIGHT + 6)
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
        painter.setBrush(fill_of(segment))
        painter.setPen(outline_of(segment))
        painter.drawRoundedRect(rect.adjusted(2, 2, -2, -2), 6, 6)
        painter.setPen(HOST_TEXT if segment.is_host else MEMBER_TEXT)
        metrics = QFontMetrics(painter.font())
        inner = rect.adjusted(8, 6, -8, -6)
        for index, line in enumerate(segment.label_lines()):
            text = metrics.elidedText(line, Qt.TextElideMode.ElideRight, int(inner.width()))
            painter.drawText(QRectF(inner.left(), inner.top() + index * metrics.height(),
                                    inner.width(), metrics.height()), Qt.AlignmentFlag.AlignLeft, text)
        if segment.progress is not None:
            self._paint_progress(painter, segment.progress, inner)

    def _paint_progress(self, painter: QPainter, percent: int, inner: QRectF) -> None:
        track = QRectF(inner.left(), inner.bottom() - PROGRESS_HEIGHT, inner.width(), PROGRESS_HEIGHT)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(PROGRESS_TRACK)
        painter.drawRoundedRect(track, 3, 3)
        painter.setBrush(PROGRESS_FILL)
        painter.drawRoundedRect(QRectF(track.left(), track.top(), track.width() * percent / 100, track.height()), 3, 3)


def fill_of(segment: ClusterSegment) -> QColor:
    if segment.is_host:
        return HOST_FILL
    if segment.capacity_bytes and segment.state not in WAITING_STATES:
        return MEMBER_FILL
    return IDLE_FILL


def outline_of(segment: ClusterSegment) -> QPen | Qt.PenStyle:
    if segment.active:
        return QPen(ACTIVE_OUTLINE, 4)
    return QPen(SELF_OUTLINE, 2) if segment.is_self else Qt.PenStyle.NoPen
