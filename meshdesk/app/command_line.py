"""What the `meshdesk` command and its subcommands share: one-line errors and argument types.

A leaf module (it imports no other part of the app), so that `cli`, `commands` and
`model_commands` can all use it without importing each other.
"""

from __future__ import annotations

import argparse
import re
import sys

DEFAULT_DRAFT_MAX, MAX_DRAFT_MAX = 8, 64
# Tokens of context a hosted model gets: coding agents' one prompt is ~12k tokens for Claude
# Code and ~7.5k for opencode (measured), so 16k, or less where the model was trained for less.
DEFAULT_CONTEXT = 16384


class CommandFailed(Exception):
    """One line for the user; exit code 2."""


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a mistake is one line on stderr and exit code 2."""

    def error(self, message: str) -> None:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(2)


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be between 0 and 65535, got {port}")
    return port


def node_name(text: str) -> str:
    name = text.strip()
    if not name or len(name) > 64 or not name.isprintable():
        raise argparse.ArgumentTypeError("a node name is 1 to 64 printable characters")
    return name


def gigabytes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of GB: {text!r}") from None
    if not 0 <= value < 1e6:
        raise argparse.ArgumentTypeError(f"GB must be between 0 and 1000000, got {text}")
    return value


MOST_PARALLEL = 64  # the model host child's own limit (adapters.llama.host)


def parallel_sequences(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of answers: {text!r}") from None
    if not 1 <= value <= MOST_PARALLEL:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MOST_PARALLEL}, got {value}")
    return value


def ratios(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of ratios: {text!r} (e.g. 1,2)") from None
    if not values or any(value < 0 for value in values) or sum(values) <= 0:
        raise argparse.ArgumentTypeError(f"ratios must be non-negative and not all zero: {text!r}")
    return values


def draft_length(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of tokens: {text!r}") from None
    if not 1 <= value <= MAX_DRAFT_MAX:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_DRAFT_MAX}, got {value}")
    return value


def ip_address(text: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None


def host_and_port(text: str) -> tuple[str, int]:
    """HOST:PORT, with a host name or an IPv4 literal (`--relay`)."""
    host, separator, port_text = text.strip().rpartition(":")
    if not separator or not host or not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", host):
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (a host name or IPv4 address), not {text!r}")
    port = port_number(port_text)
    if port == 0:
        raise argparse.ArgumentTypeError(f"a relay's port is 1 to 65535, not 0 in {text!r}")
    return host, port
