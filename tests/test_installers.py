"""The installers: briefcase.toml stays in step with pyproject.toml, the icons with the app's
drawing, and the Debian package holds what it should (see docs/installers.md).

The full .deb (a virtual environment with every dependency, about 3.5 minutes) is built only
with MESHDESK_TEST_FULL_DEB=1; the other tests package with `build_deb.sh --quick`.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD_DEB = ROOT / "installers" / "linux" / "build_deb.sh"
DESKTOP_ENTRY = ROOT / "installers" / "linux" / "meshdesk.desktop"
HICOLOR_SIZES = (16, 32, 48, 64, 128, 256, 512)
NO_DPKG = shutil.which("dpkg-deb") is None
NO_SYSTEM_PYTHON = not Path("/usr/bin/python3.11").exists()


def briefcase_config() -> dict:
    return tomllib.loads((ROOT / "briefcase.toml").read_text(encoding="utf-8"))["tool"]["briefcase"]


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def requirement_name(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9._-]+", requirement.strip()).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


def stager():
    """installers/briefcase.py as a module (its name would shadow Briefcase's package)."""
    spec = importlib.util.spec_from_file_location("meshdesk_briefcase_stager",
                                                  ROOT / "installers" / "briefcase.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- briefcase.toml --------------------------------------------------------------------------

def test_briefcase_toml_describes_the_meshdesk_app():
    config = briefcase_config()
    assert config["bundle"] == "org.meshdesk"
    assert list(config["app"]) == ["meshdesk"]
    app = config["app"]["meshdesk"]
    assert app["formal_name"] == "MeshDesk"
    assert app["sources"] == ["meshdesk"]
    assert app["console_app"] is False
    assert len(app["description"]) <= 80 and app["long_description"].strip()
    assert app["icon"] == "resources/meshdesk"
    for license_file in config["license-files"]:
        assert (ROOT / license_file).is_file(), license_file


def test_briefcase_toml_has_a_section_for_each_platform():
    app = briefcase_config()["app"]["meshdesk"]
    assert app["macOS"]["app"]["packaging_format"] == "dmg"
    assert app["macOS"]["universal_build"] is False  # the RPC wheel is one architecture
    assert app["windows"]["app"]["packaging_format"] == "msi"
    assert app["windows"]["system_installer"] is False
    assert app["linux"]["system"]["debian"]["system_runtime_requires"]
    assert app["linux"]["appimage"]["manylinux"]


def test_briefcase_requires_are_pyprojects_dependencies():
    app = briefcase_config()["app"]["meshdesk"]
    dependencies = project()["dependencies"]
    assert sorted(map(requirement_name, app["requires"])) == sorted(map(requirement_name, dependencies))
    assert "llama-cpp-python==0.3.36" in app["requires"] and "llama-cpp-python==0.3.36" in dependencies


def test_briefcase_installs_llama_cpp_only_from_the_rpc_wheel():
    arguments = briefcase_config()["app"]["meshdesk"]["requirement_installer_args"]
    assert arguments[arguments.index("--find-links") + 1] == "wheels"
    assert arguments[arguments.index("--only-binary") + 1] == "llama-cpp-python"


def test_the_staged_pyproject_has_our_version_and_lists_each_requirement_once():
    module = stager()
    text = module.staged_pyproject()
    merged = tomllib.loads(text)
    assert merged["project"]["version"] == project()["version"]
    assert "version" not in merged["tool"]["briefcase"]  # Briefcase takes pyproject's
    assert "dependencies" not in merged["project"]
    assert merged["tool"]["briefcase"] == briefcase_config()
    assert merged["tool"]["setuptools"] == tomllib.loads(
        (ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]


def test_the_toml_writer_reads_back_what_it_wrote():
    module = stager()
    data = {"a": {"b": [1, "x\"y\n", True], "c d": {"e": {"f": "é"}}, "g": [{"h": ["i"]}]}}
    assert tomllib.loads(module.toml_text(data)) == data


def test_the_debian_runtime_libraries_are_the_debs():
    config_list = briefcase_config()["app"]["meshdesk"]["linux"]["system"]["debian"]["system_runtime_requires"]
    script = BUILD_DEB.read_text(encoding="utf-8")
    depends = re.search(r'DEPENDS="([^"]*)"', script).group(1)
    names = [part.strip().split(" ")[0] for part in depends.replace("\n", " ").split(",")]
    assert names[0] == "python3.11"
    assert names[1:] == config_list


# --- icons ---------------------------------------------------------------------------------------

def test_the_installer_icons_are_drawn_from_the_app_icon():
    for size in (*HICOLOR_SIZES, 1024):
        assert (ROOT / "resources" / f"meshdesk-{size}.png").is_file()
    assert (ROOT / "resources" / "meshdesk.ico").read_bytes()[:4] == b"\0\0\1\0"
    assert (ROOT / "resources" / "meshdesk.icns").read_bytes()[:4] == b"icns"
    check = subprocess.run([sys.executable, str(ROOT / "installers" / "icons.py"), "--check"],
                           capture_output=True, text=True, timeout=120,
                           env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert check.returncode == 0, check.stdout + check.stderr + "\nrun installers/icons.py"


# --- the desktop entry -------------------------------------------------------------------------

def desktop_entry(text: str) -> dict[str, str]:
    lines = [line for line in text.splitlines() if "=" in line]
    return dict(line.split("=", 1) for line in lines)


def test_the_desktop_entry_launches_meshdesk_and_opens_invite_links():
    entry = desktop_entry(DESKTOP_ENTRY.read_text(encoding="utf-8"))
    assert entry["Type"] == "Application" and entry["Name"] == "MeshDesk"
    assert entry["Exec"] == "meshdesk %u" and entry["Icon"] == "meshdesk"
    assert "Network;" in entry["Categories"]
    assert entry["MimeType"] == "x-scheme-handler/meshdesk;"


@pytest.mark.skipif(shutil.which("desktop-file-validate") is None,
                    reason="desktop-file-validate is not installed (apt install desktop-file-utils)")
def test_the_desktop_entry_validates():
    check = subprocess.run(["desktop-file-validate", str(DESKTOP_ENTRY)], capture_output=True, text=True)
    assert check.returncode == 0 and not check.stdout.strip(), check.stdout + check.stderr


def test_a_bare_invite_link_is_shown_not_joined(monkeypatch):
    """What the desktop entry's `%u` hands over, the link alone, is a link to show: joining
    waits for the user's confirmation (tests/test_desktop_links.py)."""
    from meshdesk.app import cli

    seen = {}

    class Recorder:
        def parse_args(self, argv):
            seen["argv"] = argv
            raise SystemExit(0)

    monkeypatch.setattr(cli, "build_parser", Recorder)
    with pytest.raises(SystemExit):
        cli.main(["meshdesk://join/ABC"])
    assert seen["argv"] == ["--open-link", "meshdesk://join/ABC"]
    with pytest.raises(SystemExit):
        cli.main(["--headless", "meshdesk://join/ABC", "--join", "meshdesk://join/DEF"])
    assert seen["argv"] == ["--headless", "--open-link", "meshdesk://join/ABC", "--join", "meshdesk://join/DEF"]


# --- the Debian package --------------------------------------------------------------------------

def build_deb(out: Path, *options: str, timeout: int) -> Path:
    result = subprocess.run(["bash", str(BUILD_DEB), *options, "--out", str(out)],
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    package = Path(result.stdout.strip().splitlines()[-1])
    assert package == out / f"meshdesk_{project()['version']}_amd64.deb" and package.is_file()
    return package


def control_fields(package: Path) -> dict[str, str]:
    text = subprocess.run(["dpkg-deb", "--field", str(package)], capture_output=True, text=True,
                          check=True).stdout
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith(" ") and fields:
            key = list(fields)[-1]
            fields[key] += "\n" + line
        else:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def package_files(package: Path) -> dict[str, str]:
    """Path -> its `ls -l` type and mode string, e.g. './usr/bin/meshdesk' -> 'lrwxrwxrwx'."""
    listing = subprocess.run(["dpkg-deb", "--contents", str(package)], capture_output=True,
                             text=True, check=True).stdout
    files = {}
    for line in listing.splitlines():
        mode, _owner, _size, _date, _time, path, *rest = line.split()
        files[path] = mode
    return files


@pytest.fixture(scope="module")
def quick_deb(tmp_path_factory) -> Path:
    if NO_DPKG:
        pytest.skip("dpkg-deb is not installed (a Debian or Ubuntu system has it)")
    return build_deb(tmp_path_factory.mktemp("deb"), "--quick", timeout=60)


def test_the_deb_control_file(quick_deb):
    fields = control_fields(quick_deb)
    assert fields["Package"] == "meshdesk"
    assert fields["Version"] == project()["version"]
    assert fields["Architecture"] == "amd64"
    assert fields["Section"] == "net"
    assert fields["Maintainer"] and fields["Description"].startswith("pool friends' computers")
    assert "\n" not in fields["Depends"]  # lintian: multiline-field
    assert all(len(line) <= 80 for line in fields["Description"].splitlines())
    depends = [part.strip() for part in fields["Depends"].split(",")]
    assert depends[0].startswith("python3.11")
    # What Qt's xcb plugin and llama.cpp load, and a bare Debian desktop may lack:
    assert {"libgomp1", "libxcb-cursor0", "libxcb-icccm4", "libxcb-keysyms1", "libxkbcommon-x11-0",
            "libegl1", "libgl1"} <= set(depends)


def test_the_deb_holds_the_launcher_desktop_entry_icons_and_copyright(quick_deb, tmp_path):
    files = package_files(quick_deb)
    assert files["./usr/bin/meshdesk"].startswith("l")
    assert files["./usr/share/applications/meshdesk.desktop"] == "-rw-r--r--"
    for size in HICOLOR_SIZES:
        assert files[f"./usr/share/icons/hicolor/{size}x{size}/apps/meshdesk.png"] == "-rw-r--r--"
    assert "./usr/share/doc/meshdesk/copyright" in files
    assert "./usr/share/doc/meshdesk/changelog.gz" in files
    assert "./opt/meshdesk/" in files
    # --quick leaves out only the virtual environment
    assert not [path for path in files if path.startswith("./opt/meshdesk/venv")]

    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", str(quick_deb), str(root)], check=True)
    assert os.readlink(root / "usr/bin/meshdesk") == "/opt/meshdesk/venv/bin/meshdesk"
    assert (root / "usr/share/applications/meshdesk.desktop").read_bytes() == DESKTOP_ENTRY.read_bytes()
    assert (root / "usr/share/icons/hicolor/256x256/apps/meshdesk.png").read_bytes() == \
        (ROOT / "resources" / "meshdesk.png").read_bytes()
    assert "License: MIT" in (root / "usr/share/doc/meshdesk/copyright").read_text()


def test_the_deb_removal_clears_opt_meshdesk(quick_deb, tmp_path):
    control = tmp_path / "control"
    subprocess.run(["dpkg-deb", "-e", str(quick_deb), str(control)], check=True)
    postrm = control / "postrm"
    assert os.access(postrm, os.X_OK)
    assert "rm -rf /opt/meshdesk" in postrm.read_text()
    assert not (control / "postinst").exists()  # dpkg triggers update icon and menu caches


@pytest.mark.skipif(os.environ.get("MESHDESK_TEST_FULL_DEB") != "1",
                    reason="the full .deb takes minutes: set MESHDESK_TEST_FULL_DEB=1")
@pytest.mark.skipif(NO_DPKG or NO_SYSTEM_PYTHON, reason="needs dpkg-deb and /usr/bin/python3.11")
def test_the_full_deb_runs_meshdesk_from_its_virtual_environment(tmp_path):
    package = build_deb(tmp_path / "dist", timeout=1200)
    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", str(package), str(root)], check=True)
    venv = root / "opt/meshdesk/venv"
    assert (venv / "bin/meshdesk").read_text().startswith("#!/opt/meshdesk/venv/bin/python\n")
    assert "/opt/meshdesk/venv" in (venv / "pyvenv.cfg").read_text()
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "QT_QPA_PLATFORM": "offscreen"}
    # The extracted tree is not at /opt, so run its script with its own interpreter.
    run = [str(venv / "bin/python"), str(venv / "bin/meshdesk")]
    version = subprocess.run([*run, "--version"], capture_output=True, text=True, env=environment)
    assert version.stdout.strip() == f"meshdesk {project()['version']}", version.stderr
    assert subprocess.run([*run, "--help"], capture_output=True, env=environment).returncode == 0
    rpc = subprocess.run([str(venv / "bin/python"), "-c",
                          "import llama_cpp; print(llama_cpp.llama_supports_rpc())"],
                         capture_output=True, text=True, env=environment)
    assert rpc.stdout.strip() == "True", rpc.stderr
