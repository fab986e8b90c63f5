"""A real Briefcase Linux system package: built from the local template, installed with apt,
started under Xvfb, and asked for a chat completion by its node (docs/installers.md).

It needs what CI does not have: Briefcase's template fetched into ~/.cache/meshdesk/briefcase-template
(or $MESHDESK_BRIEFCASE_TEMPLATE), the RPC llama wheel that `make setup` caches, root and
apt-get, Xvfb, the app's runtime libraries (briefcase.toml), and a machine where no other `meshdesk` package is installed. Each absence skips
with its reason. The package is removed at the end, whatever happened.
MESHDESK_BRIEFCASE_DEB=<path> installs and runs a .deb built already, skipping the build.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from tests.nodes import NodeProcess, poll

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = Path(os.environ.get("MESHDESK_BRIEFCASE_TEMPLATE",
                               Path.home() / ".cache" / "meshdesk" / "briefcase-template"))
WHEELS = Path.home() / ".cache" / "meshdesk" / "wheels"
LAUNCHER = Path("/usr/bin/meshdesk")
APP = Path("/usr/lib/meshdesk/app")
BUILD_SECONDS = 1200
ANSWER_SECONDS = 180


def llama_wheel() -> Path | None:
    wheels = sorted(WHEELS.glob("*/llama_cpp_python-*.whl"))
    return wheels[-1] if wheels else None


def package_installed(name: str) -> bool:
    result = subprocess.run(["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True)
    return "install ok installed" in result.stdout


def runtime_libraries() -> list[str]:
    config = tomllib.loads((ROOT / "briefcase.toml").read_text(encoding="utf-8"))
    return config["tool"]["briefcase"]["app"]["meshdesk"]["linux"]["system"]["debian"]["system_runtime_requires"]


def missing_prerequisite() -> str | None:
    if not sys.platform.startswith("linux"):
        return "Briefcase builds Linux system packages on Linux only"
    if not (TEMPLATE / "cookiecutter.json").is_file():
        return (f"no Briefcase template at {TEMPLATE}: fetch github:beeware/briefcase-linux-system-template "
                "and unpack a branch there (docs/installers.md)")
    if llama_wheel() is None:
        return f"no RPC llama-cpp-python wheel in {WHEELS} (make setup builds it)"
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        return "needs apt-get and dpkg-deb (a Debian-like system)"
    if os.geteuid() != 0:
        return "needs root to install the package with apt-get"
    if shutil.which("Xvfb") is None:
        return "needs Xvfb (apt-get install xvfb)"
    if not Path("/usr/bin/python3").exists():
        return "Briefcase's linux system format needs the system /usr/bin/python3"
    missing = [name for name in runtime_libraries() if not package_installed(name)]
    if missing:  # Briefcase refuses to build without them
        return f"briefcase create needs the app's runtime libraries: apt-get install {' '.join(missing)}"
    if package_installed("meshdesk"):
        return "a meshdesk package is installed already; this test would replace and remove it"
    return None


@pytest.fixture
def xvfb():
    """An Xvfb server on a display number it picks itself (-displayfd): the DISPLAY value."""
    read, write = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-nolisten", "tcp", "-screen", "0", "1280x800x24"],
                              pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as announced:
        display = announced.readline().strip()
    try:
        assert display, "Xvfb printed no display number"
        yield f":{display}"
    finally:
        server.terminate()
        server.wait(10)


def build_package() -> tuple[Path, float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(ROOT / "installers" / "briefcase.py"), "all", "linux", "system",
         "--llama-wheel", str(llama_wheel()), "--template", str(TEMPLATE), "--", "--no-input"],
        cwd=ROOT, capture_output=True, text=True, timeout=BUILD_SECONDS)
    assert result.returncode == 0, result.stderr[-4000:] + result.stdout[-4000:]
    [deb] = [ROOT / "dist" / line.removeprefix("dist/") for line in result.stderr.splitlines()
             if line.startswith("dist/meshdesk") and line.endswith(".deb")]
    return deb, time.monotonic() - started


def apt_get(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(["apt-get", "-y", "-q", *arguments], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def children_of(pid: int) -> list[list[str]]:
    """The command lines of a process's children, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append((entry / "cmdline").read_bytes().decode().split("\0")[:-1])
        except (OSError, ValueError, IndexError):
            continue  # a process that ended while being read
    return found


@pytest.mark.timeout(BUILD_SECONDS + 3 * ANSWER_SECONDS + 600)  # a build, an install, a start and a removal
def test_the_briefcase_deb_installs_starts_under_xvfb_and_answers_a_chat(tmp_path, request):
    reason = missing_prerequisite()
    if reason:
        pytest.skip(reason)
    display = request.getfixturevalue("xvfb")
    prebuilt = os.environ.get("MESHDESK_BRIEFCASE_DEB")  # a .deb built already: only install and run it
    deb, build_seconds = (Path(prebuilt), 0.0) if prebuilt else build_package()
    installed = apt_get("install", str(deb))
    try:
        assert installed.returncode == 0, installed.stderr[-4000:]
        assert (APP / "meshdesk-0.1.0.dist-info" / "INSTALLER").read_text().strip() == "briefcase"
        version = subprocess.run([str(LAUNCHER), "--version"], capture_output=True, text=True, timeout=60)
        assert version.returncode == 0 and "meshdesk 0.1.0" in version.stdout
        started = time.monotonic()
        node = NodeProcess(subprocess.Popen(
            [str(LAUNCHER), "--home", str(tmp_path / "home"), "--port", "0", "--bind-host", "127.0.0.1"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb", "PYTHONUNBUFFERED": "1",
                 "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}), tmp_path / "home")
        try:
            node.wait_until_ready(ANSWER_SECONDS)
            [model] = [entry["id"] for entry in node.get_json("/v1/models")["data"]]
            status, answer = node.post_json("/v1/chat/completions", {
                "model": model, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 16, "temperature": 0},
                timeout=ANSWER_SECONDS)
            first_answer_seconds = time.monotonic() - started
            assert status == 200, answer
            assert answer["choices"][0]["message"]["content"].strip()
            # Its model host runs through the bundle's launcher, not `python -m`.
            hosts = poll(lambda: [c for c in children_of(node.process.pid) if "meshdesk.adapters.llama.host" in c],
                         10, message="the model host child")
            assert hosts[0][:3] == [str(LAUNCHER), "--child", "meshdesk.adapters.llama.host"]
        finally:
            node.stop()
        print(f"\nbuild {build_seconds:.0f} s, .deb {deb.stat().st_size / 1e6:.0f} MB, "
              f"first answer {first_answer_seconds:.1f} s after start")
    finally:
        removed = apt_get("remove", "meshdesk")
        assert removed.returncode == 0 and not LAUNCHER.exists(), removed.stderr[-2000:]
