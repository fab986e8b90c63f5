"""The GGUF files a node has on disk, with SHA-256 digests cached by path, size and mtime.

Peers compare digests to know they hold the same file (the split runtime then sends weights
by reference). Hashing a 40 GB file takes minutes, so it happens once, off the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from meshdesk.core.model_advert import ModelAdvert

log = logging.getLogger(__name__)

CACHE_FILE = "digests.json"
CHUNK = 4 * 1024 * 1024


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def cache_key(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


class ModelInventory:
    """Entries (`models`): name, size, digest, layers, context_length, kv_bytes_per_token, path.
    What the mesh learns of them is `public_models()`, adverts without the path: the path never
    leaves this node."""

    def __init__(self, home: Path, folders: list[Path], extra_files: list[Path],
                 describe: Callable[[Path], dict]):
        self.cache_path = home / CACHE_FILE
        self.folders = folders
        self.extra_files = extra_files
        # e.g. {"layers": 18, "context_length": 32768, "kv_bytes_per_token": 18432}; raises for
        # an unusable file; a key it leaves out means the file does not say
        self.describe = describe
        self.cache = self._load_cache()
        self.models: list[dict] = []

    def _load_cache(self) -> dict[str, str]:
        try:
            stored = json.loads(self.cache_path.read_text())
        except (OSError, ValueError):
            return {}
        return stored if isinstance(stored, dict) else {}

    def files(self) -> list[Path]:
        found = {path.name: path for path in self.extra_files}
        for folder in self.folders:
            if folder.is_dir():
                for path in sorted(folder.glob("*.gguf")):
                    found.setdefault(path.name, path)
        return list(found.values())

    def scan(self) -> list[dict]:
        """Hashes what is new; blocking, so run it in a thread."""
        models = [entry for entry in map(self._entry, self.files()) if entry is not None]
        self._save_cache()
        self.models = models
        return models

    def _entry(self, path: Path) -> dict | None:
        try:
            details = self.describe(path)
            key = cache_key(path)
            digest = self.cache.get(key) or file_digest(path)
            advert = ModelAdvert(path.name, path.stat().st_size, digest, details.get("layers"),
                                 context_length=details.get("context_length"),
                                 kv_bytes_per_token=details.get("kv_bytes_per_token"))
        except Exception as error:  # an unusable file (or one no advert can describe) is skipped, never fatal
            log.warning("skipping model file %s: %s", path, error)
            return None
        self.cache[key] = digest
        return {"name": advert.name, "size": advert.size, "digest": advert.digest, "layers": advert.layers,
                "context_length": advert.context_length, "kv_bytes_per_token": advert.kv_bytes_per_token,
                "path": str(path)}

    def public_models(self) -> tuple[ModelAdvert, ...]:
        """What this node tells the mesh about its files (not yet asking it to serve any)."""
        return tuple(ModelAdvert(model["name"], model["size"], model["digest"], model["layers"],
                                 context_length=model.get("context_length"),
                                 kv_bytes_per_token=model.get("kv_bytes_per_token"))
                     for model in self.models)

    def path_for_digest(self, digest: str) -> Path | None:
        return next((Path(model["path"]) for model in self.models if model["digest"] == digest), None)

    def digest_of(self, path: Path) -> str | None:
        wanted = str(path)
        return next((model["digest"] for model in self.models if model["path"] == wanted), None)

    async def scan_in_background(self) -> list[dict]:
        return await asyncio.to_thread(self.scan)

    def _save_cache(self) -> None:
        temporary = self.cache_path.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps(self.cache))
            os.replace(temporary, self.cache_path)
        except OSError as error:
            log.warning("cannot save digest cache: %s", error)
