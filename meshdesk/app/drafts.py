"""How a model host speculates (`--speculative`), and which draft model it runs: `--draft`,
`--no-draft`, or the catalog's pairing when the paired file is in a models folder
(`assembly.auto_draft`).

auto: the draft when there is one and it loads, else prompt lookup (n-gram), which needs no
second model. draft: the draft only; a model with none serves without speculation, and its
status says why. ngram: prompt lookup only (no draft is looked for). off: neither.
`--no-draft` drops the draft, not speculation: auto then means prompt lookup."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from meshdesk.adapters.gguf_metadata import ModelFileError, read_model_info
from meshdesk.app.model_choice import ModelChoiceError

DEFAULT_DRAFT_MAX = 8
SPECULATION_MODES = ("auto", "draft", "ngram", "off")


@dataclass(frozen=True)
class DraftChoice:
    explicit: Path | None = None   # --draft PATH, validated
    disabled: bool = False         # --no-draft, or a mode that runs no draft
    max_tokens: int = DEFAULT_DRAFT_MAX
    speculation: str = "auto"      # --speculative


def choose_draft(arguments: argparse.Namespace) -> DraftChoice:
    """The command line's speculation options; a `--draft` that is not a usable GGUF, or one
    that the mode would not run, is refused."""
    explicit = getattr(arguments, "draft", None)
    max_tokens = getattr(arguments, "draft_max", DEFAULT_DRAFT_MAX)
    speculation = getattr(arguments, "speculative", None) or "auto"
    disabled = bool(getattr(arguments, "no_draft", False))
    if speculation == "draft" and disabled:
        raise ModelChoiceError("--speculative draft needs a draft: drop --no-draft")
    if speculation in ("ngram", "off") and explicit is not None:
        raise ModelChoiceError(f"--draft is not used with --speculative {speculation}")
    if explicit is not None:
        path = Path(explicit).expanduser()
        try:
            read_model_info(path)
        except ModelFileError as error:
            raise ModelChoiceError(f"--draft: {error}") from None
        explicit = path.resolve()
    return DraftChoice(explicit, disabled or speculation in ("ngram", "off"), max_tokens, speculation)


def host_arguments(draft: Path | None, choice: DraftChoice) -> list[str]:
    """The model host's command-line options for this mode and draft."""
    arguments = ["--speculative", choice.speculation]
    if draft is None:
        return arguments
    return [*arguments, "--draft", str(draft), "--draft-max", str(choice.max_tokens)]
