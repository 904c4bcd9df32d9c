"""Task ids: 32 hex characters laid out as a UUIDv7, so that an id tells when its task was made.

The first 48 bits are the Unix time in milliseconds, then the version nibble 7, 12 random
bits, the variant bits 10 and 62 random bits (RFC 9562). Ids sort by time, and the time points
at the archive segment that holds the task's `task.submitted`. Ids made before this layout
(random UUIDv4 hex) carry no time: `made_at_ms` says None for them.
"""

from __future__ import annotations

import os
import time

RANDOM_BYTES = 10  # 80 bits, of which 74 are used


def new_task_id(now_ms: int | None = None, random: bytes | None = None) -> str:
    """A time-ordered task id made at `now_ms` (default: now) from `random` (default: the OS's)."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    noise = int.from_bytes(os.urandom(RANDOM_BYTES) if random is None else random[:RANDOM_BYTES], "big")
    rand_a, rand_b = (noise >> 62) & 0xFFF, noise & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return f"{value:032x}"


def made_at_ms(task_id: str) -> int | None:
    """The millisecond a time-ordered id was made at, or None for an id of any other layout."""
    if len(task_id) != 32 or task_id[12] != "7" or task_id[16] not in "89ab":
        return None
    try:
        return int(task_id[:12], 16)
    except ValueError:
        return None
