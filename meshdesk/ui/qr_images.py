"""QR codes as Qt images, and Qt images as the grayscale pixels a decoder reads.

No Pillow: the QR matrix from `qrcode` is turned into pixels directly. Both functions only
touch QImage, which (unlike QPixmap) may be used off the GUI thread, so decoding a large
screen grab can run in a worker thread from start to finish.
"""

from __future__ import annotations

import qrcode
from PySide6.QtGui import QImage

DARK, LIGHT = b"\x00", b"\xff"


def qr_matrix(text: str) -> list[list[bool]]:
    """Module rows, quiet zone included; medium error correction survives a phone camera."""
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


def grayscale_pixels(image: QImage) -> tuple[bytes, int, int]:
    """Tightly packed 8-bit rows (Qt pads each row to 4 bytes), with width and height."""
    gray = image.convertToFormat(QImage.Format.Format_Grayscale8)
    width, height, stride = gray.width(), gray.height(), gray.bytesPerLine()
    bits = bytes(gray.constBits())
    if stride == width:
        return bits[: width * height], width, height
    return b"".join(bits[y * stride: y * stride + width] for y in range(height)), width, height
