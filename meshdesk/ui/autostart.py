"""Start at login: where each OS looks for an entry, and what the entry says (pure).

Linux: an XDG autostart `.desktop` file; macOS: a LaunchAgent property list; Windows: a value
under the user's `Run` registry key (written through QSettings by the app). The app layer
writes or deletes what this returns.
"""

from __future__ import annotations

import plistlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

APP_NAME = "MeshDesk"
LAUNCH_AGENT_LABEL = "org.meshdesk.MeshDesk"
WINDOWS_RUN_KEY = r"HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run"
_DESKTOP_RESERVED = set(" \t\n\"'\\><~|&;$*?#()`")


@dataclass(frozen=True)
class AutostartEntry:
    kind: str       # "file" or "registry"
    location: str   # a file path, or a registry key
    name: str       # the file name, or the registry value name
    content: str


def desktop_exec_argument(argument: str) -> str:
    """Quotes one argument for a desktop entry's Exec key (freedesktop spec): quoting rules
    first, then the string escape that doubles every backslash."""
    argument = argument.replace("%", "%%")
    if not argument or _DESKTOP_RESERVED & set(argument):
        escaped = "".join("\\" + c if c in '"`$\\' else c for c in argument)
        argument = f'"{escaped}"'
    return argument.replace("\\", "\\\\")


def desktop_file(command: list[str]) -> str:
    exec_line = " ".join(desktop_exec_argument(argument) for argument in command)
    return "\n".join([
        "[Desktop Entry]", "Type=Application", f"Name={APP_NAME}",
        "Comment=Pool friends' computers to run large language models",
        f"Exec={exec_line}", "Icon=meshdesk", "Terminal=false",
        "X-GNOME-Autostart-enabled=true", ""])


def launch_agent(command: list[str]) -> str:
    return plistlib.dumps({"Label": LAUNCH_AGENT_LABEL, "ProgramArguments": list(command),
                           "RunAtLoad": True, "ProcessType": "Interactive"}).decode()


def autostart_entry(platform: str, command: list[str], user_home: Path,
                    config_home: Path | None = None) -> AutostartEntry:
    """`platform` is `sys.platform`; `config_home` is $XDG_CONFIG_HOME when set."""
    if platform.startswith("linux") or platform.startswith("freebsd"):
        folder = (config_home or user_home / ".config") / "autostart"
        return AutostartEntry("file", str(folder / "meshdesk.desktop"), "meshdesk.desktop",
                              desktop_file(command))
    if platform == "darwin":
        name = f"{LAUNCH_AGENT_LABEL}.plist"
        return AutostartEntry("file", str(user_home / "Library" / "LaunchAgents" / name), name,
                              launch_agent(command))
    if platform == "win32":
        return AutostartEntry("registry", WINDOWS_RUN_KEY, APP_NAME, subprocess.list2cmdline(command))
    raise ValueError(f"start at login is not supported on {platform}")
