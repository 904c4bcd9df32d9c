"""The codec: plain JSON fields, round trips, upcasters and clear errors."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from events.catalogue import EVENT_TYPES, StoredEvent, TaskSubmitted, TaskSucceeded, TokenRevoked
from events.codec import decode, decode_entries, decode_flat, encode
from events.errors import EventDecodeError

text = st.text(max_size=50)


@given(
    text,
    text,
    st.sampled_from(["photography", "fitting"]),
    text,
    st.floats(0, 2e9, allow_nan=False),
)
def test_submitted_round_trips(task_id: str, user: str, kind: str, prompt: str, at: float) -> None:
    """Any task.submitted decodes to an equal event."""
    event = TaskSubmitted(
        task_id=task_id, user_id=user, kind=kind, prompt=prompt, inputs={"person": "x"}, at=at
    )
    assert decode(encode(event)) == event


@given(text, text, st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**70), 2**70))
@example("", "\x7f", 0.0, 0)  # DEL: written as itself by one encoder, escaped by the other
@example("", "", 6.103515625e-05, 0)  # written 0.00006103515625 by one encoder, with an exponent by the other
def test_data_is_written_as_the_standard_encoder_writes_it_but_for_an_exponents_spelling(
    prompt: str, user: str, at: float, price: int
) -> None:
    """Sorted keys, compact, non-ASCII text escaped; NaN, infinities and integers over 64 bits
    as the standard encoder writes them. The fast encoder may write a float otherwise (`1e-5`
    for `1e-05`, `6.103515625e-5` for `0.00006103515625`), never another number."""
    event = TaskSubmitted(
        task_id="t", user_id=user, kind="fitting", prompt=prompt, inputs={}, max_price=price, at=at
    )
    data = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
    standard = json.dumps(data, separators=(",", ":"), sort_keys=True)
    written = encode(event)["data"]
    assert written.isascii()
    if written != standard:  # only a float's spelling may differ, never its value or the order
        assert json.loads(written) == json.loads(standard)
        assert list(json.loads(written)) == sorted(data)
        assert re.sub(r"[-+0-9.e]+", "#", written) == re.sub(r"[-+0-9.e]+", "#", standard)


def test_fields_are_plain_json_any_client_can_read() -> None:
    """The stream fields are strings; data is a JSON object; the task id is a field of its own."""
    event = TaskSucceeded(task_id="t1", attempt=2, result="r", mime_type="image/png", elapsed=1.5, at=3.0)
    fields = encode(event)
    assert fields["type"] == "task.succeeded" and fields["v"] == "1" and fields["task"] == "t1"
    assert json.loads(fields["data"])["attempt"] == 2


def test_every_event_type_is_past_tense_and_dotted() -> None:
    """Event names are `noun.past_tense_verb`."""
    for name in EVENT_TYPES:
        noun, _, verb = name.partition(".")
        assert noun and any(word.endswith(("ed", "en")) for word in verb.split("_")), name


def test_an_upcaster_lifts_old_versions() -> None:
    """A stored v0 entry is upcast to the current shape."""
    fields = encode(TaskSucceeded(task_id="t", attempt=1, result="r", mime_type="image/png", elapsed=1, at=2))
    old = json.loads(fields["data"])
    old.pop("mime_type")
    stored = {**fields, "v": "0", "data": json.dumps(old)}
    with pytest.raises(EventDecodeError, match="no upcaster"):
        decode(stored)
    lifted = decode(stored, {("task.succeeded", 0): lambda d: {**d, "mime_type": "image/png"}})
    assert isinstance(lifted, TaskSucceeded) and lifted.mime_type == "image/png"


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "task.exploded", "v": "1", "data": "{}"},
        {"type": "task.succeeded", "v": "1", "data": "not json"},
        {"type": "task.succeeded", "v": "1", "data": "[]"},
        {"type": "task.succeeded", "v": "1", "data": '{"task_id": "t"}'},
        {"type": "task.succeeded", "v": "9", "data": "{}"},
        {"v": "1", "data": "{}"},
    ],
)
def test_undecodable_entries_raise_a_clear_error(fields: dict[str, str]) -> None:
    """Unknown types, bad JSON, missing fields and future versions raise EventDecodeError."""
    with pytest.raises(EventDecodeError):
        decode(fields)


def test_flat_fields_decode_as_the_mapping_does() -> None:
    """XRANGE's flat name/value list decodes to the event its mapping gives, in any field order,
    and a NaN the standard encoder wrote still decodes."""
    event = TaskSucceeded(task_id="t1", attempt=2, result="r", mime_type="image/png", elapsed=1.5, at=3.0)
    fields = encode(event)
    flat = [x for pair in fields.items() for x in pair]
    assert decode_flat(flat) == decode(fields) == event
    shuffled = [x for pair in reversed(fields.items()) for x in pair]
    assert decode_flat(shuffled) == event
    nan = decode_flat([*flat[:7], fields["data"].replace('"elapsed":1.5', '"elapsed":NaN')])
    assert isinstance(nan, TaskSucceeded) and nan.elapsed != nan.elapsed
    with pytest.raises(EventDecodeError, match="malformed"):
        decode_flat(["type", "task.succeeded", "v", "1", "task", "t1"])
    with pytest.raises(EventDecodeError, match="no upcaster from version 0"):
        decode_flat([*flat[:3], "0", *flat[4:]])


def test_fields_as_bytes_decode_as_text_does() -> None:
    """A raw read's bytes decode to the event the text gives, on the direct path and on the
    general one (another field order, NaN, an old version naming its missing upcaster)."""
    event = TaskSucceeded(task_id="t1", attempt=2, result="r", mime_type="image/png", elapsed=1.5, at=3.0)
    flat = [x for pair in encode(event).items() for x in pair]
    as_bytes = [x.encode() for x in flat]
    assert decode_flat(as_bytes) == decode_flat(flat) == event
    pairs = list(zip(as_bytes[::2], as_bytes[1::2], strict=True))
    assert decode_flat([x for pair in reversed(pairs) for x in pair]) == event
    nan = decode_flat([*as_bytes[:7], as_bytes[7].replace(b'"elapsed":1.5', b'"elapsed":NaN')])
    assert isinstance(nan, TaskSucceeded) and nan.elapsed != nan.elapsed
    with pytest.raises(EventDecodeError, match="no upcaster from version 0"):
        decode_flat([*as_bytes[:3], b"0", *as_bytes[4:]])
    with pytest.raises(EventDecodeError, match="missing"):
        decode_flat([*as_bytes[:7], b'{"task_id":"t1"}'])


def test_raw_fields_that_are_not_utf8_are_a_malformed_entry() -> None:
    """A raw read's field that is not UTF-8, in the data or in a field name, is an
    EventDecodeError (which the audit lists as undecodable), not a crash."""
    event = TaskSucceeded(task_id="t1", attempt=2, result="r", mime_type="image/png", elapsed=1.5, at=3.0)
    as_bytes = [x.encode() for pair in encode(event).items() for x in pair]
    for flat in ([*as_bytes[:7], b'{"task_id":"\xff"}'], [b"type\xff", *as_bytes[1:]]):
        with pytest.raises(EventDecodeError, match="malformed stream entry"):
            decode_flat(flat)


def test_entries_decode_in_order_and_a_type_filter_skips_the_others_unread() -> None:
    """All entries decode in stream order; with a filter only its types, and a malformed entry
    of another type is never read."""
    submitted = TaskSubmitted(task_id="t1", user_id="u", kind="photography", prompt="p", inputs={}, at=1.0)
    revoked = TokenRevoked(token_id="k1", digest="d", at=2.0)
    entries = [("1-0", encode(submitted)), ("2-0", encode(revoked)), ("3-0", {"type": "task.broken"})]
    with pytest.raises(EventDecodeError):
        decode_entries(entries)
    assert decode_entries(entries[:2]) == [StoredEvent("1-0", submitted), StoredEvent("2-0", revoked)]
    assert decode_entries(entries, frozenset({TokenRevoked.type})) == [StoredEvent("2-0", revoked)]
