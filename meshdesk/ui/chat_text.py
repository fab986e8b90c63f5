"""A chat transcript as Markdown text (a Qt-free view model; `transcript` shows it).

Under each answer a line says how fast it came and which machines served it."""

from __future__ import annotations

import re

FENCE = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")
FINISH_NOTES = {"stopped": "stopped", "length": "cut off at the length limit", "error": "failed"}


def answer_facts(tokens_per_second: float | None, served_by: tuple[str, ...]) -> str:
    """E.g. "31.2 tok/s · served by alice, bob"; "" when nothing was measured."""
    facts = []
    if tokens_per_second:
        facts.append(f"{tokens_per_second:.1f} tok/s")
    if served_by:
        facts.append("served by " + ", ".join(escaped(name) for name in served_by))
    return " · ".join(facts)


def escaped(text: str) -> str:
    """A peer's name shown as written: no Markdown of its own (it came from the network)."""
    return "".join("\\" + char if char in "\\`*_{}[]()<>#+-.!|~" else char for char in text)


def message_markdown(role: str, content: str, model: str | None, finish_reason: str | None,
                     tokens_per_second: float | None = None, served_by: tuple[str, ...] = ()) -> str:
    speaker = "You" if role == "user" else (model or role)
    note = FINISH_NOTES.get(finish_reason or "")
    body = content if content.strip() else "…"
    # A code fence left open by a cut-off reply must not swallow the next message.
    if body.count("```") % 2:
        body += "```" if body.endswith("\n") else "\n```"
    if note:
        body += f"\n\n*({note})*"
    facts = answer_facts(tokens_per_second, served_by)
    if facts:
        body += f"\n\n*{facts}*"
    return f"**{escaped(speaker)}**\n\n{body}"


def transcript_markdown(messages: list, streaming: str | None = None, streaming_model: str = "") -> str:
    parts = [message_markdown(m.role, m.content, m.model, m.finish_reason,
                              getattr(m, "tokens_per_second", None), getattr(m, "served_by", ()))
             for m in messages]
    if streaming is not None:
        parts.append(message_markdown("assistant", streaming, streaming_model, None))
    return "\n\n".join(parts)


def fenced_line_counts(markdown: str) -> list[int]:
    """How many lines of code each fenced block of `markdown` holds, in order. Qt's document
    marks code lines but not where one block ends and the next begins, so the transcript splits
    back-to-back blocks with these counts (fences nested in lists are not counted)."""
    counts, fence, lines = [], None, 0
    for line in markdown.split("\n"):
        found = FENCE.fullmatch(line.rstrip())
        if fence is None:
            backtick_in_info = found and found.group(1)[0] == "`" and "`" in found.group(2)
            if found and not backtick_in_info:
                fence, lines = found.group(1), 0
        elif found and not found.group(2).strip() and found.group(1)[0] == fence[0] \
                and len(found.group(1)) >= len(fence):
            counts.append(lines)
            fence = None
        else:
            lines += 1
    if fence is not None:
        counts.append(lines)
    return counts
