"""The intake switch's events: an operator paused or resumed the acceptance of new tasks.

While intake is paused every submit is refused with a 503 and nothing is charged; tasks
already queued keep running. The switch lives in the stream, so a restart keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, slots=True, kw_only=True)
class IntakePaused:
    """New submits are refused from now on; a refused client is told to come back after
    `retry_after` seconds. `by` is the operator's user id, `reason` what they said."""

    type: ClassVar[str] = "intake.paused"
    version: ClassVar[int] = 1
    reason: str = ""
    retry_after: int
    by: str = ""
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class IntakeResumed:
    """New submits are accepted again."""

    type: ClassVar[str] = "intake.resumed"
    version: ClassVar[int] = 1
    by: str = ""
    at: float
