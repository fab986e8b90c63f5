"""Node secrets in the OS keyring (keyring), or in a 0600 file where no keyring works."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
from pathlib import Path

import keyring
import keyring.errors

log = logging.getLogger(__name__)

SERVICE = "MeshDesk"
FALLBACK_FILE = "secrets.json"


class KeyringSecrets:
    """Secrets of one home folder, in the keyring under names unique to that folder."""

    def __init__(self, home: Path):
        self.prefix = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:16]
        self.backend = f"keyring ({type(keyring.get_keyring()).__name__})"
        self.warning = None

    def get(self, name: str) -> bytes | None:
        value = keyring.get_password(SERVICE, f"{self.prefix}/{name}")
        return None if value is None else decode_secret(value, f"{self.backend}: {name}")

    def set(self, name: str, value: bytes) -> None:
        keyring.set_password(SERVICE, f"{self.prefix}/{name}", base64.b64encode(value).decode())


class FileSecrets:
    """A JSON file readable by its owner only; written atomically."""

    def __init__(self, home: Path, warning: str | None = None):
        self.path = home / FALLBACK_FILE
        self.backend = f"file ({self.path})"
        self.warning = warning

    def read_all(self) -> dict[str, str]:
        try:
            stored = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            raise OSError(f"cannot read {self.path}: {error}") from None
        if not isinstance(stored, dict):
            raise OSError(f"cannot read {self.path}: it holds no JSON object")
        return stored

    def get(self, name: str) -> bytes | None:
        value = self.read_all().get(name)
        return None if value is None else decode_secret(value, f"{self.path}: {name}")

    def set(self, name: str, value: bytes) -> None:
        stored = self.read_all()
        stored[name] = base64.b64encode(value).decode()
        temporary = self.path.with_suffix(".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            json.dump(stored, file)
        os.replace(temporary, self.path)


def decode_secret(value: object, where: str) -> bytes:
    """A stored secret's bytes; OSError (not a crash elsewhere) when the stored text is damaged."""
    try:
        if isinstance(value, str):
            return base64.b64decode(value, validate=True)
    except binascii.Error:
        pass
    raise OSError(f"cannot read {where}: the stored value is not base64 text")


def is_os_keyring(backend) -> bool:
    """Backends keyring itself rates below 1 (plaintext files, the `fail` stub) are not an OS
    keyring; they count only when the user chose one with PYTHON_KEYRING_BACKEND."""
    if os.environ.get("PYTHON_KEYRING_BACKEND"):
        return True
    try:
        return float(backend.priority) >= 1
    except Exception:  # a backend whose priority cannot even be asked is not one to trust
        return False


def keyring_works() -> bool:
    """True when an OS keyring stores and reads back a value (not so on a headless Linux box)."""
    if not is_os_keyring(keyring.get_keyring()):
        return False
    try:
        probe = f"probe-{os.getpid()}"
        keyring.set_password(SERVICE, probe, "ok")
        works = keyring.get_password(SERVICE, probe) == "ok"
        keyring.delete_password(SERVICE, probe)
        return works
    except (keyring.errors.KeyringError, RuntimeError, OSError):
        return False


def open_secret_store(home: Path):
    if keyring_works():
        return KeyringSecrets(home)
    warning = (f"no working OS keyring; node secrets are kept in {home / FALLBACK_FILE} "
               "(readable by your user only)")
    log.info("%s", warning)  # in the log and in /api/status; not on every terminal start
    return FileSecrets(home, warning)
