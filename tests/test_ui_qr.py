"""Invite QR codes made with `qrcode` decode back to the same token with zxing-cpp."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QImage

from meshdesk.adapters.qr_decoder import decode_qr_texts
from meshdesk.app.desktop import decode_file, decode_image
from meshdesk.core.invite import decode_token
from meshdesk.ui.invite_view import InviteView
from meshdesk.ui.qr_images import qr_image, scan_pixels
from tests.test_ui_controller import LINK

TOKEN = LINK.removeprefix("meshdesk://join/")
INVITE = {"token": TOKEN, "link": LINK, "expires_at": 0, "token_id": "x"}


def test_a_generated_qr_decodes_to_the_same_invite(qapp):
    [text] = decode_image(qr_image(LINK))
    assert text == LINK and decode_token(text).encode() == TOKEN


def test_the_qr_on_the_invite_tab_decodes_from_a_grab_of_the_widget(qtbot):
    view = InviteView()
    qtbot.addWidget(view)
    view.show_invite(INVITE)
    grab = view.grab().toImage()  # what a screen grab of the window would see
    [text] = decode_image(grab)
    assert text == decode_token(LINK).qr_text()  # the shorter QR form of the same token
    assert decode_token(text) == decode_token(LINK) == decode_token(view.token.text())


def test_the_invite_screenshot_in_the_readme_shows_a_qr_code_of_its_token(qapp):
    """docs/screenshots/invite.png (tests/test_ui_screenshots.py draws it): what a reader of the
    README would check, that its QR code is the invite on the same screen."""
    screenshot = QImage(str(Path(__file__).resolve().parent.parent / "docs" / "screenshots" / "invite.png"))
    assert not screenshot.isNull()
    [text] = decode_image(screenshot)
    assert text.startswith("MESHDESK://JOIN/") and decode_token(text) == decode_token(LINK)


def test_a_qr_decodes_from_an_image_file(qapp, tmp_path):
    path = tmp_path / "invite.png"
    assert qr_image(LINK, module_pixels=6).save(str(path))
    assert decode_file(str(path)) == [LINK]


def test_padded_rows_and_colour_formats_decode(qapp):
    """Qt pads rows to 4 bytes: a QR of odd width must still decode, in grey and in colour."""
    grey = qr_image(LINK, module_pixels=3)
    padded = grey.copy(0, 0, grey.width() - 1, grey.height())  # quiet zone keeps the code whole
    assert padded.bytesPerLine() != padded.width()
    assert decode_image(padded) == [LINK]
    for colour in (QImage.Format.Format_RGB32, QImage.Format.Format_ARGB32, QImage.Format.Format_RGB888):
        assert decode_image(padded.convertToFormat(colour)) == [LINK], colour


def test_scan_pixels_avoid_converting_screen_formats(qapp):
    screen = QImage(40, 20, QImage.Format.Format_ARGB32_Premultiplied)
    scan = scan_pixels(screen)
    assert scan.pixel_format in ("BGRA", "ARGB") and scan.image.format() == screen.format()
    assert scan.pixels.shape == (20, scan.row_stride)
    assert scan_pixels(QImage(8, 8, QImage.Format.Format_Mono)).pixel_format in ("BGRA", "ARGB")


def test_nothing_found_is_an_empty_list(qapp):
    blank = QImage(64, 64, QImage.Format.Format_Grayscale8)
    blank.fill(255)
    assert decode_image(blank) == [] and decode_qr_texts(b"", 0, 0, 0) == []
    assert decode_qr_texts(b"short", 8, 8, 8) == []


def test_copy_qr_image_puts_a_decodable_code_on_the_clipboard(qtbot):
    from PySide6.QtGui import QGuiApplication

    view = InviteView()
    qtbot.addWidget(view)
    view.show_invite(INVITE)
    view.copy_qr_button.click()
    copied = QGuiApplication.clipboard().image()
    assert copied.width() == 2 * view.qr_picture.width()
    [text] = decode_image(copied)
    assert decode_token(text) == decode_token(LINK)


def test_a_scanned_qr_form_shows_as_the_canonical_link(qtbot):
    from meshdesk.ui.join_view import JoinView

    view = JoinView()
    qtbot.addWidget(view)
    [text] = decode_image(qr_image(decode_token(LINK).qr_text()))
    view.show_scan_result([text], "the clipboard")
    assert view.token.text() == LINK
