"""Whether this home has answered the first run's question (start a mesh, or join a friend's).

The answer is a small JSON file in the home, `first-run.json`, written atomically (a temporary
file, then a rename). It exists only once a choice was made, so a file that cannot be read
(corrupt, or written by something else) still counts as chosen: the window then opens on the
chat as it would have, rather than asking a user whose mesh already runs to start again.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

FILE_NAME = "first-run.json"
CHOICES = ("start", "join")

log = logging.getLogger(__name__)


def choice_made(home: Path) -> bool:
    path = Path(home) / FILE_NAME
    if not path.exists():
        return False
    try:
        choice = json.loads(path.read_text()).get("choice")
    except (OSError, ValueError, AttributeError, RecursionError) as error:  # deep nesting: RecursionError
        log.warning("%s cannot be read (%s); taking the first run as done", path, error)
        return True
    if choice not in CHOICES:
        log.warning("%s holds no known choice; taking the first run as done", path)
    return True


def remember_choice(home: Path, choice: str) -> None:
    """Raises ValueError for an unknown choice, OSError when the home cannot be written."""
    if choice not in CHOICES:
        raise ValueError(f"unknown first-run choice {choice!r}")
    path = Path(home) / FILE_NAME
    temporary = path.with_name(FILE_NAME + ".tmp")
    with open(temporary, "w", encoding="utf-8") as file:
        json.dump({"choice": choice, "at": round(time.time())}, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
