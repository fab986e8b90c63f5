"""Reads QR codes from grayscale pixels with zxing-cpp. Blocking: call it in a worker thread."""

from __future__ import annotations


def decode_qr_texts(pixels: bytes, width: int, height: int) -> list[str]:
    """The text of every QR code found in a tightly packed 8-bit grayscale image."""
    import zxingcpp

    if width <= 0 or height <= 0 or len(pixels) < width * height:
        return []
    view = memoryview(pixels)[: width * height].cast("B", (height, width))
    found = zxingcpp.read_barcodes(view, formats=zxingcpp.BarcodeFormat.QRCode)
    return [barcode.text for barcode in found if barcode.valid and barcode.text]
