"""Start at login: the entry each OS gets, and the app writing and removing it."""

from __future__ import annotations

import configparser
import plistlib
from pathlib import Path

import pytest

from meshdesk.app.desktop import StartAtLogin, launch_command
from meshdesk.ui.autostart import autostart_entry, desktop_exec_argument

COMMAND = ["/opt/Mesh Desk/python", "-m", "meshdesk", "--home", "/home/a/100%"]


def test_linux_gets_an_xdg_autostart_desktop_file():
    entry = autostart_entry("linux", COMMAND, Path("/home/a"))
    assert entry.kind == "file" and entry.location == "/home/a/.config/autostart/meshdesk.desktop"
    parsed = configparser.ConfigParser(interpolation=None)
    parsed.read_string(entry.content)
    desktop = parsed["Desktop Entry"]
    assert desktop["Type"] == "Application" and desktop["Name"] == "MeshDesk"
    assert desktop["Exec"] == '"/opt/Mesh Desk/python" -m meshdesk --home /home/a/100%%'


def test_xdg_config_home_is_respected():
    entry = autostart_entry("linux", COMMAND, Path("/home/a"), Path("/cfg"))
    assert entry.location == "/cfg/autostart/meshdesk.desktop"


def test_exec_quoting_follows_the_desktop_entry_spec():
    assert desktop_exec_argument("plain") == "plain"
    # quoted: "say \"hi\" \$HOME", then each backslash doubled for the string escape
    assert desktop_exec_argument('say "hi" $HOME') == r'"say \\"hi\\" \\$HOME"'
    assert desktop_exec_argument("") == '""'


def test_macos_gets_a_launch_agent():
    entry = autostart_entry("darwin", COMMAND, Path("/Users/a"))
    assert entry.location == "/Users/a/Library/LaunchAgents/org.meshdesk.MeshDesk.plist"
    agent = plistlib.loads(entry.content.encode())
    assert agent["ProgramArguments"] == COMMAND and agent["RunAtLoad"] is True
    assert agent["Label"] == "org.meshdesk.MeshDesk"


def test_windows_gets_a_run_key_value():
    entry = autostart_entry("win32", COMMAND, Path("C:/Users/a"))
    assert entry.kind == "registry" and entry.location.endswith(r"CurrentVersion\Run")
    assert entry.name == "MeshDesk" and entry.content.startswith('"/opt/Mesh Desk/python" -m meshdesk')


def test_unknown_platforms_are_refused():
    with pytest.raises(ValueError):
        autostart_entry("sunos5", COMMAND, Path("/home/a"))


def test_the_app_writes_and_removes_the_entry(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    login = StartAtLogin(tmp_path / "home")
    assert not login.enabled()
    note = login.set(True)
    written = tmp_path / "config" / "autostart" / "meshdesk.desktop"
    assert login.enabled() and str(written) in note
    assert f"--home {tmp_path / 'home'}" in written.read_text()
    login.set(False)
    assert not login.enabled() and not written.exists()


def test_the_launch_command_runs_this_python_with_this_home(tmp_path):
    command = launch_command(tmp_path)
    assert command[1:] == ["-m", "meshdesk", "--home", str(tmp_path)]


def test_an_unknown_platform_disables_the_option_with_a_reason(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.platform", "sunos5")
    login = StartAtLogin(tmp_path)
    assert not login.enabled() and "not supported on sunos5" in login.set(True)
