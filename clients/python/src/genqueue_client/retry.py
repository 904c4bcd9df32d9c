"""What the client retries and how long it waits: pure rules, with time and randomness passed in.

Retried: no answer (the connection failed, broke or timed out), a 429 and a 503 (and a
gateway's 502 or 504) after their `Retry-After`. Every request the client makes is safe to
repeat: reads and cancels are, and a submit always carries an idempotency key, so its repeat
answers with the first task instead of charging again.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from genqueue_client.errors import ConnectionFailed, GenqueueError, RateLimited, Unavailable

# A failed request is retried only when it is one of these; a 4xx other than 429 is an answer.
RETRYABLE = (ConnectionFailed, RateLimited, Unavailable)
# httpx's failures in which no answer came, and a repeat may get one; a request the client
# built wrongly (LocalProtocolError) or an unsupported URL would fail the same way again.
NO_ANSWER = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


@dataclass(frozen=True, slots=True)
class Retries:
    """How often and how long a request is tried.

    `attempts` counts every try, the first included (1: no retry). No retry starts later than
    `total_seconds` after the first try began, waits included. Without a `Retry-After` the
    waits are full-jitter exponential: up to `base_seconds`, doubling per retry, at most
    `cap_seconds`. A `Retry-After` is waited whole, plus up to `jitter` of it so that clients
    told the same second do not all come back in it.
    """

    attempts: int = 4
    total_seconds: float = 60.0
    base_seconds: float = 0.25
    cap_seconds: float = 8.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.total_seconds < 0 or self.base_seconds < 0 or self.cap_seconds < 0:
            raise ValueError(f"retries need attempts >= 1 and times >= 0, got {self}")

    @classmethod
    def of(cls, retries: int | Retries) -> Retries:
        """A policy from a count of retries (0: try once) or a policy."""
        if isinstance(retries, Retries):
            return retries
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        return cls(attempts=retries + 1)

    def wait(self, error: GenqueueError, tried: int, elapsed: float, unit: float) -> float | None:
        """Seconds to wait before the next try after try number `tried` failed with `error`,
        `elapsed` seconds after the first began; None to give up. `unit` is a random number
        in [0, 1)."""
        if not isinstance(error, RETRYABLE) or tried >= self.attempts:
            return None
        if error.retry_after is not None:
            delay = error.retry_after * (1 + self.jitter * unit)
        else:
            delay = unit * min(self.cap_seconds, self.base_seconds * 2.0 ** (tried - 1))
        return delay if elapsed + delay <= self.total_seconds else None


NO_RETRIES = Retries(attempts=1)
