"""Whether Qt's platform plugin loads here, found out in a child process before the app makes
its QApplication: a plugin that cannot load aborts the process that tries (qFatal), so the
desktop would die with Qt's message and no node.

Run as a module it is that child: `python -m meshdesk.adapters.qt_probe` makes a
QGuiApplication on the platform Qt would choose and prints its name; with `--libraries` it
prints `make setup`'s hint when the xcb plugin's system libraries are missing.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from meshdesk.core.qt_libraries import PlatformFailure, diagnose, setup_hint

PROBE_TIMEOUT = 20.0
LDD_TIMEOUT = 10.0
XCB_PLUGIN = Path("Qt", "plugins", "platforms", "libqxcb.so")


def chosen_platform(environment: dict | None = None) -> str:
    """The platform plugin Qt will load: QT_QPA_PLATFORM's first choice, else the OS default."""
    environment = os.environ if environment is None else environment
    requested = environment.get("QT_QPA_PLATFORM", "").split(";")[0].split(":")[0].strip()
    if requested:
        return requested
    if sys.platform.startswith("linux"):
        return "wayland" if environment.get("WAYLAND_DISPLAY") and not environment.get("DISPLAY") else "xcb"
    return {"darwin": "cocoa", "win32": "windows"}.get(sys.platform, sys.platform)


def xcb_plugin() -> Path | None:
    """PySide6's xcb plugin file, found without importing Qt."""
    spec = importlib.util.find_spec("PySide6")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        if (candidate := Path(folder) / XCB_PLUGIN).is_file():
            return candidate
    return None


def ldd_output(library: Path | None) -> str:
    """`ldd LIBRARY`'s report ("=> not found" lines name what is missing); empty when unavailable."""
    if library is None or not sys.platform.startswith("linux"):
        return ""
    try:
        done = subprocess.run(["ldd", str(library)], capture_output=True, text=True, timeout=LDD_TIMEOUT)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout + done.stderr


def probe(python_command: list[str], timeout: float = PROBE_TIMEOUT,
          environment: dict | None = None) -> PlatformFailure | None:
    """None when a QGuiApplication starts in a child (`python_command` runs this module, in
    `environment`, else this one's); otherwise what failed, with the missing system libraries
    where the plugin is xcb."""
    platform = chosen_platform(environment)
    try:
        done = subprocess.run(python_command, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env=environment)
    except subprocess.TimeoutExpired:
        return PlatformFailure(platform, detail=f"no answer from the display in {timeout:g} s")
    except OSError as error:
        return PlatformFailure(platform, detail=f"the probe did not start: {error}")
    if done.returncode == 0 and done.stdout.strip():
        return None
    libraries = ldd_output(xcb_plugin()) if platform == "xcb" else ""
    return diagnose(platform, done.stderr + done.stdout, libraries)


def libraries_hint() -> str | None:
    """`make setup`'s hint: the xcb plugin's missing system libraries, as apt packages."""
    return setup_hint(ldd_output(xcb_plugin()))


def start_gui_application() -> int:
    from PySide6.QtGui import QGuiApplication

    application = QGuiApplication(sys.argv[:1])
    print(application.platformName(), flush=True)
    return 0


if __name__ == "__main__":
    if "--libraries" in sys.argv[1:]:
        hint = libraries_hint()
        if hint:
            print(hint)
        sys.exit(0)
    sys.exit(start_gui_application())
