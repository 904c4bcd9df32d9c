"""The emulator's pure parts: pool specs, the sliding window, the Pacific day, the bodies it sends."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from emulator.wire import (
    PER_DAY,
    PER_MINUTE,
    BadRequest,
    EmulatorConfig,
    ProjectQuota,
    Verdict,
    check_request,
    key_label,
    parse_pool,
    quota_body,
    render_pngs,
    seconds_to_pacific_midnight,
    window_capacity,
)

NOON_UTC = dt.datetime(2026, 6, 1, 19, 0, tzinfo=dt.UTC)  # noon in Los Angeles (PDT)


def test_a_full_spec_parses() -> None:
    """NAME:RPM:KEY,KEY:RPD gives every field."""
    spec = parse_pool("proj-a:600:k-one,k-two:250")
    assert (spec.name, spec.rpm, spec.keys, spec.rpd) == ("proj-a", 600, ("k-one", "k-two"), 250)


def test_without_rpd_the_global_one_applies() -> None:
    """A spec of three fields leaves rpd to the emulator-wide setting."""
    assert parse_pool("a:60:k1").rpd is None


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("a:60", "NAME:RPM:KEY"),
        ("a:60:s3cret:1:2", "NAME:RPM:KEY"),
        (":60:s3cret", "NAME"),
        ("a:sixty:s3cret", "RPM"),
        ("a:0:s3cret", "RPM"),
        ("a:-5:s3cret", "RPM"),
        ("a:60:", "KEY"),
        ("a:60:s3cret,,other", "KEY"),
        ("a:60:s3cret,s3cret", "twice"),
        ("a:60:s3cret:-1", "RPD"),
        ("a:60:s3cret:many", "RPD"),
    ],
)
def test_bad_specs_are_refused_clearly_without_echoing_keys(spec: str, fragment: str) -> None:
    """Each malformed spec raises a ValueError naming the bad field and not quoting any key."""
    with pytest.raises(ValueError, match=fragment) as info:
        parse_pool(spec)
    assert "s3cret" not in str(info.value)


def test_config_refuses_shared_keys_and_duplicate_names() -> None:
    """A key lives in one project; project names are unique."""
    with pytest.raises(ValueError, match="two pools"):
        EmulatorConfig(pools=(parse_pool("a:60:k1"), parse_pool("b:60:k1")))
    with pytest.raises(ValueError, match="unique"):
        EmulatorConfig(pools=(parse_pool("a:60:k1"), parse_pool("a:60:k2")))
    with pytest.raises(ValueError, match="error_rate"):
        EmulatorConfig(pools=(parse_pool("a:60:k1"),), error_rate=1.5)


def test_config_repr_hides_keys() -> None:
    """Neither a pool's nor the config's repr shows a key."""
    config = EmulatorConfig(pools=(parse_pool("a:60:s3cret-key"),), revoked=("s3cret-gone",))
    assert "s3cret" not in repr(config)


@pytest.mark.parametrize(
    ("rpm", "window", "capacity"),
    [(600, 1.0, 10), (60, 60.0, 60), (300, 2.0, 10), (15, 1.0, 1), (10, 30.0, 5)],
)
def test_window_capacity_scales_the_rpm(rpm: int, window: float, capacity: int) -> None:
    """capacity = rpm * window / 60, at least one."""
    assert window_capacity(rpm, window) == capacity


def test_the_window_slides() -> None:
    """Capacity 3 over 1 s: the 4th call waits for the 1st to leave, refusals take nothing."""
    quota = ProjectQuota(rpm=180, window=1.0, rpd=0)
    assert [quota.admit(t, NOON_UTC).accepted for t in (0.0, 0.1, 0.2)] == [True, True, True]
    refused = quota.admit(0.6, NOON_UTC)
    assert (refused.accepted, refused.limit) == (False, "minute")
    assert refused.retry_after == pytest.approx(0.4)
    assert quota.admit(0.99, NOON_UTC).retry_after == pytest.approx(0.01)
    assert quota.admit(1.0, NOON_UTC).accepted  # the call at 0.0 is no longer in (0.0, 1.0]
    assert not quota.admit(1.05, NOON_UTC).accepted
    assert quota.admit(1.1, NOON_UTC).accepted
    assert quota.max_window_calls == 3


@given(st.lists(st.floats(min_value=0, max_value=10, allow_nan=False), max_size=60))
def test_no_window_ever_holds_more_than_capacity_and_none_is_refused_needlessly(times: list[float]) -> None:
    """Over any arrivals, accepted calls fit every window, and each refusal met a full window."""
    quota, window = ProjectQuota(rpm=240, window=0.5, rpd=0), 0.5  # capacity 2
    accepted: list[float] = []
    for t in sorted(times):
        verdict = quota.admit(t, NOON_UTC)
        in_window = [a for a in accepted if t - a < window]
        assert verdict.accepted == (len(in_window) < quota.capacity)
        if verdict.accepted:
            accepted.append(t)
        else:
            assert 0 < verdict.retry_after <= window
            assert verdict.retry_after == pytest.approx(in_window[0] + window - t)
    for t in accepted:
        assert sum(1 for a in accepted if 0 <= t - a < window) <= quota.capacity
    assert quota.max_window_calls <= quota.capacity


def test_the_day_quota_counts_accepted_calls_and_resets_at_midnight_pacific() -> None:
    """rpd 2: the 3rd call of the Pacific day is refused until midnight; then the count starts over."""
    quota = ProjectQuota(rpm=6000, window=60.0, rpd=2)
    assert quota.admit(0.0, NOON_UTC).accepted and quota.admit(1.0, NOON_UTC).accepted
    refused = quota.admit(2.0, NOON_UTC)
    assert (refused.accepted, refused.limit, refused.retry_after) == (False, "day", 12 * 3600)
    next_day = dt.datetime(2026, 6, 2, 7, 0, 1, tzinfo=dt.UTC)  # 00:00:01 PDT
    assert quota.admit(100_000.0, next_day).accepted and quota.day_calls == 1


@pytest.mark.parametrize(
    ("wall", "hours"),
    [
        (dt.datetime(2026, 6, 1, 7, 0, tzinfo=dt.UTC), 24.0),  # midnight PDT
        (dt.datetime(2026, 3, 8, 8, 30, tzinfo=dt.UTC), 22.5),  # 00:30 PST; clocks spring forward at 2:00
        (dt.datetime(2026, 11, 1, 7, 0, tzinfo=dt.UTC), 25.0),  # midnight PDT; clocks fall back at 2:00
    ],
)
def test_seconds_to_midnight_follow_daylight_saving(wall: dt.datetime, hours: float) -> None:
    """The wait to Pacific midnight is real elapsed time, 23 or 25 hours on the change days."""
    assert seconds_to_pacific_midnight(wall) == pytest.approx(hours * 3600)


def test_the_429_body_has_the_reference_shape() -> None:
    """QuotaFailure, Help and RetryInfo in that order, the value as a string, the wait in two forms."""
    quota = ProjectQuota(rpm=600, window=1.0, rpd=0)
    body = quota_body(Verdict(False, "minute", 0.4123), quota, "gemini-3.1-flash-image")
    error = body["error"]
    assert (error["code"], error["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert error["message"].startswith("You exceeded your current quota")
    assert error["message"].endswith("Please retry in 0.412s.")
    failure, help_, retry = error["details"]
    assert failure == {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [
            {
                "quotaMetric": "generativelanguage.googleapis.com/generate_content_paid_tier_requests",
                "quotaId": PER_MINUTE,
                "quotaDimensions": {"location": "global", "model": "gemini-3.1-flash-image"},
                "quotaValue": "600",
            }
        ],
    }
    assert help_["@type"] == "type.googleapis.com/google.rpc.Help" and help_["links"]
    assert retry == {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.412s"}


def test_the_daily_429_names_the_day_quota() -> None:
    """A day refusal carries the per-day quota id and the rpd as its value; whole seconds drop the point."""
    body = quota_body(Verdict(False, "day", 3600.0), ProjectQuota(rpm=60, window=60.0, rpd=2), "m")
    violation = body["error"]["details"][0]["violations"][0]
    assert (violation["quotaId"], violation["quotaValue"]) == (PER_DAY, "2")
    assert body["error"]["details"][2]["retryDelay"] == "3600s"


def _request(blob: dict[str, str]) -> bytes:
    return json.dumps(
        {"contents": [{"role": "user", "parts": [{"inlineData": blob}, {"text": "hi"}]}]}
    ).encode()


def test_both_base64_alphabets_and_both_mime_spellings_are_accepted() -> None:
    """URL-safe with mime_type (as the SDK sends) and standard with mimeType both pass."""
    data = bytes(range(256))
    check_request(_request({"data": base64.urlsafe_b64encode(data).decode(), "mime_type": "image/png"}))
    check_request(_request({"data": base64.b64encode(data).decode().rstrip("="), "mimeType": "image/png"}))


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"[]",
        b'{"contents": []}',
        b'{"contents": [{"parts": []}]}',
        _request({"data": "@@@@", "mime_type": "image/png"}),
        _request({"data": "AAAA"}),
        _request({"data": "AAAA" * 5000 + "A@==", "mime_type": "image/png"}),
        _request({"data": "", "mime_type": "image/png"}),
    ],
)
def test_malformed_requests_are_bad_requests(raw: bytes) -> None:
    """Broken JSON, missing contents, undecodable data (at either end) or no mime type: BadRequest."""
    with pytest.raises(BadRequest):
        check_request(raw)


def test_key_labels_never_show_a_whole_key() -> None:
    """A long key shows its last 4 characters; a short one shows none, or a third at most."""
    assert key_label("a", 0, "test-key-ExampleExampleExampleExamplex7Qz") == "a#1\u2026x7Qz"
    assert key_label("a", 1, "k1") == "a#2"
    label = key_label("b", 2, "abcdef")
    assert label.startswith("b#3") and "abcdef" not in label
    assert re.fullmatch(r"b#3(\u2026.{1,2})?", label)


def test_rendered_pngs_are_real_and_small() -> None:
    """The canned images decode as PNGs with Pillow."""
    for b64 in render_pngs():
        raw = base64.b64decode(b64)
        assert len(raw) < 10_000
        with Image.open(io.BytesIO(raw)) as im:
            assert im.format == "PNG"
