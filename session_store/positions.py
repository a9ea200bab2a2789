"""Stream positions (Redis entry IDs ``<ms>-<seq>``): parsing and ordering."""

from __future__ import annotations

ZERO = "0-0"


def parse(pos: str) -> tuple[int, int]:
    """``"1700000000000-3"`` -> ``(1700000000000, 3)``; raises ValueError if malformed."""
    ms, _, seq = pos.partition("-")
    if not ms.isdigit() or (seq and not seq.isdigit()):
        raise ValueError(f"not a stream position: {pos!r}")
    return int(ms), int(seq or 0)


def is_valid(pos: str) -> bool:
    try:
        parse(pos)
    except ValueError:
        return False
    return True


def after(a: str, b: str) -> bool:
    """True if position ``a`` comes strictly after ``b``."""
    return parse(a) > parse(b)


def time_ms(pos: str) -> int:
    """An event's time is the millisecond part of its position."""
    return parse(pos)[0]
