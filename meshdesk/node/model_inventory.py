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
from pathlib import Path

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
    def __init__(self, home: Path, folders: list[Path]):
        self.cache_path = home / CACHE_FILE
        self.folders = folders
        self.cache = self._load_cache()
        self.models: list[dict] = []

    def _load_cache(self) -> dict[str, str]:
        try:
            stored = json.loads(self.cache_path.read_text())
        except (OSError, ValueError):
            return {}
        return stored if isinstance(stored, dict) else {}

    def files(self) -> list[Path]:
        found = {}
        for folder in self.folders:
            if folder.is_dir():
                for path in sorted(folder.glob("*.gguf")):
                    found.setdefault(path.name, path)
        return list(found.values())

    def scan(self) -> list[dict]:
        """Hashes what is new; blocking, so run it in a thread."""
        models = []
        for path in self.files():
            try:
                key = cache_key(path)
                digest = self.cache.get(key) or file_digest(path)
            except OSError as error:
                log.warning("cannot read %s: %s", path, error)
                continue
            self.cache[key] = digest
            models.append({"name": path.name, "size": path.stat().st_size, "digest": digest})
        self._save_cache()
        self.models = models
        return models

    async def scan_in_background(self) -> list[dict]:
        return await asyncio.to_thread(self.scan)

    def _save_cache(self) -> None:
        temporary = self.cache_path.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps(self.cache))
            os.replace(temporary, self.cache_path)
        except OSError as error:
            log.warning("cannot save digest cache: %s", error)
