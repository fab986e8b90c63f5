"""Why Qt's platform plugin did not load, in one line a person can act on.

Qt's xcb plugin (X11 on Linux) needs a dozen system libraries that a fresh Debian or Ubuntu
install often lacks. The names of the missing ones come from `ldd` on the plugin ("=> not
found") or from Qt's own messages ("cannot open shared object file", "xcb-cursor0 or
libxcb-cursor0 is needed"); this module maps them to the apt packages that provide them.
Pure: the probing (a child process, `ldd`) is meshdesk.adapters.qt_probe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Shared object name (as the dynamic loader asks for it) -> Debian/Ubuntu package.
APT_PACKAGES = {
    "libxcb.so.1": "libxcb1",
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-glx.so.0": "libxcb-glx0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xinerama.so.0": "libxcb-xinerama0",
    "libxcb-xinput.so.0": "libxcb-xinput0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libX11.so.6": "libx11-6",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libSM.so.6": "libsm6",
    "libICE.so.6": "libice6",
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libOpenGL.so.0": "libopengl0",
    "libGLX.so.0": "libglx0",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libdbus-1.so.3": "libdbus-1-3",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libwayland-client.so.0": "libwayland-client0",
    "libwayland-cursor.so.0": "libwayland-cursor0",
    "libwayland-egl.so.1": "libwayland-egl1",
}

_NOT_FOUND = re.compile(r"^\s*(\S+\.so[.\d]*)\s+=>\s+not found", re.MULTILINE)
_CANNOT_OPEN = re.compile(r"([\w./+-]+\.so[.\d]*): cannot open shared object file")
_QT_NEEDS = re.compile(r"([\w.+-]+) or ([\w.+-]+) is needed")
_NO_DISPLAY = re.compile(r"could not connect to display ?(\S*)", re.IGNORECASE)


@dataclass(frozen=True)
class PlatformFailure:
    """What a failed start of Qt's platform plugin told us."""

    platform: str
    missing_libraries: tuple[str, ...] = ()
    missing_packages: tuple[str, ...] = ()  # apt names, for the libraries (and Qt's own hints)
    unreachable_display: str | None = None  # Qt found its libraries but no display answered
    detail: str = ""  # Qt's last line, when nothing above explains the failure


def missing_libraries(text: str) -> tuple[str, ...]:
    """The shared objects that `ldd` output or Qt's messages say could not be found, in order."""
    names = [match.group(1) for match in _NOT_FOUND.finditer(text)]
    names += [match.group(1).rsplit("/", 1)[-1] for match in _CANNOT_OPEN.finditer(text)]
    return tuple(dict.fromkeys(names))


def packages_for(libraries: tuple[str, ...], qt_output: str = "") -> tuple[str, ...]:
    """The apt packages providing `libraries`; without them, those Qt names itself ("X or libX
    is needed"), which it prints on any failure of the plugin, even with that library present."""
    packages = [APT_PACKAGES[name] for name in libraries if name in APT_PACKAGES]
    if not libraries:
        packages = [match.group(2) for match in _QT_NEEDS.finditer(qt_output)]
    return tuple(dict.fromkeys(packages))


def diagnose(platform: str, qt_output: str, ldd_output: str = "") -> PlatformFailure:
    """What went wrong, from a failed probe's output and (for xcb) `ldd` on the plugin."""
    libraries = missing_libraries(ldd_output + "\n" + qt_output)
    display = _NO_DISPLAY.search(qt_output)
    # A plugin that tried to connect had loaded its libraries: Qt's "libxcb-cursor0 is needed",
    # printed on any failure, is then no guess to pass on.
    packages = packages_for(libraries, "" if display else qt_output)
    unreachable = (display.group(1) or "(unnamed)") if display and not packages else None
    lines = [line.strip() for line in qt_output.splitlines() if line.strip()]
    return PlatformFailure(platform, libraries, packages, unreachable, lines[-1] if lines else "")


def headless_hint(failure: PlatformFailure) -> str:
    """The one line printed before running headless."""
    start = f"Qt cannot start its {failure.platform} platform plugin"
    if failure.missing_packages:
        unknown = [name for name in failure.missing_libraries if name not in APT_PACKAGES]
        also = f" (and whatever provides {', '.join(unknown)})" if unknown else ""
        return (f"{start}: system libraries are missing; running headless. On Debian/Ubuntu: "
                f"sudo apt install {' '.join(failure.missing_packages)}{also}")
    if failure.missing_libraries:
        return (f"{start}: missing {', '.join(failure.missing_libraries)}; running headless. "
                "Install the packages that provide them.")
    if failure.unreachable_display is not None:
        return f"Qt cannot connect to the display {failure.unreachable_display}; running headless."
    detail = f" ({failure.detail})" if failure.detail else ""
    return f"{start}{detail}; running headless."


def setup_hint(ldd_output: str) -> str | None:
    """`make setup`'s line when the xcb plugin's libraries are missing; None when all are there."""
    libraries = missing_libraries(ldd_output)
    if not libraries:
        return None
    packages = packages_for(libraries)
    install = f"sudo apt install {' '.join(packages)}" if packages else "install them"
    return (f"Note: the window needs system libraries this machine lacks ({', '.join(libraries)}); "
            f"without them MeshDesk runs headless. On Debian/Ubuntu: {install}")
