"""Windows: meshdesk:// links open MeshDesk through a URL protocol handler under
HKCU\\Software\\Classes\\meshdesk (per user: no administrator rights, as the per-user MSI).

Windows runs the handler's `shell\\open\\command` with the link in place of "%1"; `meshdesk`
turns a bare meshdesk:// argument into `--open-link`, so the link is shown, never joined. The
desktop writes the keys each time it starts inside a bundle (the first run, and again if the
app moved); the MSI's pre-uninstall script runs `MeshDesk.exe --unregister-links`, which removes
them if they still name this app. The registry is an injected `Registry` (winreg exists only on
Windows): `WinregRegistry` is the real one.
"""

from __future__ import annotations

import subprocess
from typing import Protocol

SCHEME = "meshdesk"
SCHEME_KEY = "Software\\Classes\\" + SCHEME
COMMAND_KEY = SCHEME_KEY + "\\shell\\open\\command"
DESCRIPTION = "URL:MeshDesk invite link"
OPENED_LINK = "--opened-link"  # the handler's marker: what follows is one link (see handler_command)


class Registry(Protocol):
    """Keys under HKEY_CURRENT_USER; the name "" is a key's default value."""

    def value(self, key: str, name: str) -> str | None: ...

    def set_value(self, key: str, name: str, value: str) -> None:
        """Creates the key (and its parents) if needed."""

    def delete_tree(self, key: str) -> None:
        """The key and all its subkeys; nothing when it is absent."""


def handler_command(launcher: list[str]) -> str:
    """The command line Windows runs for a link: the program always quoted (as Windows writes
    its own handlers), its arguments as the C runtime parses them, then OPENED_LINK and the link
    as "%1". Windows pastes the link in raw, so a caller that leaves a `"` in it would split it
    into more arguments (`--join EVIL`): everything after OPENED_LINK is one link, never options."""
    if not launcher:
        return ""
    arguments = [subprocess.list2cmdline(launcher[1:])] if launcher[1:] else []
    return " ".join([f'"{launcher[0]}"', *arguments, OPENED_LINK, '"%1"'])


def scheme_entries(launcher: list[str]) -> dict[str, dict[str, str]]:
    """Every key and value of the handler, for this launcher (e.g. [...\\MeshDesk.exe])."""
    return {
        SCHEME_KEY: {"": DESCRIPTION, "URL Protocol": ""},
        SCHEME_KEY + "\\DefaultIcon": {"": f'"{launcher[0]}",0'},
        COMMAND_KEY: {"": handler_command(launcher)},
    }


def register_links(registry: Registry, launcher: list[str]) -> bool:
    """Writes the handler where it differs; True when anything was written."""
    if not launcher:
        raise ValueError("a link handler needs the app's launcher")
    written = False
    for key, values in scheme_entries(launcher).items():
        for name, value in values.items():
            if registry.value(key, name) != value:
                registry.set_value(key, name, value)
                written = True
    return written


def unregister_links(registry: Registry, launcher: list[str]) -> bool:
    """Removes the handler if it runs this launcher (another install's is left alone); True
    when it was removed. Windows paths ignore case, so the comparison does too."""
    if (registry.value(COMMAND_KEY, "") or "").casefold() != handler_command(launcher).casefold():
        return False
    registry.delete_tree(SCHEME_KEY)
    return True


class WinregRegistry:
    """HKEY_CURRENT_USER through the standard library's winreg (Windows only)."""

    def __init__(self):
        import winreg

        self.winreg = winreg

    def value(self, key: str, name: str) -> str | None:
        try:
            with self.winreg.OpenKey(self.winreg.HKEY_CURRENT_USER, key) as handle:
                value, kind = self.winreg.QueryValueEx(handle, name)
        except OSError:  # FileNotFoundError: no such key or value
            return None
        return value if kind == self.winreg.REG_SZ else None

    def set_value(self, key: str, name: str, value: str) -> None:
        with self.winreg.CreateKeyEx(self.winreg.HKEY_CURRENT_USER, key, 0, self.winreg.KEY_WRITE) as handle:
            self.winreg.SetValueEx(handle, name, 0, self.winreg.REG_SZ, value)

    def delete_tree(self, key: str) -> None:
        winreg = self.winreg
        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, key, 0, winreg.KEY_READ) as handle:
                children = []
                while True:
                    try:
                        children.append(winreg.EnumKey(handle, len(children)))
                    except OSError:  # no more subkeys
                        break
        except FileNotFoundError:
            return
        for child in children:
            self.delete_tree(key + "\\" + child)
        winreg.DeleteKey(winreg.HKEY_CURRENT_USER, key)
