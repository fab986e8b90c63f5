"""How MeshDesk starts its children and itself, from a checkout, a frozen program and a Briefcase bundle."""

from __future__ import annotations

import pytest

from meshdesk.core.launcher import Runtime, app_command, child_command, child_request, runtime_kind

HOST = "meshdesk.adapters.llama.host"
VENV = Runtime("/home/a/meshdesk/.venv/bin/python")
BRIEFCASE_DEV = Runtime("/home/a/meshdesk/.venv/bin/python3.11", installer="briefcase")
LINUX_SYSTEM = Runtime("/usr/bin/meshdesk", installer="briefcase")
MACOS_APP = Runtime("/Applications/MeshDesk.app/Contents/MacOS/MeshDesk", installer="briefcase")
WINDOWS_APP = Runtime(r"C:\Users\a\AppData\Local\Programs\MeshDesk\MeshDesk.exe", installer="briefcase")
WINDOWS_VENV = Runtime(r"C:\meshdesk\.venv\Scripts\python.exe", installer="pip")
FROZEN = Runtime("/opt/MeshDesk/MeshDesk", frozen=True)


@pytest.mark.parametrize("runtime, kind, child, login", [
    (VENV, "source", [VENV.executable, "-m", HOST, "--port", "0"],
     [VENV.executable, "-m", "meshdesk", "--home", "/h"]),
    (WINDOWS_VENV, "source", [WINDOWS_VENV.executable, "-m", HOST, "--port", "0"],
     [WINDOWS_VENV.executable, "-m", "meshdesk", "--home", "/h"]),
    # `briefcase dev` marks the distribution too, but runs a real Python
    (BRIEFCASE_DEV, "source", [BRIEFCASE_DEV.executable, "-m", HOST, "--port", "0"],
     [BRIEFCASE_DEV.executable, "-m", "meshdesk", "--home", "/h"]),
    (LINUX_SYSTEM, "briefcase", ["/usr/bin/meshdesk", "--child", HOST, "--port", "0"],
     ["/usr/bin/meshdesk", "--home", "/h"]),
    (MACOS_APP, "briefcase", [MACOS_APP.executable, "--child", HOST, "--port", "0"],
     [MACOS_APP.executable, "--home", "/h"]),
    (WINDOWS_APP, "briefcase", [WINDOWS_APP.executable, "--child", HOST, "--port", "0"],
     [WINDOWS_APP.executable, "--home", "/h"]),
    (FROZEN, "frozen", [FROZEN.executable, "--child", HOST, "--port", "0"], [FROZEN.executable, "--home", "/h"]),
])
def test_children_and_the_login_entry_start_through_what_can_run_them(runtime, kind, child, login):
    assert runtime_kind(runtime) == kind
    assert child_command(runtime, HOST, "--port", "0") == child
    assert app_command(runtime, "--home", "/h") == login


@pytest.mark.parametrize("arguments, request_", [
    ([], None),
    (["--home", "/h"], None),
    (["--child", HOST], (HOST, [])),
    (["--child", HOST, "--port", "0", "--child", "x"], (HOST, ["--port", "0", "--child", "x"])),
])
def test_the_hidden_child_option_names_the_module_and_passes_the_rest_on(arguments, request_):
    assert child_request(arguments) == request_


@pytest.mark.parametrize("arguments, message", [
    (["--child"], "needs a module name"),
    (["--child", "os"], "'os' is not a module of meshdesk"),
    (["--child", "meshdeskx.evil"], "not a module of meshdesk"),
    (["--child", "meshdesk.../x"], "not a module of meshdesk"),
])
def test_a_child_option_without_a_meshdesk_module_is_a_clear_error(arguments, message):
    with pytest.raises(ValueError, match=message):
        child_request(arguments)


def test_a_foreign_module_is_refused_for_a_child_too():
    with pytest.raises(ValueError, match="not a module of meshdesk"):
        child_command(LINUX_SYSTEM, "subprocess")
