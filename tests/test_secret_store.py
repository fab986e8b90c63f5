"""Node secrets: in the OS keyring when one works, else in a 0600 file with a warning."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import keyring
import keyring.backends.fail
import pytest
from keyrings.alt.file import PlaintextKeyring

from meshdesk.adapters.secret_store import FALLBACK_FILE, FileSecrets, KeyringSecrets, open_secret_store
from meshdesk.app.mesh_setup import NODE_KEY, load_node_key
from meshdesk.core.identity import node_id_for
from tests.nodes import poll, run_meshdesk

PLAINTEXT_KEYRING = "keyrings.alt.file.PlaintextKeyring"


@pytest.fixture
def no_keyring():
    """The headless Linux default: keyring's `fail` backend (set explicitly, whatever is installed)."""
    previous = keyring.get_keyring()
    keyring.set_keyring(keyring.backends.fail.Keyring())
    yield
    keyring.set_keyring(previous)


@pytest.fixture
def file_keyring(tmp_path):
    """A working keyring: keyrings.alt's plaintext file backend, its file under tmp_path."""
    previous = keyring.get_keyring()
    backend = PlaintextKeyring()
    backend.file_path = str(tmp_path / "keyring" / "keyring_pass.cfg")
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


def homes(tmp_path: Path) -> tuple[Path, Path]:
    first, second = tmp_path / "home-a", tmp_path / "home-b"
    first.mkdir()
    second.mkdir()
    return first, second


# ---------------------------------------------------------------- no keyring: the file


def test_without_a_keyring_secrets_go_to_a_private_file_with_a_warning(no_keyring, tmp_path):
    home, _ = homes(tmp_path)
    store = open_secret_store(home)
    assert isinstance(store, FileSecrets)
    assert store.backend == f"file ({home / FALLBACK_FILE})"
    assert store.warning and "no working OS keyring" in store.warning and FALLBACK_FILE in store.warning

    assert store.get("node-key") is None
    store.set("node-key", b"\x00\x01secret\xff")
    store.set("mesh-secret", bytes(range(32)))
    assert store.get("node-key") == b"\x00\x01secret\xff"
    assert store.get("mesh-secret") == bytes(range(32))
    store.set("node-key", b"replaced")
    assert open_secret_store(home).get("node-key") == b"replaced"  # a new store reads the same file

    path = home / FALLBACK_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert set(json.loads(path.read_text())) == {"node-key", "mesh-secret"}
    assert not list(home.glob("*.tmp"))


def test_the_file_stays_private_even_with_a_permissive_umask(no_keyring, tmp_path):
    import os

    home, _ = homes(tmp_path)
    previous = os.umask(0o000)
    try:
        open_secret_store(home).set("node-key", b"k")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((home / FALLBACK_FILE).stat().st_mode) == 0o600


def test_two_homes_do_not_share_file_secrets(no_keyring, tmp_path):
    first, second = homes(tmp_path)
    open_secret_store(first).set("node-key", b"first")
    assert open_secret_store(second).get("node-key") is None
    open_secret_store(second).set("node-key", b"second")
    assert open_secret_store(first).get("node-key") == b"first"
    assert open_secret_store(second).get("node-key") == b"second"


@pytest.mark.parametrize("content", [
    "{not json",
    "",
    "\xff\xfe garbage",
    "[1, 2, 3]",
    '"a string"',
    '{"node-key": "not base64!"}',
    '{"node-key": "abc"}',
    '{"node-key": 12}',
])
def test_a_corrupt_secrets_file_is_a_clear_os_error(no_keyring, tmp_path, content):
    home, _ = homes(tmp_path)
    (home / FALLBACK_FILE).write_text(content)
    store = open_secret_store(home)
    with pytest.raises(OSError) as raised:
        store.get("node-key")
    assert str(home / FALLBACK_FILE) in str(raised.value) and "cannot read" in str(raised.value)
    with pytest.raises(OSError):
        load_node_key(store)
    assert (home / FALLBACK_FILE).read_text() == content  # nothing overwritten


def test_a_damaged_node_key_is_an_os_error_not_a_new_identity(no_keyring, tmp_path):
    home, _ = homes(tmp_path)
    store = open_secret_store(home)
    store.set(NODE_KEY, b"too short")
    with pytest.raises(OSError, match="node key is damaged"):
        load_node_key(store)
    assert store.get(NODE_KEY) == b"too short"


def test_a_node_with_a_corrupt_secrets_file_fails_in_one_line(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / FALLBACK_FILE).write_text("{not json")
    result = run_meshdesk("--headless", "--client", "--home", str(home), "--port", "0",
                          "--bind-host", "127.0.0.1",
                          environment={"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("meshdesk: error: cannot read"), result.stderr
    assert FALLBACK_FILE in lines[0] and "Traceback" not in result.stderr


def test_the_node_key_is_created_once_and_then_reused(no_keyring, tmp_path):
    home, _ = homes(tmp_path)
    key = load_node_key(open_secret_store(home))
    again = load_node_key(open_secret_store(home))
    assert again.public_bytes == key.public_bytes


# ---------------------------------------------------------------- a working keyring


def test_with_a_working_keyring_secrets_go_to_the_keyring(file_keyring, tmp_path):
    first, second = homes(tmp_path)
    store = open_secret_store(first)
    assert isinstance(store, KeyringSecrets)
    assert store.backend == "keyring (PlaintextKeyring)"
    assert store.warning is None

    store.set("node-key", b"\x00\x01secret\xff")
    store.set("mesh-secret", bytes(range(32)))
    assert store.get("node-key") == b"\x00\x01secret\xff"
    assert open_secret_store(first).get("mesh-secret") == bytes(range(32))
    assert not (first / FALLBACK_FILE).exists()

    keyring_text = Path(file_keyring.file_path).read_text()
    assert store.prefix in keyring_text
    assert "probe-" not in keyring_text  # the probe cleans up after itself

    other = open_secret_store(second)
    assert other.prefix != store.prefix
    assert other.get("node-key") is None
    other.set("node-key", b"second")
    assert store.get("node-key") == b"\x00\x01secret\xff"
    assert other.get("node-key") == b"second"
    assert not (second / FALLBACK_FILE).exists()


def test_keyring_entries_follow_the_resolved_home(file_keyring, tmp_path):
    home, _ = homes(tmp_path)
    open_secret_store(home).set("node-key", b"k")
    assert open_secret_store(home / ".." / home.name).get("node-key") == b"k"


def test_a_damaged_keyring_entry_is_a_clear_os_error(file_keyring, tmp_path):
    home, _ = homes(tmp_path)
    store = open_secret_store(home)
    keyring.set_password("MeshDesk", f"{store.prefix}/node-key", "not base64!")
    with pytest.raises(OSError, match="not base64"):
        store.get("node-key")


def test_a_keyring_that_fails_its_probe_falls_back_to_the_file(tmp_path):
    class Forgetful(PlaintextKeyring):
        def get_password(self, service, username):
            return None

    previous = keyring.get_keyring()
    backend = Forgetful()
    backend.file_path = str(tmp_path / "forgetful.cfg")
    keyring.set_keyring(backend)
    try:
        store = open_secret_store(tmp_path)
    finally:
        keyring.set_keyring(previous)
    assert isinstance(store, FileSecrets) and store.warning


# ---------------------------------------------------------------- real nodes


def keyring_environment(tmp_path: Path) -> dict:
    return {"PYTHON_KEYRING_BACKEND": PLAINTEXT_KEYRING, "XDG_DATA_HOME": str(tmp_path / "xdg")}


@pytest.mark.slow
def test_a_node_keeps_its_key_in_the_keyring_and_its_id_across_restarts(node_factory, tmp_path):
    environment = keyring_environment(tmp_path)
    node = node_factory("--client", environment=environment)
    node.printed("Created mesh")
    status = node.status()
    assert status["secrets"]["backend"].startswith("keyring"), status["secrets"]
    assert "PlaintextKeyring" in status["secrets"]["backend"]
    assert status["secrets"]["warning"] is None
    node_id, mesh_id = status["node"]["id"], status["mesh"]["id"]
    keyring_file = tmp_path / "xdg" / "python_keyring" / "keyring_pass.cfg"
    assert keyring_file.exists()
    assert not (node.home / FALLBACK_FILE).exists()
    assert node.stop() == 0

    again = node_factory("--client", home=node.home, environment=environment)
    again.printed("Resumed mesh")  # the mesh secret came back from the keyring too
    status = again.status()
    assert status["node"]["id"] == node_id and status["mesh"]["id"] == mesh_id
    assert not (node.home / FALLBACK_FILE).exists()

    # The key the node uses is the one in the keyring under its home's name.
    previous = keyring.get_keyring()
    backend = PlaintextKeyring()
    backend.file_path = str(keyring_file)
    keyring.set_keyring(backend)
    try:
        key = load_node_key(open_secret_store(node.home))
    finally:
        keyring.set_keyring(previous)
    assert node_id_for(key.public_bytes) == node_id


@pytest.mark.slow
def test_a_node_without_a_keyring_reports_the_file_and_a_warning(node_factory, tmp_path):
    node = node_factory("--client", environment={"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
                                                 "XDG_DATA_HOME": str(tmp_path / "xdg")})
    status = node.status()
    secrets_file = node.home / FALLBACK_FILE
    assert status["secrets"]["backend"] == f"file ({secrets_file})"
    assert "no working OS keyring" in status["secrets"]["warning"]
    poll(lambda: node.status()["mesh"] is not None, 10, message="the mesh to be created")
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    stored = set(json.loads(secrets_file.read_text()))  # and, since rekeys, the rekey's history
    assert {"node-key", "mesh-secret"} <= stored <= {"node-key", "mesh-secret", "mesh-secret-previous", "mesh-rekey"}
    assert not (tmp_path / "xdg").exists()
    node_id = status["node"]["id"]
    assert node.stop() == 0
    again = node_factory("--client", home=node.home)
    assert again.node_id == node_id
