"""The installers' configuration stays in step with the project, and the Linux package is right."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def briefcase() -> dict:
    return tomllib.loads((ROOT / "briefcase.toml").read_text())["tool"]["briefcase"]


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~ ;\[]", requirement, maxsplit=1)[0].lower() for requirement in requirements}


def test_briefcase_matches_the_project():
    config, project = briefcase(), pyproject()
    app = config["app"]["meshdesk"]
    assert config["version"] == project["version"]
    assert requirement_names(app["requires"]) == requirement_names(project["dependencies"])
    assert app["sources"] == ["meshdesk"] and app["console_app"] is False
    assert (ROOT / f"{app['icon']}.png").exists()
    assert {"macOS", "linux", "windows"} <= set(app)


def test_briefcase_build_prepares_a_merged_project(tmp_path):
    result = subprocess.run(["python3", str(ROOT / "installers" / "briefcase_build.py"), "--dry-run"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    merged = tomllib.loads((ROOT / "build" / "briefcase" / "pyproject.toml").read_text())
    assert merged["tool"]["briefcase"]["app"]["meshdesk"]["formal_name"] == "MeshDesk"
    assert "briefcase package" in result.stdout


def test_desktop_entry_opens_invite_links():
    entry = (ROOT / "installers" / "linux" / "meshdesk.desktop").read_text()
    assert "Exec=meshdesk %u" in entry and "MimeType=x-scheme-handler/meshdesk;" in entry
    if shutil.which("desktop-file-validate"):
        check = subprocess.run(["desktop-file-validate", str(ROOT / "installers/linux/meshdesk.desktop")],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is not installed")
def test_the_deb_holds_the_launcher_desktop_entry_and_icon(tmp_path):
    environment = {**os.environ, "MESHDESK_DIST": str(tmp_path / "dist")}
    result = subprocess.run(["bash", str(ROOT / "installers/linux/build_deb.sh"), "--quick"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT, env=environment)
    assert result.returncode == 0, result.stderr
    package = Path(result.stdout.strip().splitlines()[-1])
    control = subprocess.run(["dpkg-deb", "--field", str(package), "Package", "Version", "Depends"],
                             capture_output=True, text=True, check=True).stdout
    assert "Package: meshdesk" in control and f"Version: {pyproject()['version']}" in control
    assert "python3.11" in control
    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", str(package), str(root)], check=True)
    launcher = (root / "usr/bin/meshdesk").read_text()
    assert "/opt/meshdesk/venv/bin/meshdesk" in launcher and "meshdesk://" in launcher
    assert (root / "usr/share/applications/meshdesk.desktop").exists()
    assert (root / "usr/share/icons/hicolor/256x256/apps/meshdesk.png").exists()


def test_a_bare_invite_link_is_a_join(monkeypatch):
    from meshdesk.app import cli

    seen = {}

    class Recorder:
        def parse_args(self, argv):
            seen["argv"] = argv
            raise SystemExit(0)

    monkeypatch.setattr(cli, "build_parser", Recorder)
    with pytest.raises(SystemExit):
        cli.main(["meshdesk://join/ABC"])
    assert seen["argv"] == ["--join", "meshdesk://join/ABC"]
