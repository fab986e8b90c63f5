"""Which draft model a model host runs for speculative decoding: `--draft`, `--no-draft`, or the
catalog's pairing when the paired file is in a models folder (`assembly.auto_draft`)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from meshdesk.adapters.gguf_metadata import ModelFileError, read_model_info
from meshdesk.app.model_choice import ModelChoiceError

DEFAULT_DRAFT_MAX = 8


@dataclass(frozen=True)
class DraftChoice:
    explicit: Path | None = None   # --draft PATH, validated
    disabled: bool = False         # --no-draft
    max_tokens: int = DEFAULT_DRAFT_MAX


def choose_draft(arguments: argparse.Namespace) -> DraftChoice:
    """The command line's draft options; a `--draft` that is not a usable GGUF is refused."""
    explicit = getattr(arguments, "draft", None)
    max_tokens = getattr(arguments, "draft_max", DEFAULT_DRAFT_MAX)
    if explicit is not None:
        path = Path(explicit).expanduser()
        try:
            read_model_info(path)
        except ModelFileError as error:
            raise ModelChoiceError(f"--draft: {error}") from None
        explicit = path.resolve()
    return DraftChoice(explicit, bool(getattr(arguments, "no_draft", False)), max_tokens)


def host_arguments(draft: Path | None, choice: DraftChoice) -> list[str]:
    """The model host's command-line options for this draft (none without one)."""
    if draft is None:
        return []
    return ["--draft", str(draft), "--draft-max", str(choice.max_tokens)]
