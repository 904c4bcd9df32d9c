"""The error tree of the event layer.

GenqueueError
├── EventDecodeError        a stream entry that no codec path turns into an event
└── StoreUnavailableError   the event store could not be reached
"""

from __future__ import annotations


class GenqueueError(Exception):
    """Root of every error genqueue raises on purpose."""


class EventDecodeError(GenqueueError):
    """A stream entry could not be decoded into a known event."""


class StoreUnavailableError(GenqueueError):
    """The event store (Redis or Valkey) did not answer."""
