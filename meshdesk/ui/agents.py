"""What Settings shows for each coding agent: `meshdesk run AGENT`, and the same by hand (pure).

The setups themselves are `core.agents`, shared with `meshdesk run`. By hand, the API key is
the shell's `$MESHDESK_API_KEY` (the key a node started with `--api-key` checks; any value
does for a node whose /v1 API is open to local programs), so no secret is ever shown.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from dataclasses import dataclass

from meshdesk.core.agents import (AGENTS, CODEX_CONFIG_FILE, INSTALL, KEY_VARIABLE, PI_MODELS_FILE,
                                  PI_PROVIDER, Endpoint, codex_provider, setup_for, toml_value)

SHOWN_CONTEXT = 16384   # what the node serves by default (`--context`), for the agents' own budgeting
KEY_PLACEHOLDER = "\0key\0"  # stands for the key while commands are built, then becomes a shell reference
KEY_REFERENCE = '"${%s:-none}"' % KEY_VARIABLE


@dataclass(frozen=True)
class AgentCommand:
    agent: str
    command: str          # the agent run by hand, its environment set
    setup: str = ""       # a config file to write first, if the agent needs one
    setup_path: str = ""
    run: str = ""         # `meshdesk run AGENT`: starts, configures and runs it in one go
    install: str = ""     # how to install the agent
    note: str = ""        # what else the agent needs by hand


def shell_word(value: str) -> str:
    return value.replace(KEY_PLACEHOLDER, KEY_REFERENCE) if KEY_PLACEHOLDER in value else shlex.quote(value)


def own_launcher(executable: str, frozen: bool, on_path) -> tuple[str, ...]:
    """The command that starts this very MeshDesk: a bundled app's own program, else `meshdesk`
    when it is on PATH, else this Python with `-m meshdesk` (a checkout or a virtualenv)."""
    if frozen:
        return (executable,)
    return ("meshdesk",) if on_path("meshdesk") else (executable, "-m", "meshdesk")


def run_command(agent: str, home: str | None = None, platform: str = sys.platform,
                launcher: tuple[str, ...] = ("meshdesk",)) -> str:
    """`meshdesk run AGENT`, quoted for the platform's shell (cmd.exe on Windows, where a
    POSIX shell's quotes would be part of the folder's name)."""
    quote = (lambda word: subprocess.list2cmdline([word])) if platform == "win32" else shlex.quote
    home_option = f" --home {quote(home)}" if home else ""
    return f"{' '.join(quote(word) for word in launcher)} run{home_option} {agent}"


def agent_command(agent: str, port: int, model: str, home: str | None = None,
                  platform: str = sys.platform, launcher: tuple[str, ...] = ("meshdesk",)) -> AgentCommand:
    endpoint = Endpoint(port, model, KEY_PLACEHOLDER, SHOWN_CONTEXT)
    setup = setup_for(agent, endpoint)
    variables = {**setup.environment, **setup.defaults}
    assignments = [f"{name}={shell_word(value)}" for name, value in variables.items()]
    words = [shell_word(word) for word in setup.command()]
    command = " ".join(assignments + words)
    if setup.unset:
        command = " ".join(f"-u {name}" for name in setup.unset) + " " + command
        command = f"env {command}"
    text, path, note = "", "", ""
    if agent == "pi":
        text = json.dumps({"providers": {PI_PROVIDER: setup.config}}, indent=2)
        path = f"~/{PI_MODELS_FILE}"
        reserve = setup.settings["compaction"]["reserveTokens"]
        note = (f'and in ~/.pi/agent/settings.json "compaction": {{"reserveTokens": {reserve}}}, or pi '
                "summarises the session after every answer (`meshdesk run pi` does both)")
    elif agent == "codex":
        provider = codex_provider(endpoint)
        text = "\n".join(["[model_providers.meshdesk]"] +
                         [f"{name} = {toml_value(value)}" for name, value in provider.items()])
        path = f"~/{CODEX_CONFIG_FILE}"
    return AgentCommand(agent, command, text, path, run_command(agent, home, platform, launcher), INSTALL[agent],
                        note)


def agent_commands(port: int | None, model: str | None, home: str | None = None,
                   platform: str = sys.platform, launcher: tuple[str, ...] = ("meshdesk",)) -> list[AgentCommand]:
    """Empty until the API listens and a model is served."""
    if not port or not model:
        return []
    return [agent_command(agent, port, model, home, platform, launcher) for agent in AGENTS]


LINUX_TERMINALS = (  # the first one installed opens the command; each takes the words after these
    ("x-terminal-emulator", ("-e",)), ("gnome-terminal", ("--",)), ("konsole", ("-e",)),
    ("xfce4-terminal", ("-x",)), ("kitty", ()), ("alacritty", ("-e",)), ("xterm", ("-e",)))


def terminal_command(platform: str, line: str, installed) -> list[str] | None:
    """The program and arguments that open a terminal window running the shell command `line`
    (the shell stays open after it, to read what the agent said); None without a terminal.
    `platform` is `sys.platform`; `installed(name)` says whether a program is on PATH."""
    if platform == "darwin":
        script = 'tell application "Terminal" to do script %s' % json.dumps(line, ensure_ascii=False)
        return ["osascript", "-e", script, "-e", 'tell application "Terminal" to activate']
    if platform == "win32":
        return ["cmd.exe", "/c", "start", "MeshDesk agent", "cmd.exe", "/k", line]
    for program, options in LINUX_TERMINALS:
        if installed(program):
            return [program, *options, "sh", "-c", f'{line}; exec "${{SHELL:-sh}}"']
    return None
