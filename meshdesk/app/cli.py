"""The `meshdesk` command line."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from meshdesk import __version__
from meshdesk.app.command_line import (DEFAULT_CONTEXT, DEFAULT_DRAFT_MAX, OneLineErrorParser, draft_length,
                                       gigabytes, host_and_port, ip_address, node_name, parallel_sequences,
                                       port_number, ratios)
from meshdesk.app.drafts import SPECULATION_MODES
from meshdesk.core.local_api_policy import parse_origin

DEFAULT_API_PORT = 9337
MIN_CONTEXT, MAX_CONTEXT = 512, 1 << 20
COMMANDS = ("invite", "revoke", "remove", "admin", "drop", "models", "download", "run", "relay")


def api_key(text: str) -> str:
    if not re.fullmatch(r"[\x21-\x7e]{1,256}", text):
        raise argparse.ArgumentTypeError("an API key is 1 to 256 visible ASCII characters, no spaces")
    return text


def context_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of tokens: {text!r}") from None
    if not MIN_CONTEXT <= value <= MAX_CONTEXT:
        raise argparse.ArgumentTypeError(f"must be between {MIN_CONTEXT} and {MAX_CONTEXT}, got {value}")
    return value


def web_origin(text: str) -> str:
    try:
        return parse_origin(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="meshdesk",
        description="Pool friends' computers into a private mesh that runs language models "
        "too large for any one of them. Serves an OpenAI-compatible API on 127.0.0.1.",
    )
    parser.add_argument("--version", action="version", version=f"meshdesk {__version__}")
    parser.add_argument("--headless", action="store_true",
                        help="run without the window and tray icon (a server or a terminal)")
    parser.add_argument("--model", action="append", metavar="PATH|NAME",
                        help="GGUF file or model name to serve (default: the built-in SmolLM2-135M-Instruct; "
                        "gemma-3-270m is built in too); "
                        "repeat it to have the mesh serve several models, this node the first")
    parser.add_argument("--port", type=port_number, default=DEFAULT_API_PORT,
                        help=f"API port on 127.0.0.1 (default: {DEFAULT_API_PORT}; 0 picks a free one)")
    parser.add_argument("--home", type=Path, metavar="DIR",
                        help="data folder for config, models, identity and logs "
                        "(default: $MESHDESK_HOME or the platform's data folder)")
    parser.add_argument("--name", type=node_name, help="this node's name in the mesh (default: host name)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads for inference (default: all cores)")
    parser.add_argument("--context", type=context_size, metavar="N",
                        help=f"tokens of context each model this node hosts gets (default: {DEFAULT_CONTEXT}, "
                        "or less where the model was trained for less; coding agents' prompts need 8k-16k)")
    parser.add_argument("--parallel", type=parallel_sequences, metavar="N",
                        help="answers each model this node hosts decodes at once, each with its own "
                        "--context (default: as many as fit in the memory it offers, at most 8); "
                        "beyond them requests wait in turn, and a full queue answers 429")
    parser.add_argument("--client", action="store_true",
                        help="lite client: no model and no llama.cpp, only the API and the mesh")
    parser.add_argument("--exit-with-stdin", action="store_true", help=argparse.SUPPRESS)  # `meshdesk run`'s lifeline
    parser.add_argument("--join", action="append", metavar="TOKEN",
                        help="join a mesh with an invite token or meshdesk://join/ link (repeatable); "
                        "this is consent to join, so a link alone is only shown")
    parser.add_argument("--open-link", metavar="LINK",
                        help="show an invite link (what `meshdesk LINK` does): the window shows the "
                        "mesh and the inviter and joins only when you confirm; headless, it is "
                        "printed and nothing is joined")
    parser.add_argument("--leave-current-mesh", action="store_true",
                        help="let --join leave the mesh this node is in, with its members")
    parser.add_argument("--bind-port", type=port_number, default=0, metavar="N",
                        help="mesh port: QUIC on UDP and TLS on TCP (default: the last one used, "
                        "else a free one)")
    parser.add_argument("--bind-host", type=ip_address, default="0.0.0.0", metavar="ADDRESS",
                        help="address the mesh port listens on (default: all)")
    parser.add_argument("--relay", type=host_and_port, action="append", metavar="HOST:PORT",
                        help="register at this relay (`meshdesk relay` on a server you trust to stay up), so "
                        "friends behind routers no direct path gets through can still reach this node; "
                        "members learn it from this node's record (repeatable; it reads nothing it carries)")
    parser.add_argument("--serve-relay", type=port_number, metavar="PORT",
                        help="relay for this mesh's members on TCP PORT (and UDP ports the system picks), "
                        "when this machine has an address they can reach; not with --client")
    parser.add_argument("--no-mdns", action="store_true", default=bool(os.environ.get("MESHDESK_NO_MDNS")),
                        help="do not announce this node on the LAN or look for members there by mDNS "
                        "(default: on, unless $MESHDESK_NO_MDNS is set; it tells no mesh, id or name)")
    parser.add_argument("--no-download", action="store_true",
                        help="never download a catalog model by itself (by default a node that serves "
                        "nothing downloads one the mesh wants and that fits it, to serve it solo)")
    parser.add_argument("--max-vram", type=gigabytes, metavar="GB",
                        help="cap the memory this node offers the mesh, in GB")
    parser.add_argument("--split", action="store_true",
                        help="split the model across members even when it fits the host")
    parser.add_argument("--tensor-split", type=ratios, metavar="R,R,...",
                        help="manual split ratios, one per member in device order (host last)")
    drafts = parser.add_mutually_exclusive_group()
    drafts.add_argument("--draft", type=Path, metavar="PATH",
                        help="draft model for speculative decoding: a small GGUF with the same "
                        "vocabulary as the model this node hosts (default: the catalog's pairing, "
                        "when that file is in the models folder)")
    drafts.add_argument("--no-draft", action="store_true",
                        help="no draft model, even when the catalog pairs one (--speculative off: "
                        "no speculative decoding at all)")
    parser.add_argument("--draft-max", type=draft_length, default=DEFAULT_DRAFT_MAX, metavar="N",
                        help=f"tokens the draft proposes per step (default: {DEFAULT_DRAFT_MAX})")
    parser.add_argument("--speculative", choices=SPECULATION_MODES, default="auto",
                        help="speculative decoding: auto (a draft model when there is one, else "
                        "n-gram prompt lookup, which backs off while its guesses are rejected), "
                        "draft, ngram, or off (default: auto)")
    parser.add_argument("--api-key", type=api_key, default=os.environ.get("MESHDESK_API_KEY") or None,
                        metavar="KEY",
                        help="make the /v1 API require 'Authorization: Bearer KEY' (default: "
                        "$MESHDESK_API_KEY, which other local users cannot read from the process list; "
                        "unset: open to local programs)")
    parser.add_argument("--allow-origin", type=web_origin, action="append", metavar="ORIGIN",
                        help="let web pages from ORIGIN (e.g. http://localhost:3000) use the API, with "
                        "CORS (repeatable; default: no web page)")
    parser.add_argument("--verbose", action="store_true", help="log progress to the terminal")
    parser.add_argument("--unregister-links", action="store_true",
                        help="remove the meshdesk:// link handler this app registered (Windows; "
                        "the uninstaller runs it) and exit")
    parser.add_argument("--smoke-test", nargs="?", const="-", metavar="REPORT",
                        help="check that this installed app works (llama.cpp with RPC, Qt, a node "
                        "answering a chat), print the report (and write it to REPORT) and exit")
    parser.epilog = ("commands: meshdesk invite | revoke TOKEN | remove NODE_ID | admin NODE_ID | drop MODEL "
                     "| models | download [NAME] | run AGENT [ARGS...] | relay --port N (each with --help)")
    return parser


def links_opened(argv: list[str]) -> list[str]:
    """A bare meshdesk:// argument (the desktop entry's `%u`: a link opened from a browser or a
    file manager) is a link to show, never a join: `--open-link LINK`."""
    opened, after_option = [], False
    for argument in argv:
        if argument.lower().startswith("meshdesk://") and not after_option:
            opened += ["--open-link", argument]
        else:
            opened.append(argument)
        after_option = argument in ("--join", "--open-link")
    return opened


def one_opened_link(argv: list[str]) -> list[str]:
    """Windows's link handler runs `MeshDesk.exe --opened-link "%1"` with the link pasted in raw:
    whatever follows the marker is that one link, so a `"` inside it cannot add options."""
    from meshdesk.adapters.windows_links import OPENED_LINK

    if argv and argv[0] == OPENED_LINK:
        return ["--open-link", " ".join(argv[1:])]
    return argv


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "relay":
        from meshdesk.app.relay_command import run_relay_command

        return run_relay_command(argv[1:])
    if argv and argv[0] in COMMANDS:
        from meshdesk.app.commands import run_command

        return run_command(argv[0], argv[1:])
    argv = links_opened(one_opened_link(argv))
    arguments = build_parser().parse_args(argv)
    if arguments.threads is not None and arguments.threads < 1:
        build_parser().error("--threads must be at least 1")
    if arguments.serve_relay is not None and arguments.client:
        build_parser().error("--serve-relay is for full nodes: a lite client (--client) relays for nobody")
    from meshdesk.app.launch import launch

    return launch(arguments)
