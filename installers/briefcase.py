"""Run Briefcase on MeshDesk with the configuration in briefcase.toml.

Briefcase reads its configuration only from `pyproject.toml`'s `[tool.briefcase]`, in the
directory it runs in. MeshDesk keeps that table in `briefcase.toml`, so this script stages a
copy of the project in `build/briefcase/` whose pyproject.toml is ours plus briefcase.toml,
puts the RPC-enabled llama-cpp-python wheel into its `wheels/` folder, and runs Briefcase
there with a Briefcase of its own (a virtual environment in the user's cache). Installers
land in `dist/`.

    python installers/briefcase.py                        # create, build, package: this OS
    python installers/briefcase.py package macOS app -- --adhoc-sign
    python installers/briefcase.py create linux system    # one Briefcase command
    python installers/briefcase.py stage                  # only write build/briefcase/

Any Python 3.11+ runs it. Options:
    --llama-wheel PATH   the llama-cpp-python wheel built with -DGGML_RPC=ON (default:
                         $MESHDESK_LLAMA_WHEEL, else `scripts/llama_wheel.sh` on Linux;
                         installers/macos/build.sh and installers/windows/build.ps1 build
                         and pass the macOS and Windows ones)
    --no-llama-wheel     stage without it (configuration checks; pip then finds no wheel)
    --briefcase PATH     a briefcase executable to use instead of the cached one
    --template PATH      a local copy of Briefcase's app template (its git clone from GitHub
                         otherwise), e.g. ~/.cache/meshdesk/briefcase-template

On Linux, `briefcase ... linux system` insists on running under the system's /usr/bin/python3,
so the cached Briefcase there is installed into a virtual environment of that interpreter.
See docs/installers.md for what each platform needs and what Briefcase downloads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGE = ROOT / "build" / "briefcase"
BRIEFCASE_VERSION = "0.4.7"
COMMANDS = ("create", "update", "build", "package", "run", "open", "upgrade", "dev", "all", "stage")
PLATFORMS = {"Linux": ("linux", "system"), "Darwin": ("macOS", "app"), "Windows": ("windows", "app")}
# What a Briefcase app needs from the checkout, besides the generated pyproject.toml.
COPIED = ("meshdesk", "resources", "LICENSE", "README.md")


# --- pyproject.toml + briefcase.toml --------------------------------------------------------

def merged_config(pyproject: dict, briefcase: dict) -> dict:
    """pyproject.toml with briefcase.toml's [tool.briefcase] added.

    [project].dependencies is dropped: briefcase.toml's `requires` repeats it, and Briefcase
    would otherwise list every dependency twice (it adds the two lists together)."""
    if set(briefcase) != {"tool"} or set(briefcase["tool"]) != {"briefcase"}:
        raise SystemExit("briefcase.toml must hold only the [tool.briefcase] table")
    merged = json.loads(json.dumps(pyproject))  # a deep copy of plain TOML data
    merged.setdefault("tool", {})["briefcase"] = briefcase["tool"]["briefcase"]
    merged.get("project", {}).pop("dependencies", None)
    return merged


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def toml_text(data: dict) -> str:
    """TOML for plain data (what tomllib returns, without dates): tables as [headers]."""
    lines: list[str] = []

    def table(path: list[str], mapping: dict) -> None:
        scalars = {k: v for k, v in mapping.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in mapping.items() if isinstance(v, dict)}
        if path and (scalars or not tables):
            lines.append(f"\n[{'.'.join(_key(part) for part in path)}]")
        lines.extend(f"{_key(k)} = {_value(v)}" for k, v in scalars.items())
        for name, sub in tables.items():
            table(path + [name], sub)

    table([], data)
    return "\n".join(lines).lstrip("\n") + "\n"


def staged_pyproject() -> str:
    with open(ROOT / "pyproject.toml", "rb") as f:
        pyproject = tomllib.load(f)
    with open(ROOT / "briefcase.toml", "rb") as f:
        briefcase = tomllib.load(f)
    merged = merged_config(pyproject, briefcase)
    text = toml_text(merged)
    if tomllib.loads(text) != merged:  # the writer above is small; prove it on every run
        raise SystemExit("internal error: the staged pyproject.toml does not read back the same")
    return "# Generated by installers/briefcase.py from pyproject.toml and briefcase.toml.\n" + text


def stage(llama_wheel: Path | None) -> Path:
    """Write build/briefcase/: the sources, resources, generated pyproject.toml and wheels/.
    Briefcase's own build/ and dist/ folders in there are kept between runs."""
    STAGE.mkdir(parents=True, exist_ok=True)
    for relative in COPIED:
        source, target = ROOT / relative, STAGE / relative
        if target.is_dir():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, target)
    (STAGE / "pyproject.toml").write_text(staged_pyproject(), encoding="utf-8")
    # Briefcase's `build linux system` wants a changelog beside pyproject.toml for the package.
    shutil.copy2(ROOT / "installers" / "CHANGELOG.md", STAGE / "CHANGELOG.md")
    wheels = STAGE / "wheels"
    if wheels.exists():
        shutil.rmtree(wheels)
    wheels.mkdir()
    if llama_wheel is not None:
        shutil.copy2(llama_wheel, wheels / llama_wheel.name)
    return STAGE


# --- tools ------------------------------------------------------------------------------------

def cache_home() -> Path:
    if os.name == "nt":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))


def briefcase_python() -> str:
    """The interpreter Briefcase must run under: the system python3 on Linux (`linux system`
    checks that), this one elsewhere."""
    if platform.system() == "Linux" and Path("/usr/bin/python3").exists():
        return "/usr/bin/python3"
    return sys.executable


def briefcase_executable() -> Path:
    """A Briefcase of the pinned version, installed once into a cached virtual environment."""
    base = briefcase_python()
    version = subprocess.run([base, "-c", "import platform; print(platform.python_version())"],
                             check=True, capture_output=True, text=True).stdout.strip()
    venv = cache_home() / "meshdesk" / f"briefcase-{BRIEFCASE_VERSION}-py{version}"
    scripts = venv / ("Scripts" if os.name == "nt" else "bin")
    executable = scripts / ("briefcase.exe" if os.name == "nt" else "briefcase")
    if not executable.exists():
        print(f"Installing Briefcase {BRIEFCASE_VERSION} into {venv} ...", file=sys.stderr)
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
        python = scripts / ("python.exe" if os.name == "nt" else "python")
        subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                        f"briefcase=={BRIEFCASE_VERSION}"], check=True)
    return executable


def find_llama_wheel(explicit: str | None) -> Path:
    chosen = explicit or os.environ.get("MESHDESK_LLAMA_WHEEL")
    if not chosen:
        if platform.system() != "Linux":
            script = "installers/windows/build.ps1" if os.name == "nt" else "installers/macos/build.sh"
            raise SystemExit(f"No llama-cpp-python wheel: run {script} (it builds one with "
                             "-DGGML_RPC=ON) or pass --llama-wheel PATH")
        # scripts/llama_wheel.sh: RPC with portable x86-64 flags, cached per machine.
        chosen = subprocess.run(["bash", str(ROOT / "scripts" / "llama_wheel.sh"), sys.executable],
                                check=True, stdout=subprocess.PIPE, text=True).stdout.strip()
    wheel = Path(chosen)
    if not (wheel.is_file() and wheel.name.startswith("llama_cpp_python-")
            and wheel.suffix == ".whl"):
        raise SystemExit(f"not a llama-cpp-python wheel: {wheel}")
    return wheel


# --- main -------------------------------------------------------------------------------------

def main(argv: list[str]) -> int:
    argv, extra = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    default_platform, default_format = PLATFORMS.get(platform.system(), ("linux", "system"))
    parser = argparse.ArgumentParser(prog="installers/briefcase.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", default="all", choices=COMMANDS)
    parser.add_argument("platform", nargs="?", default=default_platform)
    parser.add_argument("format", nargs="?", default=None)
    parser.add_argument("--llama-wheel")
    parser.add_argument("--no-llama-wheel", action="store_true")
    parser.add_argument("--briefcase")
    parser.add_argument("--template")
    options = parser.parse_args(argv)
    output_format = options.format or (default_format if options.platform == default_platform
                                       else {"linux": "system", "macOS": "app",
                                             "windows": "app"}.get(options.platform))

    wheel = None if options.no_llama_wheel or options.command in ("stage", "dev") \
        else find_llama_wheel(options.llama_wheel)
    staged = stage(wheel)
    print(f"Staged the Briefcase project in {staged}", file=sys.stderr)
    if options.command == "stage":
        return 0

    briefcase = options.briefcase or str(briefcase_executable())
    if options.command in ("all", "create"):
        # Start from a fresh bundle (with --no-input Briefcase would keep an old one and stop).
        bundles = staged / "build" / "meshdesk"
        if bundles.exists():
            shutil.rmtree(bundles)
    if options.command == "all":
        # `package` creates and builds what is missing.
        command = [briefcase, "package", options.platform, output_format, *extra]
    elif options.command in ("dev", "upgrade"):
        command = [briefcase, options.command, *extra]
    else:
        command = [briefcase, options.command, options.platform, output_format, *extra]
    if options.template:
        if not (Path(options.template) / "cookiecutter.json").is_file():
            raise SystemExit(f"not a Briefcase template (no cookiecutter.json): {options.template}")
        command += ["-C", f"template={json.dumps(str(Path(options.template).resolve()))}"]
    print("+ (cd build/briefcase && " + " ".join(command) + ")", file=sys.stderr)
    # dpkg-deb's default, xz -6, takes over 15 minutes for the ~800 MB app on 2 cores; level 3
    # (as installers/linux/build_deb.sh) is a few times quicker and about 10% larger.
    environment = {"DPKG_DEB_COMPRESSOR_LEVEL": "3", **os.environ}
    result = subprocess.run(command, cwd=staged, env=environment)
    if result.returncode == 0 and (staged / "dist").is_dir():
        (ROOT / "dist").mkdir(exist_ok=True)
        for built in (staged / "dist").iterdir():
            shutil.copy2(built, ROOT / "dist" / built.name)
            print(f"dist/{built.name}", file=sys.stderr)
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
