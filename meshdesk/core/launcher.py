"""How this MeshDesk starts another copy of itself: its children and its start-at-login entry.

From a checkout or a virtual environment, `sys.executable` is a Python, which runs a module
with `-m`. Inside an app bundle it is the app's own launcher: Briefcase's stub on macOS and
Windows, `/usr/bin/meshdesk` in its Linux system packages, or a frozen program. A launcher
always runs the app's main module (`meshdesk`) with the arguments it was given and knows no
`-m`. So a bundle starts a child as `LAUNCHER --child MODULE ARGS...`, and `meshdesk`'s
`__main__` hands the hidden `--child` over to that module (`child_request`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CHILD_OPTION = "--child"
APP_MODULE = "meshdesk"
BRIEFCASE_INSTALLER = "briefcase"
# python, python3, python3.11, python3.13t, pythonw.exe, pypy3... (any case: python.exe on Windows)
_PYTHON_NAME = re.compile(r"^(python|pypy)(\d+(\.\d+)*)?[tw]?(\.exe)?$", re.IGNORECASE)
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


@dataclass(frozen=True)
class Runtime:
    """What `sys` says about the running program; `installer` is the INSTALLER of meshdesk's
    own distribution (`briefcase` in a Briefcase bundle, and in `briefcase dev`), if any."""

    executable: str
    frozen: bool = False
    installer: str | None = None


def executable_name(executable: str) -> str:
    return re.split(r"[\\/]", executable)[-1]


def runs_modules(runtime: Runtime) -> bool:
    """Whether the executable is a Python that runs `-m MODULE`.

    A frozen program or a Briefcase launcher is not. `briefcase dev` marks the distribution
    `briefcase` too but runs a real Python, so the executable's name decides there; an
    executable that is neither (an unknown wrapper) is taken for a Python, as before bundles."""
    if runtime.frozen:
        return False
    if runtime.installer == BRIEFCASE_INSTALLER:
        return bool(_PYTHON_NAME.match(executable_name(runtime.executable)))
    return True


def runtime_kind(runtime: Runtime) -> str:
    """`source`, `frozen` or `briefcase`: for logs and the docs' table."""
    if runs_modules(runtime):
        return "source"
    return "frozen" if runtime.frozen else "briefcase"


def child_command(runtime: Runtime, module: str, *arguments: str) -> list[str]:
    """The command that runs `module` as a child process of this program."""
    check_module(module)
    if runs_modules(runtime):
        return [runtime.executable, "-m", module, *arguments]
    if module == APP_MODULE:
        return [runtime.executable, *arguments]
    return [runtime.executable, CHILD_OPTION, module, *arguments]


def app_command(runtime: Runtime, *arguments: str) -> list[str]:
    """The command that starts MeshDesk itself (a lite client, start at login)."""
    return child_command(runtime, APP_MODULE, *arguments)


def check_module(module: str) -> None:
    if not _MODULE_NAME.match(module) or not (module == APP_MODULE or module.startswith(APP_MODULE + ".")):
        raise ValueError(f"{module!r} is not a module of {APP_MODULE}")


def child_request(arguments: list[str]) -> tuple[str, list[str]] | None:
    """`--child MODULE ARGS...` (the arguments after the program) as (MODULE, ARGS); None when
    the program was started as the app. A missing or foreign module raises ValueError."""
    if not arguments or arguments[0] != CHILD_OPTION:
        return None
    if len(arguments) < 2:
        raise ValueError(f"{CHILD_OPTION} needs a module name")
    check_module(arguments[1])
    return arguments[1], arguments[2:]
