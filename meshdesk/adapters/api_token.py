"""The node's local API secret: a random token in HOME/api-token, readable by its owner only.

The node makes it at start when it is missing (or unusable) and keeps it across restarts; the
command line reads it to drive the running node. Another local user, or a web page, cannot
read the file, so cannot use the management routes.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from pathlib import Path

from meshdesk.core.local_api_policy import TOKEN_FILE_NAME

_USABLE = re.compile(r"[\x21-\x7e]{16,256}")


def token_path(home: Path) -> Path:
    return home / TOKEN_FILE_NAME


def read_token(home: Path) -> str | None:
    """The token in the home, or None when there is no usable one."""
    try:
        text = token_path(home).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if _USABLE.fullmatch(text) else None


def load_or_create_token(home: Path) -> str:
    """The home's token, made now when absent; a file others could read is narrowed to 0600."""
    path = token_path(home)
    token = read_token(home)
    if token is not None:
        if os.name == "posix" and stat.S_IMODE(path.stat().st_mode) & 0o077:
            os.chmod(path, 0o600)
        return token
    token = secrets.token_urlsafe(32)
    temporary = path.with_name(f".{TOKEN_FILE_NAME}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if os.name == "posix":
            os.fchmod(descriptor, 0o600)  # a stale temporary file keeps its old mode otherwise
        os.write(descriptor, f"{token}\n".encode("ascii"))
    finally:
        os.close(descriptor)
    os.replace(temporary, path)
    return token
