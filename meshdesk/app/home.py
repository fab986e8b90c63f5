"""The home folder: where a node keeps its config, models, identity and logs."""

from __future__ import annotations

import json
import logging
import logging.handlers
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


SETTINGS_FILE = "settings.json"


def saved_node_name(home: Home) -> str | None:
    try:
        name = json.loads((home.root / SETTINGS_FILE).read_text()).get("name")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) and name.strip() else None


def save_node_name(home: Home, name: str) -> None:
    path = home.root / SETTINGS_FILE
    try:
        settings = json.loads(path.read_text())
        settings = settings if isinstance(settings, dict) else {}
    except (OSError, ValueError):
        settings = {}
    settings["name"] = name
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(settings, indent=1))
    os.replace(temporary, path)


LOG_FILE_BYTES = 5 * 1024 * 1024  # then meshdesk.log becomes meshdesk.log.1, and so on
LOG_FILES_KEPT = 3                # at most 20 MiB of logs in all


class OneLineMessages(logging.Filter):
    """Shows control characters in a message as escapes, so no text that came from a peer can
    start a forged log line or drive a terminal (tracebacks, added after, keep their lines)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.isprintable():
            record.msg = "".join(char if char.isprintable() else repr(char)[1:-1] for char in message)
            record.args = None
        return True


def configure_logging(home: Home, verbose: bool = False, max_bytes: int = LOG_FILE_BYTES,
                      backups: int = LOG_FILES_KEPT) -> None:
    """Everything to the home's log file, which rotates; warnings (or everything when verbose)
    to stderr."""
    file_handler = logging.handlers.RotatingFileHandler(
        home.logs / "meshdesk.log", maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    console = logging.StreamHandler()
    console.setLevel(logging.INFO if verbose else logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    for handler in (file_handler, console):
        handler.addFilter(OneLineMessages())
    root = logging.getLogger()
    root.handlers[:] = [file_handler, console]
    root.setLevel(logging.INFO)
