"""Reads QR codes from raw pixels with zxing-cpp, which releases the GIL while it works.
Blocking: call it in a worker thread."""

from __future__ import annotations

PIXEL_SIZES = {"Lum": 1, "BGRA": 4, "ARGB": 4}


def decode_qr_texts(pixels, width: int, height: int, row_stride: int, pixel_format: str = "Lum") -> list[str]:
    """The text of every QR code in an image given as rows of `row_stride` bytes.

    `pixels` is any buffer (bytes, memoryview) of at least `height * row_stride` bytes;
    `pixel_format` is "Lum" (8-bit grey), "BGRA" or "ARGB" (8 bits a channel).
    """
    import zxingcpp

    pixel_size = PIXEL_SIZES[pixel_format]
    if width <= 0 or height <= 0 or row_stride < width * pixel_size:
        return []
    rows = memoryview(pixels).cast("B")
    if rows.nbytes < height * row_stride:
        return []
    rows = rows[: height * row_stride].cast("B", (height, row_stride))
    view = zxingcpp.ImageView(rows, width, height, getattr(zxingcpp.ImageFormat, pixel_format),
                              row_stride, pixel_size)
    found = zxingcpp.read_barcodes(view, formats=zxingcpp.BarcodeFormat.QRCode)
    return [barcode.text for barcode in found if barcode.valid and barcode.text]
