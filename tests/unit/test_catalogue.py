"""The event catalogue: one `type` string per event class of the union."""

from __future__ import annotations

from typing import get_args

from events.catalogue import EVENT_TYPES, Event


def test_every_event_class_has_its_own_type_string() -> None:
    """No two event classes share a stored `type`, so the codec finds each one."""
    classes = get_args(Event)
    assert len(EVENT_TYPES) == len(classes)
    assert set(EVENT_TYPES.values()) == set(classes)
