"""Writes the installer icons into resources/ from the app's own icon drawing.

    .venv/bin/python installers/icons.py          # (re)write them
    .venv/bin/python installers/icons.py --check  # exit 1 if any is missing or stale

resources/meshdesk.png (256 px) is drawn by `meshdesk.ui.icons.state_pixmap("ready", 256)`
(tests/test_ui_screenshots.py keeps it so). The other sizes are drawn by the same function at
their own size, so the large ones are sharp rather than scaled up, and the script first checks
that its 256 px drawing is meshdesk.png (pixel for pixel, within a small tolerance). What Briefcase and the .deb look for:

- Linux (briefcase `linux system` / AppImage / Flatpak, and the .deb): meshdesk-SIZE.png,
  SIZE in 16 32 48 64 128 256 512 (hicolor sizes)
- macOS: meshdesk.icns (PNG entries 16 to 1024 px, retina variants included)
- Windows: meshdesk.ico (PNG entries 16 to 256 px)

.icns and .ico are simple containers of PNG images, written here with the standard library.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESOURCES = ROOT / "resources"
SOURCE = RESOURCES / "meshdesk.png"
PNG_SIZES = (16, 32, 48, 64, 128, 256, 512, 1024)
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)
# OSType of each PNG entry in an .icns file, and its pixel size.
ICNS_TYPES = (("icp4", 16), ("icp5", 32), ("icp6", 64), ("ic07", 128), ("ic08", 256),
              ("ic09", 512), ("ic10", 1024), ("ic11", 32), ("ic12", 64), ("ic13", 256),
              ("ic14", 512))


def ico_bytes(pngs: dict[int, bytes]) -> bytes:
    """An ICO file whose images are PNGs (Windows Vista and later)."""
    header = struct.pack("<HHH", 0, 1, len(pngs))
    offset = len(header) + 16 * len(pngs)
    entries, blobs = b"", b""
    for side, data in sorted(pngs.items()):
        byte_side = 0 if side >= 256 else side  # 0 means 256 in an ICO directory entry
        entries += struct.pack("<BBBBHHII", byte_side, byte_side, 0, 0, 1, 32, len(data), offset)
        blobs += data
        offset += len(data)
    return header + entries + blobs


def icns_bytes(pngs: dict[int, bytes]) -> bytes:
    """An Apple icon image (.icns) made of PNG entries (macOS 10.7 and later)."""
    body = b"".join(kind.encode("ascii") + struct.pack(">I", 8 + len(pngs[side])) + pngs[side]
                    for kind, side in ICNS_TYPES)
    return b"icns" + struct.pack(">I", 8 + len(body)) + body


def render_pngs(sides) -> dict[int, bytes]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sys.path.insert(0, str(ROOT))
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice
    from PySide6.QtGui import QGuiApplication, QImage

    from meshdesk.ui.icons import state_pixmap

    application = QGuiApplication.instance() or QGuiApplication([])  # noqa: F841 (kept alive)
    reference = QImage(str(SOURCE))
    drawn = QByteArray()
    buffer = QBuffer(drawn)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    state_pixmap("ready", 256).save(buffer, "PNG")
    buffer.close()
    if reference.isNull() or not same_pictures([SOURCE.read_bytes()], [bytes(drawn)]):
        raise SystemExit(f"{SOURCE} is not what meshdesk.ui.icons draws at 256 px: "
                         "regenerate it (tests/test_ui_screenshots.py) before the installer icons")
    pngs = {}
    for side in sorted(set(sides)):
        data = QByteArray()
        buffer = QBuffer(data)
        buffer.open(QIODevice.OpenModeFlag.WriteOnly)
        state_pixmap("ready", side).save(buffer, "PNG")
        buffer.close()
        pngs[side] = bytes(data)
    return pngs


def wanted_files() -> dict[Path, bytes]:
    pngs = render_pngs(PNG_SIZES + ICO_SIZES)
    files = {RESOURCES / f"meshdesk-{side}.png": pngs[side] for side in PNG_SIZES}
    files[RESOURCES / "meshdesk.ico"] = ico_bytes({side: pngs[side] for side in ICO_SIZES})
    files[RESOURCES / "meshdesk.icns"] = icns_bytes(pngs)
    return files


def ico_entries(data: bytes) -> list[bytes]:
    _reserved, _kind, count = struct.unpack_from("<HHH", data)
    entries = []
    for index in range(count):
        *_, size, offset = struct.unpack_from("<BBBBHHII", data, 6 + 16 * index)
        entries.append(data[offset:offset + size])
    return entries


def icns_entries(data: bytes) -> list[bytes]:
    entries, offset = [], 8
    while offset < len(data):
        length = struct.unpack_from(">I", data, offset + 4)[0]
        entries.append(data[offset + 8:offset + length])
        offset += length
    return entries


def same_pictures(stored: list[bytes], wanted: list[bytes], tolerance: int = 8) -> bool:
    """Pixel for pixel within `tolerance` per channel: PNG encoders and Qt's anti-aliasing
    may differ a little between Qt versions, and that does not make an icon stale."""
    from PySide6.QtGui import QImage

    if len(stored) != len(wanted):
        return False
    for mine, theirs in zip(stored, wanted):
        a = QImage.fromData(mine).convertToFormat(QImage.Format.Format_RGBA8888)
        b = QImage.fromData(theirs).convertToFormat(QImage.Format.Format_RGBA8888)
        if a.isNull() or a.size() != b.size():
            return False
        pixels_a, pixels_b = bytes(a.constBits()), bytes(b.constBits())
        if any(abs(x - y) > tolerance for x, y in zip(pixels_a, pixels_b)):
            return False
    return True


def is_current(path: Path, data: bytes) -> bool:
    if not path.exists():
        return False
    stored = path.read_bytes()
    if stored == data:
        return True
    if path.suffix == ".ico":
        return stored[:4] == b"\0\0\1\0" and same_pictures(ico_entries(stored), ico_entries(data))
    if path.suffix == ".icns":
        return stored[:4] == b"icns" and same_pictures(icns_entries(stored), icns_entries(data))
    return same_pictures([stored], [data])


def main(argv: list[str]) -> int:
    files = wanted_files()
    if "--check" in argv:
        stale = [path for path, data in files.items() if not is_current(path, data)]
        for path in stale:
            print(f"missing or stale: {path.relative_to(ROOT)}", file=sys.stderr)
        return 1 if stale else 0
    for path, data in files.items():
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
            print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
