"""QR codes as Qt images, and Qt images as the pixels a decoder reads.

No Pillow: the QR matrix from `qrcode` is turned into pixels directly. Both functions only
touch QImage, which (unlike QPixmap) may be used off the GUI thread, so decoding a large
screen grab runs in a worker thread from start to finish.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import qrcode
from PySide6.QtGui import QImage

DARK, LIGHT = b"\x00", b"\xff"
# Qt's 32-bit formats hold each pixel as one 0xAARRGGBB integer, so the byte order follows the CPU.
FOUR_BYTE_ORDER = "BGRA" if sys.byteorder == "little" else "ARGB"


def qr_matrix(text: str) -> list[list[bool]]:
    """Module rows, quiet zone included; medium error correction survives a phone camera.

    `qrcode` splits the text into runs of digits, of upper-case letters and of other bytes and
    gives each the QR mode that packs it best, which the invite's QR form (core.invite) is for."""
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=4)
    code.add_data(text)
    code.make(fit=True)
    return code.get_matrix()


def qr_image(text: str, module_pixels: int = 4) -> QImage:
    matrix = qr_matrix(text)
    side = len(matrix) * module_pixels
    rows = []
    for modules in matrix:
        row = b"".join((DARK if dark else LIGHT) * module_pixels for dark in modules)
        rows.append(row * module_pixels)
    pixels = b"".join(rows)
    # QImage does not own `pixels`; copy() gives it its own buffer before `pixels` goes away.
    return QImage(pixels, side, side, side, QImage.Format.Format_Grayscale8).copy()


@dataclass(frozen=True)
class ScanPixels:
    """An image's pixels, unconverted where possible: converting a 4K screen grab holds the
    GIL for ~50 ms, while zxing-cpp converts it in C++ with the GIL released."""

    pixels: memoryview   # rows of `row_stride` bytes; valid while `image` lives
    width: int
    height: int
    row_stride: int
    pixel_format: str    # "Lum", "BGRA" or "ARGB"
    image: QImage


DIRECT_FORMATS = {
    QImage.Format.Format_Grayscale8: "Lum",
    QImage.Format.Format_RGB32: FOUR_BYTE_ORDER,
    QImage.Format.Format_ARGB32: FOUR_BYTE_ORDER,
    QImage.Format.Format_ARGB32_Premultiplied: FOUR_BYTE_ORDER,
}


def scan_pixels(image: QImage) -> ScanPixels:
    if image.isNull():  # a video's empty last frame, say: no pixels, nothing to find
        return ScanPixels(memoryview(b""), 0, 0, 0, "Lum", image)
    if image.format() not in DIRECT_FORMATS:
        image = image.convertToFormat(QImage.Format.Format_RGB32)
    rows = memoryview(image.constBits()).cast("B", (image.height(), image.bytesPerLine()))
    return ScanPixels(rows, image.width(), image.height(), image.bytesPerLine(),
                      DIRECT_FORMATS[image.format()], image)
