"""A download progress bar for the terminal, fed (done, total) byte counts."""

from __future__ import annotations

import time
from typing import Callable, TextIO

REDRAW_EVERY_S = 0.1
PLAIN_STEP_PERCENT = 10  # without a terminal: one line per 10%


def describe_bytes(count: float) -> str:
    return f"{count / 1e9:.2f} GB" if count >= 1e9 else f"{count / 1e6:.1f} MB"


class ProgressBar:
    """`label [#######.......]  45%  1.21 / 2.70 GB  35.2 MB/s`, redrawn in place on a
    terminal; on a pipe or log file, a plain line every 10% instead."""

    def __init__(self, stream: TextIO, label: str, clock: Callable[[], float] = time.monotonic,
                 width: int = 28):
        self.stream, self.label, self.clock, self.width = stream, label, clock, width
        self.interactive = stream.isatty()
        self.started: tuple[float, int] | None = None  # when and at how many bytes we began
        self.last_drawn = float("-inf")
        self.last_step = -1
        self.line = ""

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        if self.started is None:
            self.started = (now, done)
        self.line = self.render(done, total, now)
        if self.interactive:
            if now - self.last_drawn >= REDRAW_EVERY_S or done >= total:
                self.stream.write("\r" + self.line)
                self.stream.flush()
                self.last_drawn = now
        else:
            step = int(100 * done / total) // PLAIN_STEP_PERCENT if total else 0
            if step != self.last_step:
                self.stream.write(self.line + "\n")
                self.last_step = step

    def render(self, done: int, total: int, now: float) -> str:
        fraction = min(1.0, done / total) if total else 1.0
        filled = round(fraction * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        return (f"{self.label} [{bar}] {fraction * 100:3.0f}%  {describe_bytes(done)} / "
                f"{describe_bytes(total)}  {self.speed(done, now)}")

    def speed(self, done: int, now: float) -> str:
        began_at, began_with = self.started or (now, done)
        elapsed = now - began_at
        return f"{describe_bytes((done - began_with) / elapsed)}/s" if elapsed > 0.5 else ""

    def finish(self) -> None:
        if self.interactive and self.line:
            self.stream.write("\n")
            self.stream.flush()
