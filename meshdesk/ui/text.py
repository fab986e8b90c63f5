"""How numbers from a status snapshot read on screen; a missing value is always a dash."""

from __future__ import annotations

DASH = "—"
GIB = 1024 ** 3


def gigabytes(byte_count) -> str:
    if not isinstance(byte_count, (int, float)) or isinstance(byte_count, bool):
        return DASH
    value = byte_count / GIB
    return f"{value:.0f} GB" if value >= 10 else f"{value:.1f} GB"


def byte_size(byte_count) -> str:
    """Any amount, in the unit that reads best (traffic counters go from bytes to gigabytes)."""
    if not isinstance(byte_count, (int, float)) or isinstance(byte_count, bool):
        return DASH
    for unit, size in (("GB", GIB), ("MB", 1024 ** 2), ("KB", 1024)):
        if byte_count >= size:
            return f"{byte_count / size:.1f} {unit}"
    return f"{int(byte_count)} B"


def share_percent(share) -> str:
    """A split share as a percentage; plans may give a fraction (0.67) or a percentage (67)."""
    if not isinstance(share, (int, float)) or isinstance(share, bool):
        return DASH
    percent = share * 100 if share <= 1 else share
    return f"{percent:.0f}%"


def milliseconds(rtt) -> str:
    if not isinstance(rtt, (int, float)) or isinstance(rtt, bool):
        return DASH
    return f"{rtt:.0f} ms" if rtt >= 10 else f"{rtt:.1f} ms"


def layer_range(layers) -> str:
    """Plans may give a layer count, a [first, last] pair or a list of layer numbers."""
    if isinstance(layers, bool):
        return DASH
    if isinstance(layers, int):
        return f"{layers} layers"
    if isinstance(layers, (list, tuple)) and layers and all(isinstance(n, int) for n in layers):
        if len(layers) == 2:
            return f"layers {layers[0]}–{layers[1]}"
        return f"{len(layers)} layers"
    return DASH


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def expiry(expires_at, now: float) -> str:
    """'never', 'expired', or how long an invite stays valid."""
    if not isinstance(expires_at, (int, float)):
        return DASH
    if expires_at == 0:
        return "never expires"
    if expires_at <= now:
        return "expired"
    return f"expires in {duration(expires_at - now)}"


def text_or_dash(value) -> str:
    if value is None or value == "":
        return DASH
    return str(value)
