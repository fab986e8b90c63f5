"""The real `meshdesk` command, run in child processes: options, model files, the environment."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import gguf
import numpy as np
import openai
import pytest

from meshdesk import __version__
from tests.nodes import NodeProcess, meshdesk_command, poll, run_meshdesk
from tests.nodes import test_environment as child_environment
from tests.split_tools import children

OPTIONS = ("--headless", "--model", "--port", "--home", "--name", "--threads", "--verbose", "--version",
           "--api-key", "--allow-origin", "--parallel", "--relay", "--serve-relay")
NO_DISPLAY = {"DISPLAY": None, "WAYLAND_DISPLAY": None, "QT_QPA_PLATFORM": None}


def assert_one_line_error(result: subprocess.CompletedProcess) -> str:
    """Exit code 2 and a single `meshdesk: error:` line on stderr; returns that line."""
    described = f"exit={result.returncode} stdout={result.stdout!r} stderr={result.stderr!r}"
    assert result.returncode == 2, described
    assert "Traceback" not in result.stderr + result.stdout, described
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("meshdesk: error:"), described
    return lines[0]


def write_gguf(path: Path, architecture: str = "llama", tensor_values: int = 0) -> Path:
    writer = gguf.GGUFWriter(path, architecture)
    writer.add_name("made by test_cli")
    if tensor_values:
        writer.add_tensor("token_embd.weight", np.linspace(-1, 1, tensor_values, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def unloadable_model(tmp_path_factory) -> Path:
    """A GGUF whose header is sound but that llama.cpp cannot load: no llama keys or tensors."""
    return write_gguf(tmp_path_factory.mktemp("unloadable") / "unloadable.gguf")


def test_help_documents_every_option():
    result = run_meshdesk("--help")
    assert result.returncode == 0, result.stderr
    missing = [option for option in OPTIONS if option not in result.stdout]
    assert not missing, f"--help does not mention {missing}:\n{result.stdout}"


@pytest.mark.parametrize("arguments, expected", [
    (["--ports", "5-3"], "1024-65535"), (["--ports", "9000"], "LOW-HIGH"), (["--port", "x"], "x"),
    (["--rate", "0"], "positive"), (["--host", "relay.example.org"], "relay.example.org"),
])
def test_a_bad_relay_option_is_one_line_and_exit_2(arguments, expected):
    result = run_meshdesk("relay", *arguments)
    lines = result.stderr.splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("meshdesk relay: error:"), result
    assert expected in lines[0]


def test_the_relay_command_serves_until_told_to_stop():
    process = subprocess.Popen(meshdesk_command("relay", "--host", "127.0.0.1", "--port", "0"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_environment())
    try:
        line = process.stdout.readline()
        assert line.startswith("meshdesk relay: listening on 127.0.0.1 port "), line
        port = int(line.rsplit(" ", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
            assert b'"challenge"' in connection.recv(4096)  # it asks a registering node to prove its key
    finally:
        process.terminate()
        assert process.wait(10) == 0


def test_version_prints_the_package_version():
    result = run_meshdesk("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"meshdesk {__version__}"


@pytest.mark.parametrize("arguments, expected", [
    (["--no-such-option"], "--no-such-option"),
    (["--port", "70000"], "70000"),
    (["--port", "-1"], "-1"),
    (["--port", "abc"], "abc"),
    (["--name", ""], "--name"),
    (["--name", "   "], "--name"),
    (["--threads", "0"], "--threads"),
    (["--threads", "many"], "many"),
    (["--parallel", "0"], "between 1 and 64"),
    (["--parallel", "65"], "between 1 and 64"),
    (["--parallel", "lots"], "lots"),
    (["--model"], "--model"),
    (["--allow-origin", "*"], "any web page"),
    (["--allow-origin", "https://a.example/path"], "not an origin"),
    (["--api-key", "two words"], "--api-key"),
    (["--relay", "relay.example.org"], "HOST:PORT"),
    (["--relay", "relay.example.org:0"], "not 0"),
    (["--relay", "a b:9338"], "HOST:PORT"),
    (["--serve-relay", "9339", "--client"], "lite client"),
    (["--serve-relay", "70000"], "70000"),
])
def test_a_bad_option_is_one_line_and_exit_2(tmp_path, arguments, expected):
    home = tmp_path / "home"
    line = assert_one_line_error(run_meshdesk("--home", str(home), "--port", "0", "--headless", *arguments))
    assert expected in line
    assert not home.exists(), "a rejected command line must not create the home folder"


def file_snapshot(path: Path):
    if not path.exists():
        return None
    if path.is_dir():
        return sorted(child.name for child in path.iterdir()), path.stat().st_mtime_ns
    return path.read_bytes(), path.stat().st_mtime_ns


def truncated_gguf(folder: Path) -> Path:
    whole = write_gguf(folder / "whole.gguf", tensor_values=4096).read_bytes()
    path = folder / "truncated.gguf"
    path.write_bytes(whole[: len(whole) - 4096])  # the header is whole, the tensor data is not
    return path


def png_like(folder: Path) -> Path:
    path = folder / "picture.gguf"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    return path


def text_file(folder: Path) -> Path:
    path = folder / "notes.txt"
    path.write_text("these are not the weights you are looking for\n")
    return path


def first_megabyte_of_real_model(folder: Path, real_model: Path) -> Path:
    path = folder / "first-megabyte.gguf"
    with open(real_model, "rb") as source:
        path.write_bytes(source.read(1024 * 1024))
    return path


MODEL_CASES = {
    "missing file": (lambda folder, real: folder / "absent.gguf", "not found"),
    "directory": (lambda folder, real: folder, "directory"),
    "text file": (lambda folder, real: text_file(folder), "not a GGUF file"),
    "png": (lambda folder, real: png_like(folder), "not a GGUF file"),
    "truncated tensor data": (lambda folder, real: truncated_gguf(folder), "truncated"),
    "first MB of the real model": (first_megabyte_of_real_model, "truncated"),
}


@pytest.mark.parametrize("case", MODEL_CASES)
def test_an_unusable_model_file_is_refused_untouched(tmp_path, default_model_path, case):
    make, expected = MODEL_CASES[case]
    folder = tmp_path / "models"
    folder.mkdir()
    path = make(folder, default_model_path)
    before = file_snapshot(path)
    result = run_meshdesk("--home", str(tmp_path / "home"), "--port", "0", "--headless", "--model", str(path))
    line = assert_one_line_error(result)
    assert expected in line
    assert file_snapshot(path) == before, "meshdesk changed the model file it refused"


def test_an_unknown_model_name_is_refused(tmp_path):
    home = tmp_path / "home"
    line = assert_one_line_error(run_meshdesk("--home", str(home), "--port", "0", "--headless",
                                              "--model", "no-such-model-anywhere"))
    assert "unknown model 'no-such-model-anywhere'" in line
    assert list((home / "models").iterdir()) == []


def test_a_model_llama_cpp_cannot_load_fails_while_the_node_keeps_serving(node_factory, unloadable_model):
    node = node_factory("--model", str(unloadable_model))
    failed = poll(lambda: [m for m in node.status()["models"] if m["state"] == "failed"], 60,
                  message="the model to fail loading")
    assert failed[0]["id"] == "unloadable" and failed[0]["path"] == str(unloadable_model)
    assert failed[0]["error"] and "unloadable.gguf" in failed[0]["error"]
    # The failed model host takes a moment to exit; only then could the node wrongly end too.
    poll(lambda: not children(node.process.pid, "meshdesk.adapters.llama.host"), 30,
         message="the failed model host to exit")

    with pytest.raises(openai.APIStatusError) as caught:
        node.client().chat.completions.create(
            model="unloadable", messages=[{"role": "user", "content": "hello"}])
    assert caught.value.status_code == 503
    assert "failed to load" in caught.value.message
    assert node.process.poll() is None, f"the node stopped: {node.describe()}"
    assert node.status()["models"][0]["state"] == "failed"


def test_without_a_display_the_node_runs_headless(node_factory, default_model_path):
    node = node_factory("--gui", "--model", str(default_model_path), environment=NO_DISPLAY)
    assert "No display found; running headless.\n" in node.output
    assert node.status()["node"]["home"] == str(node.home.resolve())


def test_a_port_in_use_is_one_line_naming_it(tmp_path, unloadable_model):
    with socket.create_server(("127.0.0.1", 0)) as occupant:
        port = occupant.getsockname()[1]
        result = run_meshdesk("--home", str(tmp_path / "home"), "--port", str(port), "--headless",
                              "--model", str(unloadable_model))
    line = assert_one_line_error(result)
    assert f"127.0.0.1:{port}" in line and "--port" in line


def test_the_name_option_names_the_node(node_factory, unloadable_model):
    node = node_factory("--name", "Alice", "--model", str(unloadable_model))
    assert node.status()["node"]["name"] == "Alice"


def node_id(node_factory, home: Path, model: Path) -> str:
    node = node_factory("--model", str(model), home=home)
    try:
        return node.status()["node"]["id"]
    finally:
        assert node.stop() == 0, node.describe()


def test_the_node_id_belongs_to_the_home(node_factory, unloadable_model, tmp_path):
    first = node_id(node_factory, tmp_path / "one", unloadable_model)
    again = node_id(node_factory, tmp_path / "one", unloadable_model)
    other = node_id(node_factory, tmp_path / "two", unloadable_model)
    assert first and first == again
    assert other and other != first


def test_meshdesk_home_sets_the_home_without_the_option(tmp_path, unloadable_model):
    home = tmp_path / "from-environment"
    command = meshdesk_command("--port", "0", "--headless", "--model", str(unloadable_model))
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=child_environment({"MESHDESK_HOME": str(home)}))
    node = None
    try:
        node = NodeProcess(process, home)
        assert node.status()["node"]["home"] == str(home.resolve())
        assert (home / "logs" / "meshdesk.log").exists()
    finally:
        if node is not None:
            node.stop()
        elif process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_the_smoke_test_checks_the_app_end_to_end_and_writes_its_report(tmp_path):
    """What the installers workflow runs on the installed DMG and MSI, run here on the checkout."""
    report = tmp_path / "report.txt"
    result = run_meshdesk("--smoke-test", str(report), timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = report.read_text().splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == ["ok   llama", "ok   qt", "ok   node"]
    assert "with RPC" in lines[0] and "answered 'Say hi.'" in lines[2]
    assert lines[-1] == "smoke test passed" and result.stdout.splitlines() == lines


def test_a_failing_smoke_check_is_a_report_line_and_exit_1(tmp_path, monkeypatch):
    from meshdesk.app import smoke_test

    def check_model():
        raise RuntimeError("no model in the bundle")

    monkeypatch.setattr(smoke_test, "checks", lambda: [smoke_test.check_llama, check_model])
    report = tmp_path / "report.txt"
    assert smoke_test.run_smoke_test(str(report)) == 1
    assert report.read_text().splitlines()[1:] == ["FAIL model: no model in the bundle",
                                                  "smoke test FAILED: 1 of 2 checks"]
