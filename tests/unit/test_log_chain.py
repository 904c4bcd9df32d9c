"""Time-ordered task ids, the choice of one segment per start when a crash left a second file, and
the chain's verdict: the first segment that does not match."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from events.archive import Segment
from events.log_events import LogArchived
from events.log_reader import Chain, chain
from events.task_ids import made_at_ms, new_task_id


@given(st.integers(0, 2**48 - 1), st.binary(min_size=10, max_size=10))
def test_a_task_id_is_a_uuid7_that_tells_its_millisecond(ms: int, noise: bytes) -> None:
    """32 lowercase hex characters, version 7, RFC variant, its time read back."""
    task_id = new_task_id(ms, noise)
    assert len(task_id) == 32 and task_id == task_id.lower()
    parsed = uuid.UUID(task_id)
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert made_at_ms(task_id) == ms


@given(st.integers(0, 2**47), st.integers(1, 2**20))
def test_task_ids_sort_by_time(ms: int, later: int) -> None:
    """An id made later sorts after, whatever its random bits."""
    assert new_task_id(ms, b"\xff" * 10) < new_task_id(ms + later, b"\x00" * 10)


def test_an_id_of_another_layout_tells_no_time() -> None:
    """A random UUIDv4 (ids made before), or anything else, has no time."""
    assert made_at_ms(uuid.uuid4().hex) is None
    assert made_at_ms("7" * 32) is None and made_at_ms("") is None


def seg(first: int, last: int) -> Segment:
    """A segment of entries `first`-0 .. `last`-0."""
    return Segment(f"{first}-0", f"{last}-0")


def test_the_recorded_segment_is_chosen_over_one_a_crash_left() -> None:
    """A file left longer or shorter by a crash before its log.archived shares its first id with
    the one recorded after; the one ending before the next segment starts is read, and nothing
    past the archived point."""
    assert chain([seg(1, 150), seg(1, 100), seg(101, 200)], "200-0") == [seg(1, 100), seg(101, 200)]
    assert chain([seg(1, 90), seg(1, 100), seg(101, 200)], "200-0") == [seg(1, 100), seg(101, 200)]
    assert chain([seg(1, 100), seg(101, 250), seg(101, 200)], "200-0") == [seg(1, 100), seg(101, 200)]
    assert chain([seg(1, 100), seg(101, 200), seg(201, 300)], "200-0") == [seg(1, 100), seg(101, 200)]


def recorded(segment: Segment, digest: str) -> LogArchived:
    """The log.archived of `segment` with `digest`."""
    return LogArchived(
        segment=segment.name,
        first=segment.first,
        last=segment.last,
        count=1,
        digest=digest,
        prev_digest="",
        bytes=1,
        at=1.0,
    )


def test_the_first_segment_that_does_not_match_is_named() -> None:
    """Problems found in any order are reported at the earliest segment, with a count of the rest;
    a segment archived past what was read is not missing."""
    check = Chain(strict=False, covered=(300, 0))
    for i, digest in ((1, "a"), (2, "b"), (3, "c")):
        check.record(recorded(seg(i * 100 - 99, i * 100), digest))
    check.record(recorded(seg(301, 400), "d"))  # archived while the log was read
    check.digests = {seg(1, 100).name: "a", seg(201, 300).name: "x"}
    check.problem(seg(201, 300), "its header names b…")
    found = check.violations()
    assert found == [
        f"archive segment {seg(101, 200).name} does not match: recorded by log.archived, but missing "
        "from the archive (1 more segment(s) do not match after it)"
    ]
    clean = Chain(strict=False, covered=(100, 0))
    clean.record(recorded(seg(1, 100), "a"))
    clean.digests = {seg(1, 100).name: "a"}
    assert clean.violations() == []
