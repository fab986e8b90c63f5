"""`meshdesk run goose|opencode|pi|claude|codex [ARGS...]`: a coding agent on the mesh's API.

The node running for the home serves the API, else a lite client started for the run does
(`app.agent_client`); once the mesh serves a model, the best one (`core.agents.best_model`,
or `--model`) is the agent's, its config points at the API (`core.agents.setup_for`), and the
agent runs with the terminal. ARGS go to the agent unchanged, and its exit code is ours.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from meshdesk.app.agent_client import LiteClient, local_sizes, node_for_run, say, v1_key_works, wait_for_models
from meshdesk.app.assembly import DEFAULT_CONTEXT
from meshdesk.app.command_line import CommandFailed, OneLineErrorParser
from meshdesk.app.home import Home, default_home
from meshdesk.app.model_choice import bundled_catalog
from meshdesk.core.status import StatusSnapshot
from meshdesk.core.agents import (AGENTS, CODEX_CONFIG_FILE, KEY_VARIABLE, PI_MODELS_FILE, PI_SETTINGS_FILE,
                                  AgentSetup, ConfigFileError, Endpoint, best_model, merge_codex_config,
                                  merge_pi_models, merge_pi_settings, not_installed, setup_for)

NOT_INSTALLED = 127   # what a shell answers for a command it cannot find
DEFAULT_WAIT_SECONDS = 180.0
OPEN_API_KEY = "none"  # a node whose /v1 API is open checks no key; agents insist on one


def parser() -> argparse.ArgumentParser:
    command = OneLineErrorParser(
        prog="meshdesk run", description="Run a coding agent against the mesh's API: the node running "
        "for this home, or a lite client started for the run and stopped after it. Options go before "
        "AGENT; everything after it goes to the agent unchanged.")
    command.add_argument("--home", type=Path, metavar="DIR",
                         help="the node's data folder (default: $MESHDESK_HOME or the platform's)")
    command.add_argument("--model", metavar="ID", help="the model to use (default: the best one served: "
                         "a chat-tuned model over a base one, then the largest)")
    command.add_argument("--wait", type=float, default=DEFAULT_WAIT_SECONDS, metavar="SECONDS",
                         help=f"how long to wait for a served model (default: {DEFAULT_WAIT_SECONDS:.0f})")
    command.add_argument("--max-tokens", type=int, default=None, metavar="N",
                         help="the most tokens the agent asks for in one answer (default: a quarter of "
                         "the model's context, at most 2048); less answers sooner on a slow mesh")
    command.add_argument("--join", action="append", default=[], metavar="TOKEN",
                         help="for a lite client started now: join this mesh first (an invite token or link)")
    command.add_argument("--api-key", default=None, metavar="KEY",
                         help=f"the key the running node's /v1 API checks (default: ${KEY_VARIABLE})")
    command.add_argument("agent", choices=AGENTS, help="the agent to run")
    command.add_argument("arguments", nargs=argparse.REMAINDER, help="passed to the agent unchanged")
    return command


def run_agent_command(argv: list[str]) -> int:
    arguments = parser().parse_args(argv)
    if arguments.max_tokens is not None and arguments.max_tokens < 1:
        parser().error("--max-tokens must be at least 1")
    program = shutil.which(arguments.agent)
    if program is None:
        sys.stderr.write(f"meshdesk run: {not_installed(arguments.agent)}\n")
        return NOT_INSTALLED
    home = Home((arguments.home or default_home()).expanduser().resolve())
    client: LiteClient | None = None
    try:
        with stopping_on_signals():
            node, client = node_for_run(home, arguments.join)
            models, status = wait_for_models(node, arguments.model, arguments.wait, client)
            model = arguments.model or best_model(models, local_sizes(status))
            key = client.api_key if client is not None else node_key(node, arguments.api_key)
            endpoint = Endpoint(node.port, model, key, context_for(model, status), arguments.max_tokens)
            setup = setup_for(arguments.agent, endpoint)
            write_config(setup, endpoint.context)
            where = "a lite client started for this run" if client else f"the node of {home.root}"
            say(f"{arguments.agent} uses {model} through {where} (http://127.0.0.1:{node.port}/v1)")
            return run_program(program, setup, arguments.arguments)
    except CommandFailed as failure:
        sys.stderr.write(f"meshdesk run: error: {failure}\n")
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        if client is not None:
            client.stop()


def node_key(node, given: str | None) -> str:
    """The key for a node already running: the one it checks, or a stand-in when it checks none."""
    key = given or os.environ.get(KEY_VARIABLE) or None
    if v1_key_works(node, key):
        return key or OPEN_API_KEY
    raise CommandFailed(f"the node's /v1 API needs the key it was started with (--api-key): "
                        f"{'that key is not it' if key else f'set {KEY_VARIABLE} or pass --api-key'}")


def context_for(model: str, status: StatusSnapshot | None) -> int:
    """The context the model's host gives it, as the node's status says (its own model host's,
    or what a remote host plans for); else the catalog's rule."""
    served = next((entry.context for entry in status.models if entry.id == model and entry.context),
                  None) if status is not None else None
    found = bundled_catalog().by_local_file(f"{model}.gguf") if served is None else []
    return agent_context(served, found[0].context_length if found else None)


def agent_context(served: int | None, trained: int | None) -> int:
    """The context an agent budgets for: the host's own when known, else the node's default,
    or less where the model was trained for less."""
    if served:
        return served
    return min(DEFAULT_CONTEXT, trained) if trained else DEFAULT_CONTEXT


def config_path(relative: str) -> Path:
    """Where the agent reads a config file, the agents' own overrides of their folder honoured."""
    if relative.startswith(".pi/agent/") and os.environ.get("PI_CODING_AGENT_DIR"):
        return Path(os.environ["PI_CODING_AGENT_DIR"]).expanduser() / Path(relative).name
    if relative == CODEX_CONFIG_FILE and os.environ.get("CODEX_HOME"):
        return Path(os.environ["CODEX_HOME"]).expanduser() / "config.toml"
    return Path.home() / relative


def write_config(setup: AgentSetup, context: int) -> None:
    """Merges our provider (and pi's settings) into the agent's files, keeping the user's
    entries; a file that is not what it should be is left alone, and the run stops saying so."""
    if setup.config_file == PI_MODELS_FILE:
        merge_file(config_path(PI_MODELS_FILE), lambda text: merge_pi_models(text, setup.config))
    elif setup.config_file == CODEX_CONFIG_FILE:
        merge_file(config_path(CODEX_CONFIG_FILE), lambda text: merge_codex_config(text, setup.config))
    if setup.settings:
        merge_file(config_path(PI_SETTINGS_FILE), lambda text: merge_pi_settings(text, setup.settings, context))


def merge_file(path: Path, merge) -> None:
    """`merge(text or None)` gives the new text, or None for no change; written atomically, to
    the file a symlink names (dotfiles kept in a repository stay links)."""
    path = path.resolve()
    try:
        existing = path.read_text(encoding="utf-8") if path.exists() else None
        text = merge(existing)
    except ConfigFileError as error:
        raise CommandFailed(f"not changing {path}: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise CommandFailed(f"cannot read {path}: {error}") from None
    if text is None or text == existing:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(text, encoding="utf-8")
        if path.exists():
            os.chmod(temporary, path.stat().st_mode & 0o7777)
        os.replace(temporary, path)
    except OSError as error:
        raise CommandFailed(f"cannot write {path}: {error}") from None


def agent_environment(setup: AgentSetup) -> dict[str, str]:
    environment = {**setup.defaults, **{name: value for name, value in os.environ.items()
                                         if name not in setup.unset}}
    environment.update(setup.environment)
    return environment


def run_program(program: str, setup: AgentSetup, user_arguments: list[str]) -> int:
    """The agent in the foreground: Ctrl+C is the agent's to handle (it reaches the whole
    foreground group), so this process only waits, and answers with the agent's exit code."""
    command = [program, *setup.command(user_arguments)[1:]]
    process = subprocess.Popen(command, env=agent_environment(setup))
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code = process.wait()
    except BaseException:
        process.terminate()
        process.wait()
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
    return 128 - code if code < 0 else code


STOPPING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class stopping_on_signals:
    """SIGTERM, or SIGHUP (the terminal closed), to `meshdesk run` ends the run like Ctrl+C
    would: the agent and the client stop."""

    def __enter__(self):
        self.previous = {number: signal.signal(number, self._raise) for number in STOPPING_SIGNALS}
        return self

    @staticmethod
    def _raise(signal_number, frame):
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        for number, previous in self.previous.items():
            signal.signal(number, previous)
        return False
