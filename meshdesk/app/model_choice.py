"""Turning `--model PATH|NAME` into a validated model file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from meshdesk.adapters import bundled_model
from meshdesk.adapters.gguf_metadata import ModelFileError, ModelFileInfo, read_model_info


class ModelChoiceError(Exception):
    """One line telling the user why that model cannot be used."""


@dataclass(frozen=True)
class ChosenModel:
    id: str
    path: Path
    aliases: tuple[str, ...]
    info: ModelFileInfo


def model_folders(models_folder: Path) -> list[Path]:
    return [models_folder, Path.home() / ".models"]


def looks_like_path(choice: str) -> bool:
    return choice.endswith(".gguf") or "/" in choice or "\\" in choice or Path(choice).exists()


def find_by_name(name: str, folders: list[Path]) -> Path | None:
    wanted = name.lower().removesuffix(".gguf")
    for folder in folders:
        for candidate in sorted(folder.glob("*.gguf")) if folder.is_dir() else []:
            if candidate.stem.lower() == wanted:
                return candidate
    return None


def locate(choice: str | None, models_folder: Path) -> tuple[Path, tuple[str, ...]]:
    if choice is None or choice.lower() in bundled_model.NAMES:
        return bundled_model.install_bundled_model(models_folder), bundled_model.NAMES
    if looks_like_path(choice):
        return Path(choice).expanduser(), (choice,)
    found = find_by_name(choice, model_folders(models_folder))
    if found is None:
        folders = " or ".join(str(folder) for folder in model_folders(models_folder))
        raise ModelChoiceError(f"unknown model '{choice}': not a file, and no {choice}.gguf in {folders}")
    return found, (choice,)


def choose_model(choice: str | None, models_folder: Path) -> ChosenModel:
    path, aliases = locate(choice, models_folder)
    try:
        info = read_model_info(path)
    except ModelFileError as error:
        raise ModelChoiceError(str(error)) from None
    return ChosenModel(id=path.stem, path=path.resolve(), aliases=aliases, info=info)
