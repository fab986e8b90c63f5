"""Runs Briefcase for this platform with the configuration in briefcase.toml.

Briefcase reads [tool.briefcase] from pyproject.toml only; ours lives in briefcase.toml so that
the development project stays small. This script copies the project to a build folder, merges
briefcase.toml into that copy's pyproject.toml, points pip at the RPC-enabled llama-cpp-python
wheel, and runs `briefcase create`, `build` and `package` there.

    python installers/briefcase_build.py [--format dmg|msi|appimage|deb|rpm] [--dry-run]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("meshdesk", "resources", "tests", "LICENSE", "README.md", "pyproject.toml")


def merged_pyproject() -> str:
    """pyproject.toml with briefcase.toml's [tool.briefcase] appended."""
    tomllib.loads((ROOT / "briefcase.toml").read_text())  # fail early on a broken file
    return (ROOT / "pyproject.toml").read_text() + "\n" + (ROOT / "briefcase.toml").read_text()


def prepare(build: Path) -> None:
    if build.exists():
        shutil.rmtree(build)
    build.mkdir(parents=True)
    for name in COPIED:
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, build / name)
    (build / "pyproject.toml").write_text(merged_pyproject())


def commands(package_format: str | None) -> list[list[str]]:
    package = ["briefcase", "package"] + (["--adhoc-sign"] if sys.platform == "darwin" else [])
    if package_format:
        package += ["-p", package_format]
    return [["briefcase", "create"], ["briefcase", "build"], package]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", help="package format (default: Briefcase's for this platform)")
    parser.add_argument("--wheels", type=Path, default=Path.home() / ".cache" / "meshdesk" / "wheels",
                        help="folder with the RPC-enabled llama-cpp-python wheel (scripts/llama_wheel.sh)")
    parser.add_argument("--dry-run", action="store_true", help="prepare the build folder and print the commands")
    arguments = parser.parse_args()
    build = ROOT / "build" / "briefcase"
    prepare(build)
    environment = dict(os.environ)
    links = [str(path) for path in arguments.wheels.glob("*") if path.is_dir()]
    environment["PIP_FIND_LINKS"] = " ".join(links)
    for command in commands(arguments.format):
        print("+", " ".join(command), flush=True)
        if not arguments.dry_run:
            subprocess.run(command, cwd=build, env=environment, check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
