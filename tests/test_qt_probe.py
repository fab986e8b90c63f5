"""A broken Qt (its xcb plugin's system libraries missing) or an unreachable display: the probe
says which apt packages to install, in one line, and the app runs headless with its API.

This machine lacks several of the xcb plugin's libraries, so the failure path runs for real:
DISPLAY names a display that does not exist and the platform is forced to xcb, which fails
while loading the plugin, before it would try the display."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap

import pytest

from meshdesk.adapters import qt_probe
from meshdesk.core.qt_libraries import (APT_PACKAGES, diagnose, headless_hint, missing_libraries,
                                        packages_for, setup_hint)
from tests.nodes import poll, start_node
from tests.nodes import test_environment as child_environment

LDD_OUTPUT = """\
\tlinux-vdso.so.1 (0x00007ffd6b1f2000)
\tlibQt6XcbQpa.so.6 => /venv/PySide6/Qt/lib/libQt6XcbQpa.so.6 (0x00007f7e1c000000)
\tlibxcb-icccm.so.4 => not found
\tlibxcb-keysyms.so.1 => not found
\tlibxcb.so.1 => /lib/x86_64-linux-gnu/libxcb.so.1 (0x00007f7e1bfd0000)
\tlibxcb-icccm.so.4 => not found
\tlibfrobnicate.so.2 => not found
"""
QT_CURSOR_MESSAGE = ("qt.qpa.plugin: From 6.5.0, xcb-cursor0 or libxcb-cursor0 is needed to load "
                     "the Qt xcb platform plugin.\nqt.qpa.plugin: Could not load the Qt platform plugin "
                     "\"xcb\" in \"\" even though it was found.\nThis application failed to start because "
                     "no Qt platform plugin could be initialized.")
QT_NO_DISPLAY = ("qt.qpa.xcb: could not connect to display :99\n" + QT_CURSOR_MESSAGE)  # as Qt prints it
PROBE = [sys.executable, "-m", "meshdesk.adapters.qt_probe"]
HIDDEN = ("libxcb-icccm.so.4", "libxcb-keysyms.so.1")  # two of those a fresh Debian lacks
# The probe as launch runs it, and make setup's hint, from one child (in the namespace).
PRINT_PROBE = textwrap.dedent("""
    import dataclasses, json, sys
    from meshdesk.adapters import qt_probe
    from meshdesk.core.qt_libraries import headless_hint
    failure = qt_probe.probe([sys.executable, "-m", "meshdesk.adapters.qt_probe"])
    report = dataclasses.asdict(failure) if failure else {}
    report["hint"] = headless_hint(failure) if failure else None
    print(json.dumps([report, qt_probe.libraries_hint()]))
""")


def broken_xcb_environment() -> dict:
    return child_environment({"QT_QPA_PLATFORM": "xcb", "DISPLAY": ":99", "WAYLAND_DISPLAY": None})


def missing_here() -> tuple[str, ...]:
    return missing_libraries(qt_probe.ldd_output(qt_probe.xcb_plugin()))


def hiding_prefix(tmp_path) -> list[str]:
    """A command prefix under which HIDDEN are missing, as on a fresh Debian: a private mount
    namespace (unshare) with an overlay on their folder whose upper layer holds whiteouts for
    them. Only that process tree sees it; no package is removed. [] when they are missing
    already; a skip where the namespace or overlay cannot be made (not root, no overlayfs)."""
    found = dict(re.findall(r"^\s*(\S+) => (/\S+)", qt_probe.ldd_output(qt_probe.xcb_plugin()), re.MULTILINE))
    present = [found[name] for name in HIDDEN if name in found]
    if not present:
        return []
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("hiding a system library needs root and unshare (a private mount namespace)")
    folders = {os.path.dirname(os.path.realpath(path)) for path in present}
    if len(folders) != 1:
        pytest.skip(f"the libraries to hide are in several folders: {sorted(folders)}")
    folder = folders.pop()
    upper, work = tmp_path / "hidden-upper", tmp_path / "hidden-work"
    upper.mkdir(), work.mkdir()
    for name in HIDDEN:
        for path in glob.glob(os.path.join(folder, glob.escape(name) + "*")):
            os.mknod(upper / os.path.basename(path), stat.S_IFCHR | 0o600, os.makedev(0, 0))  # a whiteout
    mount = (f"mount -t overlay overlay -o lowerdir={folder},upperdir={upper},workdir={work} {folder}"
             ' && exec "$@"')
    prefix = ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount, "sh"]
    check = subprocess.run([*prefix, "true"], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        pytest.skip(f"cannot hide libraries in a mount namespace here: {check.stderr.strip()}")
    return prefix


# --- the pure table ---------------------------------------------------------------------------

def test_ldd_names_each_missing_library_once_in_order():
    assert missing_libraries(LDD_OUTPUT) == ("libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libfrobnicate.so.2")


def test_libraries_map_to_apt_packages_and_qts_guess_counts_only_without_them():
    # Qt blames xcb-cursor whenever the plugin fails, even with libxcb-cursor installed (seen here)
    libraries = missing_libraries(LDD_OUTPUT)
    assert packages_for(libraries, QT_CURSOR_MESSAGE) == ("libxcb-icccm4", "libxcb-keysyms1")
    assert packages_for((), QT_CURSOR_MESSAGE) == ("libxcb-cursor0",)


def test_qts_cannot_open_message_names_the_library():
    output = "Cannot load library /x/libqxcb.so: (libxkbcommon-x11.so.0: cannot open shared object file: No such file)"
    assert packages_for(missing_libraries(output)) == ("libxkbcommon-x11-0",)


def test_the_hint_is_one_line_with_an_apt_command_and_the_unknown_library():
    hint = headless_hint(diagnose("xcb", QT_CURSOR_MESSAGE, LDD_OUTPUT))
    assert "\n" not in hint
    assert "running headless" in hint
    assert "sudo apt install libxcb-icccm4 libxcb-keysyms1 (and" in hint
    assert "libfrobnicate.so.2" in hint


def test_an_unreachable_display_is_not_blamed_on_packages():
    failure = diagnose("xcb", QT_NO_DISPLAY, "\tlibxcb.so.1 => /lib/libxcb.so.1\n")
    assert failure.missing_packages == ()
    assert headless_hint(failure) == "Qt cannot connect to the display :99; running headless."


def test_an_unexplained_failure_quotes_qts_last_line():
    hint = headless_hint(diagnose("wayland", "qt.qpa.wayland: something\nFailed to create wl_display"))
    assert hint == "Qt cannot start its wayland platform plugin (Failed to create wl_display); running headless."


def test_setup_says_nothing_when_all_libraries_are_there():
    assert setup_hint("\tlibxcb.so.1 => /lib/libxcb.so.1\n") is None
    assert "sudo apt install libxcb-icccm4 libxcb-keysyms1" in setup_hint(LDD_OUTPUT)


def test_every_mapped_name_is_a_shared_object_and_a_lowercase_package():
    for library, package in APT_PACKAGES.items():
        assert ".so." in library and package == package.lower() and " " not in package


# --- the real probe, on this machine's PySide6 ------------------------------------------------

def test_the_platform_follows_qt_qpa_platform_and_the_display(monkeypatch):
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert qt_probe.chosen_platform() == "offscreen"
    monkeypatch.delenv("QT_QPA_PLATFORM")
    monkeypatch.setenv("DISPLAY", ":0")
    if sys.platform.startswith("linux"):
        assert qt_probe.chosen_platform() == "xcb"


def test_offscreen_qt_starts_in_the_probe(monkeypatch):
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert qt_probe.probe(PROBE) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the xcb plugin is Linux's")
def test_the_broken_xcb_plugin_names_its_apt_packages(tmp_path):
    prefix = hiding_prefix(tmp_path)
    done = subprocess.run([*prefix, sys.executable, "-c", PRINT_PROBE], capture_output=True, text=True,
                          timeout=60, env=broken_xcb_environment())
    assert done.returncode == 0, done.stderr
    failure, setup = json.loads(done.stdout)
    assert failure["platform"] == "xcb"
    assert {"libxcb-icccm.so.4", "libxcb-keysyms.so.1"} <= set(failure["missing_libraries"])
    assert {"libxcb-icccm4", "libxcb-keysyms1"} <= set(failure["missing_packages"])
    assert "libxcb-cursor0" not in failure["missing_packages"]  # Qt's guess, wrong here
    assert "sudo apt install" in failure["hint"] and "running headless" in failure["hint"]
    assert "sudo apt install libxcb-icccm4 libxcb-keysyms1" in setup


@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="no Xvfb here: the good path of xcb needs a display")
def test_xcb_under_xvfb_starts_when_its_libraries_are_there(monkeypatch):
    if missing_here():
        pytest.skip(f"this machine lacks {', '.join(missing_here())}: the good path of xcb cannot run")
    server = subprocess.Popen(["Xvfb", ":97", "-nolisten", "tcp"], stderr=subprocess.DEVNULL)
    try:
        poll(lambda: os.path.exists("/tmp/.X11-unix/X97"), 10, message="Xvfb's socket")
        monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
        monkeypatch.setenv("DISPLAY", ":97")
        assert qt_probe.probe(PROBE) is None
    finally:
        server.terminate()
        server.wait()


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the xcb plugin is Linux's")
def test_the_app_runs_headless_with_its_api_when_xcb_is_broken(tmp_path, smollm2_model_path):
    prefix = hiding_prefix(tmp_path)
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    os.link(smollm2_model_path, home / "models" / smollm2_model_path.name)
    environment = {"QT_QPA_PLATFORM": "xcb", "DISPLAY": ":99", "WAYLAND_DISPLAY": None}
    node = start_node(home, "--gui", "--model", "smollm2", environment=environment, prefix=prefix)
    try:
        hint = node.printed("Qt cannot start its xcb platform plugin")
        assert "running headless. On Debian/Ubuntu: sudo apt install libxcb-icccm4 libxcb-keysyms1" in hint
        node.wait_until_ready()
        client = node.client()
        answer = client.chat.completions.create(model=client.models.list().data[0].id, max_tokens=8,
                                                messages=[{"role": "user", "content": "Say hi."}])
        assert answer.choices[0].message.content
        assert node.process.poll() is None
    finally:
        node.stop()
