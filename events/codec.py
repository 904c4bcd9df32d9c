"""The one codec: events to flat stream fields of plain JSON and back, with upcasters."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec
import orjson

from events.catalogue import EVENT_TYPES, Event, StoredEvent
from events.errors import EventDecodeError

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

# (type, stored version) -> function lifting that version's data one version up.
UPCASTERS: dict[tuple[str, int], Upcaster] = {}

# Each type's current version as `encode` writes it in the `v` field.
_CURRENT: dict[str, str] = {kind: str(cls.version) for kind, cls in EVENT_TYPES.items()}

# An event stored at its current version decodes from its JSON straight into its dataclass,
# typed fields checked, in msgspec's C code (a field its type does not name is passed over, as
# a tolerant reader does). Whatever that refuses (NaN, a wrong shape, a missing field) takes
# the general path below, which says what is wrong or reads it anyway.
# Keyed by (type, v) as text and as the bytes a raw read gives (`RedisEventStore.read_flat`).
_DIRECT: dict[tuple[str | bytes, str | bytes], msgspec.json.Decoder[Any]] = {}
for _kind, _cls in EVENT_TYPES.items():
    _decoder = msgspec.json.Decoder(_cls)
    _DIRECT[_kind, str(_cls.version)] = _DIRECT[_kind.encode(), str(_cls.version).encode()] = _decoder
# The names of an entry's 1st, 2nd and 4th fields as `encode` writes them, as text and as bytes.
_LAYOUTS = frozenset({("type", "v", "data"), (b"type", b"v", b"data")})


def encode(event: Event) -> dict[str, str]:
    """The stream fields of an event: `type`, `v`, `task` and `data` (JSON)."""
    data = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
    return {
        "type": event.type,
        "v": str(event.version),
        "task": str(data.get("task_id", "")),
        "data": _json(data),
    }


def _json(data: dict[str, Any]) -> str:
    """`data` as compact JSON with sorted keys and non-ASCII text escaped.

    orjson writes it about three times faster than the standard encoder, and the same text
    but for how an exponent is spelt (`1e-5` for `1e-05`: the same number). What orjson
    writes otherwise (UTF-8 text, DEL as itself where the standard encoder escapes it, NaN or
    an infinity as null) and what it cannot write (an integer over 64 bits) go to the
    standard encoder, so those are stored as before.
    """
    try:
        fast = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        fast = b"null"
    if fast.isascii() and b"null" not in fast and b"\x7f" not in fast:
        return fast.decode()
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def decode(fields: Mapping[str, str], upcasters: Mapping[tuple[str, int], Upcaster] = UPCASTERS) -> Event:
    """The event stored in these stream fields, upcast to the current schema version."""
    try:
        kind, v, text = fields["type"], fields["v"], fields["data"]
    except KeyError as exc:
        raise EventDecodeError(f"malformed stream entry: {exc}") from exc
    return _decode(kind, v, text, upcasters)


def decode_entries(
    entries: Sequence[tuple[str, Mapping[str, str]]], types: frozenset[str] | None = None
) -> list[StoredEvent]:
    """Stream entries (id, fields) decoded in order; with `types`, only those of these event
    types (the others are skipped unread)."""
    if types is None:
        return [StoredEvent(eid, decode(fields)) for eid, fields in entries]
    return [StoredEvent(eid, decode(fields)) for eid, fields in entries if fields.get("type") in types]


def decode_flat(flat: Sequence[str] | Sequence[bytes]) -> Event:
    """`decode` of an entry's fields as XRANGE returns them: name, value, name, value, ...,
    as text or as bytes."""
    if len(flat) == 8 and (flat[0], flat[2], flat[6]) in _LAYOUTS:
        return _decode(flat[1], flat[3], flat[7], UPCASTERS)
    fields = [_text(field) for field in flat]
    return decode(dict(zip(fields[::2], fields[1::2], strict=False)))


def _text(value: str | bytes) -> str:
    """A field as text; one of a raw read that is not UTF-8 is a malformed entry."""
    if isinstance(value, str):
        return value
    try:
        return value.decode()
    except UnicodeDecodeError as exc:
        raise EventDecodeError(f"malformed stream entry: {exc}") from exc


def _decode(
    kind: str | bytes, v: str | bytes, text: str | bytes, upcasters: Mapping[tuple[str, int], Upcaster]
) -> Event:
    direct = _DIRECT.get((kind, v))
    if direct is not None:
        try:
            event: Event = direct.decode(text)
        except msgspec.MsgspecError:
            pass
        else:
            return event
    return _decode_slowly(_text(kind), _text(v), _text(text), upcasters)


def _decode_slowly(kind: str, v: str, text: str, upcasters: Mapping[tuple[str, int], Upcaster]) -> Event:
    """What the direct decoders refuse: an older version, NaN, or a mistake to name."""
    try:
        # The common case, an event stored at its current version, needs no upcasting.
        version = None if v == _CURRENT.get(kind) else int(v)
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:  # what orjson refuses and the standard parser reads (NaN)
            data = json.loads(text)
    except (ValueError, TypeError) as exc:
        raise EventDecodeError(f"malformed stream entry: {exc}") from exc
    cls = EVENT_TYPES.get(kind)
    if cls is None:
        raise EventDecodeError(f"unknown event type {kind!r}")
    if not isinstance(data, dict):
        raise EventDecodeError(f"{kind}: data is not a JSON object")
    if version is not None:
        while version < cls.version:
            step = upcasters.get((kind, version))
            if step is None:
                raise EventDecodeError(f"{kind}: no upcaster from version {version}")
            data = step(data)
            version += 1
        if version != cls.version:
            raise EventDecodeError(f"{kind}: version {version} is newer than {cls.version}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise EventDecodeError(f"{kind}: {exc}") from exc


def log_entry(fields: Mapping[str, str]) -> str:
    """One JSON line of a task's audit trail, made from an event's stream fields."""
    return f'{{"type":{json.dumps(fields["type"])},"v":{int(fields["v"])},"data":{fields["data"]}}}'
