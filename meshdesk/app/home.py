"""The home folder: where a node keeps its config, models, identity and logs."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import platformdirs

@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def prepare(self) -> None:
        for folder in (self.root, self.models, self.logs):
            folder.mkdir(parents=True, exist_ok=True)


def default_home() -> Path:
    override = os.environ.get("MESHDESK_HOME")
    return Path(override) if override else Path(platformdirs.user_data_dir("MeshDesk"))


def default_node_name() -> str:
    return socket.gethostname().split(".")[0] or "meshdesk"


def configure_logging(home: Home, verbose: bool = False) -> None:
    """Everything to the home's log file; warnings (or everything when verbose) to stderr."""
    file_handler = logging.FileHandler(home.logs / "meshdesk.log", encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    console = logging.StreamHandler()
    console.setLevel(logging.INFO if verbose else logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [file_handler, console]
    root.setLevel(logging.INFO)
