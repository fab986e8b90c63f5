"""`meshdesk run AGENT`: each agent's setup, the merge into a user's config files, the model
rule, and real runs of a stand-in agent (a script on PATH that checks what it was given and
asks the API through the official openai client) against real nodes and a real lite client."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from meshdesk.app.assembly import model_context
from meshdesk.app.cli import build_parser
from meshdesk.core.agents import (ConfigFileError, Endpoint, ServedModel, best_model, chat_tuned,
                                  merge_codex_config, merge_pi_models, merge_pi_settings, setup_for)
from meshdesk.ui.agents import agent_commands, terminal_command
from tests.nodes import meshdesk_command
from tests.nodes import test_environment as child_environment

ENDPOINT = Endpoint(port=4321, model="SmolLM2-135M-Instruct.Q4_1", api_key="k3y-Real", context=8192)


# --- what each agent is given ----------------------------------------------------------------

def test_goose_gets_the_openai_provider_through_its_environment():
    setup = setup_for("goose", ENDPOINT)
    assert setup.environment["GOOSE_PROVIDER"] == "openai"
    assert setup.environment["OPENAI_HOST"] == "http://127.0.0.1:4321"
    assert setup.environment["OPENAI_BASE_PATH"] == "v1/chat/completions"
    assert setup.environment["OPENAI_API_KEY"] == "k3y-Real" and setup.environment["GOOSE_MODEL"] == ENDPOINT.model
    assert setup.command([]) == ["goose", "session"] and setup.command(["run", "-t", "hi"]) == ["goose", "run", "-t", "hi"]


def test_opencode_gets_a_provider_in_its_config_content_and_the_key_by_name():
    setup = setup_for("opencode", ENDPOINT)
    config = json.loads(setup.environment["OPENCODE_CONFIG_CONTENT"])
    provider = config["provider"]["meshdesk"]
    assert provider["npm"] == "@ai-sdk/openai-compatible"
    assert provider["options"] == {"baseURL": "http://127.0.0.1:4321/v1", "apiKey": "{env:MESHDESK_API_KEY}"}
    assert provider["models"][ENDPOINT.model]["limit"]["context"] == 8192
    assert config["model"] == config["small_model"] == f"meshdesk/{ENDPOINT.model}"
    assert setup.environment["MESHDESK_API_KEY"] == "k3y-Real"
    assert "k3y-Real" not in setup.environment["OPENCODE_CONFIG_CONTENT"]


def test_claude_gets_the_messages_api_our_model_everywhere_and_no_other_traffic():
    setup = setup_for("claude", ENDPOINT)
    environment = setup.environment
    assert environment["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:4321"  # Claude Code adds /v1/messages
    assert environment["ANTHROPIC_AUTH_TOKEN"] == "k3y-Real"   # sent as a Bearer token, as the node checks
    assert "ANTHROPIC_API_KEY" in setup.unset
    for name in ("ANTHROPIC_MODEL", "ANTHROPIC_SMALL_FAST_MODEL", "ANTHROPIC_DEFAULT_HAIKU_MODEL",
                 "ANTHROPIC_DEFAULT_SONNET_MODEL", "ANTHROPIC_DEFAULT_OPUS_MODEL", "CLAUDE_CODE_SUBAGENT_MODEL"):
        assert environment[name] == ENDPOINT.model, name
    assert environment["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert setup.defaults["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] == "8192"  # the user's own setting wins


def test_codex_gets_a_responses_provider_in_its_config_and_chooses_it_on_the_command_line():
    setup = setup_for("codex", ENDPOINT)
    assert setup.config == {"name": "MeshDesk", "base_url": "http://127.0.0.1:4321/v1",
                            "env_key": "MESHDESK_API_KEY", "wire_api": "responses"}
    assert setup.command(["exec", "hi"]) == [
        "codex", "-c", 'model_provider="meshdesk"', "-c", f'model="{ENDPOINT.model}"',
        "-c", "model_context_window=8192", "exec", "hi"]


def test_pi_gets_the_mesh_provider_naming_the_key_variable():
    setup = setup_for("pi", ENDPOINT)
    assert setup.config_file == ".pi/agent/models.json"
    assert setup.config["baseUrl"] == "http://127.0.0.1:4321/v1" and setup.config["api"] == "openai-completions"
    assert setup.config["apiKey"] == "MESHDESK_API_KEY"  # pi reads a variable's name; no secret in the file
    assert setup.config["models"][0]["id"] == ENDPOINT.model
    assert setup.command(["-p", "hi"]) == ["pi", "--provider", "mesh", "--model", ENDPOINT.model, "-p", "hi"]


# --- the user's config files ----------------------------------------------------------------

def test_our_pi_provider_joins_the_users_providers_and_replaces_only_our_old_one():
    users = {"providers": {"ollama": {"baseUrl": "http://localhost:11434/v1", "api": "openai-completions",
                                      "apiKey": "ollama", "models": [{"id": "llama3.1:8b"}]},
                           "mesh": {"baseUrl": "http://127.0.0.1:1/v1", "models": []}},
             "other": {"kept": True}}
    merged = json.loads(merge_pi_models(json.dumps(users), setup_for("pi", ENDPOINT).config))
    assert merged["providers"]["ollama"] == users["providers"]["ollama"] and merged["other"] == {"kept": True}
    assert merged["providers"]["mesh"]["baseUrl"] == "http://127.0.0.1:4321/v1"
    assert json.loads(merge_pi_models(None, {"x": 1})) == {"providers": {"mesh": {"x": 1}}}
    for broken in ("{not json", "[1, 2]", '{"providers": []}'):
        with pytest.raises(ConfigFileError):
            merge_pi_models(broken, {})


def test_pi_reserves_a_quarter_of_our_context_unless_the_users_reserve_leaves_room():
    settings = setup_for("pi", ENDPOINT).settings  # a context of 8192
    assert json.loads(merge_pi_settings(None, settings, 8192)) == {"compaction": {"reserveTokens": 2048}}
    users = {"theme": "dark", "compaction": {"enabled": True}}
    merged = json.loads(merge_pi_settings(json.dumps(users), settings, 8192))
    assert merged == {"theme": "dark", "compaction": {"enabled": True, "reserveTokens": 2048}}
    # pi's default reserve (16384) would leave no room in our window: it compacts after every answer
    assert json.loads(merge_pi_settings('{"compaction": {"reserveTokens": 16384}}', settings, 8192)) \
        == {"compaction": {"reserveTokens": 2048}}
    assert merge_pi_settings('{"compaction": {"reserveTokens": 1000}}', settings, 8192) is None
    with pytest.raises(ConfigFileError):
        merge_pi_settings('{"compaction": 3}', settings, 8192)


def test_our_codex_table_is_added_once_and_the_users_lines_are_kept():
    users = textwrap.dedent("""\
        model = "gpt-5"  # the user's own default
        [model_providers.ollama]
        name = "Ollama"
        base_url = "http://localhost:11434/v1"

        [model_providers.meshdesk]
        base_url = "http://127.0.0.1:1/v1"
        [model_providers.meshdesk.http_headers]
        X = "1"

        [profiles_note]
        kept = true
        """)
    provider = setup_for("codex", ENDPOINT).config
    merged = merge_codex_config(users, provider)
    parsed = tomllib.loads(merged)
    assert parsed["model"] == "gpt-5" and parsed["profiles_note"] == {"kept": True}
    assert parsed["model_providers"]["ollama"]["name"] == "Ollama"
    assert parsed["model_providers"]["meshdesk"] == provider
    assert "# the user's own default" in merged
    assert merge_codex_config(merged, provider) == merged
    assert tomllib.loads(merge_codex_config(None, provider)) == {"model_providers": {"meshdesk": provider}}
    with pytest.raises(ConfigFileError):
        merge_codex_config('model_providers.meshdesk.base_url = "x"\n', provider)


def test_a_symlinked_config_stays_a_link_and_its_target_gets_the_merge(tmp_path):
    from meshdesk.app.agent_run import merge_file

    target = tmp_path / "dotfiles" / "models.json"
    target.parent.mkdir()
    target.write_text('{"providers": {"ollama": {}}}')
    target.chmod(0o600)
    link = tmp_path / ".pi" / "agent" / "models.json"
    link.parent.mkdir(parents=True)
    link.symlink_to(target)
    merge_file(link, lambda text: merge_pi_models(text, {"x": 1}))
    assert link.is_symlink() and link.resolve() == target
    assert json.loads(target.read_text())["providers"] == {"ollama": {}, "mesh": {"x": 1}}
    assert target.stat().st_mode & 0o777 == 0o600
    assert sorted(path.name for path in target.parent.iterdir()) == ["models.json"]  # no temporary left


# --- which model ------------------------------------------------------------------------------

def test_the_best_model_is_chat_tuned_then_the_largest():
    gemma, smol = ServedModel("gemma-3-270m-q4_k_m", 253_113_024), ServedModel("SmolLM2-135M-Instruct.Q4_1", 98_362_432)
    assert best_model([gemma, smol]) == smol.id  # an instruct model over a larger base one
    big = ServedModel("Qwen2.5-7B-Instruct-Q4_K_M", 4_683_073_952)
    assert best_model([gemma, smol, big]) == big.id
    assert best_model([ServedModel("a-base", None), ServedModel("b-base", None)], {"b-base": 10}) == "b-base"
    assert best_model([]) is None
    assert [chat_tuned(name) for name in ("gemma-3-1b-it-Q4_K_M", "Qwen3-0.6B-Q8_0", "phi-2", "Llama-3-Chat")] \
        == [True, True, False, True]


def test_the_context_option_and_the_cap_at_what_the_model_was_trained_for(default_model_path):
    assert build_parser().parse_args(["--context", "32768"]).context == 32768
    assert build_parser().parse_args([]).context is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--context", "100"])
    assert model_context(default_model_path, None) == 16384       # Gemma 3 270M was trained for 32k
    assert model_context(default_model_path, 65536) == 32768
    assert model_context(Path("/nonexistent.gguf"), 2048) == 2048


def test_an_agent_budgets_for_the_context_its_host_gives_the_model():
    from meshdesk.app.agent_run import agent_context, context_for
    from meshdesk.core.status import ModelStatus

    assert agent_context(4096, 32768) == 4096      # a host started with --context 4096
    assert agent_context(65536, None) == 65536     # or with more than the default
    assert agent_context(None, 2048) == 2048       # unknown: the default, or less where trained for less
    assert agent_context(None, 32768) == agent_context(None, None) == 16384
    entry = ModelStatus("m", "", "remote", context=8192)
    assert ModelStatus.from_wire(entry.to_wire()) == entry
    assert ModelStatus.from_wire({**entry.to_wire(), "context": None}).context is None
    unknown = ModelStatus("m", "", "remote")
    assert "context" not in unknown.to_wire() and ModelStatus.from_wire(unknown.to_wire()) == unknown
    assert context_for("m", None) == 16384


# --- Settings ---------------------------------------------------------------------------------

def test_settings_commands_name_no_secret_and_open_in_a_terminal():
    commands = {command.agent: command for command in agent_commands(9337, "m", "/home/a b/MeshDesk")}
    assert list(commands) == ["goose", "opencode", "pi", "claude", "codex"]
    assert commands["claude"].run == "meshdesk run --home '/home/a b/MeshDesk' claude"
    assert 'ANTHROPIC_AUTH_TOKEN="${MESHDESK_API_KEY:-none}"' in commands["claude"].command
    assert commands["pi"].setup_path == "~/.pi/agent/models.json" and '"mesh"' in commands["pi"].setup
    assert '"reserveTokens": 4096' in commands["pi"].note
    assert "wire_api = \"responses\"" in commands["codex"].setup
    assert commands["opencode"].install == "npm i -g opencode-ai"
    line = commands["pi"].run
    assert terminal_command("linux", line, lambda name: name == "xterm") == \
        ["xterm", "-e", "sh", "-c", f'{line}; exec "${{SHELL:-sh}}"']
    assert terminal_command("linux", line, lambda name: False) is None
    assert terminal_command("darwin", line, lambda name: False)[0] == "osascript"


def test_the_run_command_is_quoted_for_the_platforms_shell():
    assert agent_commands(1, "m", "/home/a b/MeshDesk", platform="linux")[3].run == \
        "meshdesk run --home '/home/a b/MeshDesk' claude"
    windows = agent_commands(1, "m", r"C:\Users\a b\MeshDesk", platform="win32")[3].run
    assert windows == r'meshdesk run --home "C:\Users\a b\MeshDesk" claude'  # cmd.exe takes no '...'
    assert agent_commands(1, "m", r"C:\Users\ab\MeshDesk", platform="win32")[0].run == \
        r"meshdesk run --home C:\Users\ab\MeshDesk goose"


def test_the_run_command_starts_this_very_meshdesk():
    from meshdesk.ui.agents import own_launcher

    assert own_launcher("/usr/bin/python3", False, lambda name: True) == ("meshdesk",)
    assert own_launcher("/home/a b/.venv/bin/python", False, lambda name: False) == (
        "/home/a b/.venv/bin/python", "-m", "meshdesk")
    bundled = own_launcher("/Applications/MeshDesk.app/Contents/MacOS/MeshDesk", True, lambda name: False)
    assert bundled == ("/Applications/MeshDesk.app/Contents/MacOS/MeshDesk",)  # a Briefcase bundle's own program
    venv = agent_commands(1, "m", "/h", platform="linux", launcher=("/home/a b/py", "-m", "meshdesk"))
    assert venv[0].run == "'/home/a b/py' -m meshdesk run --home /h goose"
    windows = agent_commands(1, "m", None, platform="win32", launcher=(r"C:\Program Files\MeshDesk\MeshDesk.exe",))
    assert windows[0].run == r'"C:\Program Files\MeshDesk\MeshDesk.exe" run goose'
    script = terminal_command("darwin", "meshdesk run --home /Users/zoë/MeshDesk pi", lambda name: False)[2]
    assert script == 'tell application "Terminal" to do script "meshdesk run --home /Users/zoë/MeshDesk pi"'


def test_the_agent_box_offers_the_run_command_and_says_how_to_install(qtbot):
    from meshdesk.ui.agent_box import AgentBox

    box = AgentBox("pi", platform="linux", installed=lambda name: name == "xterm")
    qtbot.addWidget(box)
    command = agent_commands(9337, "m", "/h")[2]
    box.show_command(command)
    assert box.run.text() == "meshdesk run --home /h pi"
    assert not box.launch.isEnabled() and "npm i -g @mariozechner/pi-coding-agent" in box.install.text()
    box.installed = lambda name: True
    box.show_command(command)
    assert box.launch.isEnabled() and box.install.isHidden()
    assert box.terminal()[:2] == ["x-terminal-emulator", "-e"]


# --- real runs ------------------------------------------------------------------------------

def run_meshdesk_run(*arguments: str, path: str, user_home: Path, extra: dict | None = None, timeout=180):
    import subprocess

    environment = child_environment({"PATH": path, "HOME": str(user_home), "MESHDESK_API_KEY": None,
                                    "PI_CODING_AGENT_DIR": None, "CODEX_HOME": None, **(extra or {})})
    return subprocess.run(meshdesk_command("run", *arguments), capture_output=True, text=True,
                          timeout=timeout, env=environment)


def test_an_agent_not_installed_gets_one_line_on_how_to_install_it(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    result = run_meshdesk_run("--home", str(tmp_path / "home"), "claude", "-p", "hi", path=str(empty),
                              user_home=tmp_path)
    assert result.returncode == 127
    assert result.stderr.strip().splitlines() == [
        "meshdesk run: claude is not installed (not found on PATH); install it with: "
        "npm i -g @anthropic-ai/claude-code"]
    assert not (tmp_path / "home").exists()  # nothing was started


FAKE_AGENT = '''#!{python}
"""A stand-in agent: reports what it was given, then asks the API with the openai client."""
import json, os, sys, urllib.error, urllib.request
import openai

name = os.path.basename(sys.argv[0])
report = {{"argv": sys.argv[1:], "key": os.environ.get("MESHDESK_API_KEY")}}
if name == "pi":
    config = json.load(open(os.path.expanduser("~/.pi/agent/models.json")))
    report["providers"] = sorted(config["providers"])
    provider = config["providers"]["mesh"]
    base_url, key = provider["baseUrl"], os.environ[provider["apiKey"]]
    model = sys.argv[sys.argv.index("--model") + 1]
else:  # goose
    base_url = os.environ["OPENAI_HOST"] + "/v1"
    key, model = os.environ["OPENAI_API_KEY"], os.environ["GOOSE_MODEL"]
report["model"] = model
try:
    urllib.request.urlopen(base_url + "/models", timeout=10)
    report["keyless"] = 200
except urllib.error.HTTPError as error:
    report["keyless"] = error.code
client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=120)
answer = client.chat.completions.create(model=model, max_tokens=3,
                                        messages=[{{"role": "user", "content": "Say hi"}}])
report["finish_reason"] = answer.choices[0].finish_reason
report["models"] = [entry.id for entry in client.models.list().data]
json.dump(report, open(os.environ["FAKE_AGENT_REPORT"], "w"))
sys.exit(int(os.environ.get("FAKE_AGENT_EXIT", "0")))
'''


@pytest.fixture
def fake_agents(tmp_path) -> str:
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in ("pi", "goose"):
        script = folder / name
        script.write_text(FAKE_AGENT.format(python=sys.executable))
        script.chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


def test_a_run_starts_a_lite_client_joins_picks_the_model_merges_pi_config_and_stops(
        shared_node, fake_agents, tmp_path):
    user_home = tmp_path / "user"
    (user_home / ".pi" / "agent").mkdir(parents=True)
    users = {"providers": {"ollama": {"baseUrl": "http://localhost:11434/v1", "models": [{"id": "x"}]}}}
    (user_home / ".pi" / "agent" / "models.json").write_text(json.dumps(users))
    home, report = tmp_path / "client-home", tmp_path / "report.json"
    token = shared_node.invite_token()
    result = run_meshdesk_run("--home", str(home), "--join", token, "pi", "-p", "hello there", path=fake_agents,
                              user_home=user_home, extra={"FAKE_AGENT_REPORT": str(report), "FAKE_AGENT_EXIT": "7"})
    assert result.returncode == 7, result.stderr  # the agent's exit code is ours
    assert "starting a lite client" in result.stderr
    given = json.loads(report.read_text())
    served = shared_node.status()["models"][0]["id"]
    assert given["argv"] == ["--provider", "mesh", "--model", served, "-p", "hello there"]
    assert given["providers"] == ["mesh", "ollama"]  # the user's provider kept
    settings = json.loads((user_home / ".pi" / "agent" / "settings.json").read_text())
    assert settings["compaction"]["reserveTokens"] == 4096  # a quarter of Gemma's 16k context
    assert shared_node.status()["models"][0]["context"] == 16384  # the host's own n_ctx
    assert given["keyless"] == 401 and len(given["key"]) >= 24  # the client's API takes only the agent's key
    assert given["finish_reason"] in ("stop", "length") and served in given["models"]
    assert not (home / "runtime.json").exists()  # the lite client stopped with the agent

    # the home now belongs to the mesh: a second run's client rejoins it without a token
    again = run_meshdesk_run("--home", str(home), "goose", path=fake_agents, user_home=user_home,
                             extra={"FAKE_AGENT_REPORT": str(report)})
    assert again.returncode == 0, again.stderr
    given = json.loads(report.read_text())
    assert given["argv"] == ["session"] and given["model"] == served and given["finish_reason"]


def test_a_run_uses_the_node_running_for_the_home(shared_node, fake_agents, tmp_path):
    report = tmp_path / "report.json"
    result = run_meshdesk_run("--home", str(shared_node.home), "--model", "nonexistent", "--wait", "1", "goose",
                              path=fake_agents, user_home=tmp_path, extra={"FAKE_AGENT_REPORT": str(report)})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "the model nonexistent was not ready within 1 s (served now: gemma" in result.stderr
    result = run_meshdesk_run("--home", str(shared_node.home), "goose", "run", "-t", "hi", path=fake_agents,
                              user_home=tmp_path, extra={"FAKE_AGENT_REPORT": str(report)})
    assert result.returncode == 0, result.stderr
    assert "lite client" not in result.stderr
    given = json.loads(report.read_text())
    assert given["argv"] == ["run", "-t", "hi"] and given["keyless"] == 200  # the node's open /v1 API
    assert given["finish_reason"] in ("stop", "length")
    assert shared_node.process.poll() is None  # the user's node keeps running


SLEEPING_AGENT = '''#!{python}
import os, sys, time
open(os.environ["FAKE_AGENT_PID"], "w").write(str(os.getpid()))
time.sleep(600)
'''


def process_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return not stat.parent.parent.joinpath("self").exists()  # no /proc: os.kill said it runs


def poll_until(condition, seconds: float, what: str) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("ending", ["SIGKILL", "SIGHUP"])
def test_the_lite_client_does_not_outlive_meshdesk_run_however_it_ends(shared_node, tmp_path, ending):
    import signal
    import subprocess

    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "goose").write_text(SLEEPING_AGENT.format(python=sys.executable))
    (folder / "goose").chmod(0o755)
    home, agent_pid = tmp_path / "client-home", tmp_path / "agent.pid"
    environment = child_environment({"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}", "HOME": str(tmp_path),
                                     "MESHDESK_API_KEY": None, "FAKE_AGENT_PID": str(agent_pid)})
    with open(tmp_path / "run.log", "wb") as log:
        run = subprocess.Popen(meshdesk_command("run", "--home", str(home), "--join", shared_node.invite_token(),
                                                "goose"), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                               env=environment)
    try:
        poll_until(lambda: agent_pid.exists() and agent_pid.read_text() or run.poll() is not None, 180,
                   "the agent did not start")
        assert run.poll() is None, (tmp_path / "run.log").read_text()
        client = json.loads((home / "runtime.json").read_text())["pid"]
        assert client != run.pid and process_alive(client)
        run.send_signal(getattr(signal, ending))
        assert run.wait(30) == (-9 if ending == "SIGKILL" else 130)
        poll_until(lambda: not process_alive(client), 30, f"the lite client outlived meshdesk run's {ending}")
        assert not (home / "runtime.json").exists()  # it stopped cleanly: the next run starts afresh
    finally:
        run.kill()
        run.wait()
        leftovers = [int(agent_pid.read_text())] if agent_pid.exists() and agent_pid.read_text() else []
        if (home / "runtime.json").exists():
            leftovers.append(json.loads((home / "runtime.json").read_text())["pid"])
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_run_budgets_for_the_context_the_node_was_started_with(node_factory, default_model_path, fake_agents,
                                                                 tmp_path):
    home, user_home, report = tmp_path / "node-home", tmp_path / "user", tmp_path / "report.json"
    (home / "models").mkdir(parents=True)
    os.link(default_model_path, home / "models" / default_model_path.name)
    node = node_factory("--context", "4096", home=home)
    node.wait_until_ready()
    assert node.status()["models"][0]["context"] == 4096
    result = run_meshdesk_run("--home", str(home), "pi", "-p", "hi", path=fake_agents, user_home=user_home,
                              extra={"FAKE_AGENT_REPORT": str(report)})
    assert result.returncode == 0, result.stderr
    settings = json.loads((user_home / ".pi" / "agent" / "settings.json").read_text())
    assert settings["compaction"]["reserveTokens"] == 1024  # a quarter of 4096, not of the 16k default
