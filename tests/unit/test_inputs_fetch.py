"""Image URLs, the pure part and the checks made before any connection: which URLs and answers
are refused, the size cap read chunk by chunk, and the addresses a host resolves to."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest

from actors.config import ConfigError, LimitsConfig, parse, relaxed_security
from serve_app.http.fetch import Fetcher, answer_refusal, failure, read_capped, trust, url_refusal
from serve_app.http.problems import Unprocessable
from tests.conftest import free_port

LIMITS = LimitsConfig()


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://images.example.com/a.png", "must be an https URL"),
        ("ftp://images.example.com/a.png", "must be an https URL"),
        ("https://user:pw@images.example.com/a.png", "must not carry credentials"),
        ("https:///a.png", "has no host"),
        ("https://images.example.com:99999/a.png", "is not a valid URL"),
        ("https://images.example.com/a.png", None),
        ("HTTPS://images.example.com/a.png", None),
    ],
)
def test_only_an_https_url_of_a_host_without_credentials_is_fetched(url: str, why: str | None) -> None:
    """http and other schemes, credentials, a missing host or a bad port are refused, saying which."""
    refusal = url_refusal(url)
    assert (refusal is None) if why is None else (refusal is not None and why in refusal)


@pytest.mark.parametrize(
    ("status", "declared", "why"),
    [
        (200, None, None),
        (200, "100", None),
        (204, "0", None),
        (200, "101", "holds 101 bytes, the limit is 100"),
        (200, "not a number", None),  # then reading decides
        (301, None, "redirects are not followed"),
        (307, None, "redirects are not followed"),
        (404, None, "answered HTTP 404"),
        (503, "5", "answered HTTP 503"),
    ],
)
def test_an_answer_that_is_not_a_2xx_or_declares_too_much_is_refused(
    status: int, declared: str | None, why: str | None
) -> None:
    """A 3xx is refused as a redirect, another non-2xx by its status, a 2xx by a Content-Length
    over the cap."""
    refusal = answer_refusal(status, declared, 100)
    assert (refusal is None) if why is None else (refusal is not None and why in refusal)


def test_reading_stops_at_the_first_chunk_past_the_cap() -> None:
    """A body longer than the cap is refused after the chunk that passes it; none after is read."""
    pulled: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(100):
            pulled.append(i)
            yield b"x" * 10

    assert (
        asyncio.run(read_capped(chunks(), 25))
        == "holds more than 25 bytes, the limit ([limits] max_image_bytes)"
    )
    assert pulled == [0, 1, 2]
    assert asyncio.run(read_capped(chunks(), 1000)) == b"x" * 1000


def test_a_failed_request_says_whether_connecting_or_answering_took_too_long() -> None:
    """Timeouts name their own cap; any other error its type and first line only."""
    assert "connected to within 5 s" in failure(httpx.ConnectTimeout("t"), LIMITS)
    assert "in full within 10 s" in failure(httpx.ReadTimeout("t"), LIMITS)
    said = failure(httpx.ConnectError("refused\nsecond line"), LIMITS)
    assert said == "could not be fetched (ConnectError: refused)"


def test_servers_are_verified_against_the_default_cas_unless_a_bundle_is_named() -> None:
    """No bundle: httpx's default verification; a missing bundle is an error when the replica's
    fetcher is made, not a silent pass nor a refused URL."""
    assert trust("") is True
    with pytest.raises(FileNotFoundError):
        Fetcher(replace(LIMITS, image_url_ca_file="/nonexistent/ca.pem"))


class Answers:
    """A resolver that answers from a table and records each host it was asked for."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table, self.asked = table, list[str]()

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        return self.table[host]


def test_a_host_that_resolves_to_any_private_address_is_refused_before_connecting() -> None:
    """One private address among public ones refuses the URL, resolved once; nothing is sent."""
    resolve = Answers({"img.example.com": ["93.184.215.14", "10.0.0.7"], "ok.example.com": ["127.0.0.1"]})
    fetcher = Fetcher(LIMITS, resolver=resolve)
    found = asyncio.run(fetcher.fetch("https://img.example.com/a.png"))
    assert found == "resolves to 10.0.0.7, a private address"
    assert resolve.asked == ["img.example.com"]
    # Allowed, it connects: to a closed port here, which refuses at once.
    allowed = Fetcher(replace(LIMITS, image_url_allow_networks=("127.0.0.1/32",)), resolver=resolve)
    closed = asyncio.run(allowed.fetch(f"https://ok.example.com:{free_port()}/a.png"))
    assert isinstance(closed, str) and closed.startswith("could not be fetched (ConnectError"), closed


def test_every_failing_image_is_named_in_one_422() -> None:
    """Two URLs that fail give one 422 naming both images, each with its reason."""
    fetcher = Fetcher(
        LIMITS, resolver=Answers({"a.example": ["127.0.0.1"], "b.example": ["169.254.169.254"]})
    )
    urls = {"person": "https://a.example/p.png", "garment": "https://b.example/g.png"}
    with pytest.raises(Unprocessable) as refused:
        asyncio.run(fetcher.fetch_all(urls))
    errors = refused.value.errors or []
    assert [e["field"] for e in errors] == ["images.person", "images.garment"]
    assert "loopback" in errors[0]["message"] and "link-local" in errors[1]["message"]


def test_no_fetches_allowed_refuses_every_url() -> None:
    """image_url_fetches = 0 turns image URLs off: each is refused without a lookup."""
    resolve = Answers({})
    fetcher = Fetcher(replace(LIMITS, image_url_fetches=0), resolver=resolve)
    assert "base64 or uploads only" in str(asyncio.run(fetcher.fetch("https://img.example.com/a.png")))
    assert resolve.asked == []


def test_the_image_url_settings_are_checked_and_an_allow_list_is_named() -> None:
    """Bad caps and networks are refused naming the key; an allow-list is a loosened setting."""
    for bad in ({"image_url_seconds": 0}, {"image_url_fetches": -1}, {"image_url_allow_networks": ["nope"]}):
        with pytest.raises(ConfigError, match="image_url"):
            parse({"limits": bad}, {})
    config = parse({"limits": {"image_url_allow_networks": ["127.0.0.0/8"]}}, {})
    assert config.limits.image_url_allow_networks == ("127.0.0.0/8",)
    assert ("limits.image_url_allow_networks", "input image URLs may reach 127.0.0.0/8") in relaxed_security(
        config
    )
