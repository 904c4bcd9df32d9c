"""Which addresses may receive webhooks: IPv6 forms that carry IPv4, and URLs as logs show them."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.webhooks.rules import networks, redacted, refused_address

PUBLIC = "93.184.215.14"


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b:1::a00:1",  # local-use NAT64
        "2002:a00:1::1",  # 6to4 of 10.0.0.1
        "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
        "::a00:1",  # IPv4-compatible
        "::ffff:0:a00:1",  # IPv4-translated (SIIT)
        "fec0::1",  # site-local
        "::ffff:127.0.0.1",  # IPv4-mapped
        "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo
        "4000::1",  # outside global unicast
    ],
)
def test_ipv6_forms_outside_global_unicast_or_carrying_private_ipv4_are_refused(address: str) -> None:
    """Each IPv6 form that reaches non-public space is refused, naming the address."""
    refused = refused_address([PUBLIC, address], ())
    mapped = ipaddress.IPv6Address(address).ipv4_mapped
    assert refused is not None and str(mapped or address) in refused


def test_nat64_and_6to4_of_a_public_ipv4_pass_and_of_a_private_one_say_which() -> None:
    """The IPv4 address inside a NAT64 or 6to4 address decides, and a refusal names it."""
    assert refused_address(["64:ff9b::5db8:d70e", "2002:5db8:d70e::1"], ()) is None
    refused = refused_address(["64:ff9b::a9fe:a9fe"], ())
    assert refused is not None and "169.254.169.254, a link-local address" in refused


@given(st.ip_addresses(v=4).filter(lambda ip: not ip.is_global or ip.is_multicast))
def test_every_ipv6_wrapping_of_a_refused_ipv4_is_refused(ip: ipaddress.IPv4Address) -> None:
    """Mapped, compatible, translated, NAT64 and 6to4 forms of a non-public IPv4 are all refused."""
    n = int(ip)
    wrapped = [
        ipaddress.IPv6Address((0xFFFF << 32) | n),
        ipaddress.IPv6Address(n),
        ipaddress.IPv6Address((0xFFFF << 48) | n),
        ipaddress.IPv6Address((0x64FF9B << 96) | n),
        ipaddress.IPv6Address((0x2002 << 112) | (n << 80)),
    ]
    for address in wrapped:
        assert refused_address([str(address)], ()) is not None, address


def test_allow_networks_admit_the_ipv4_they_name_but_not_a_translation_of_it() -> None:
    """An allowed IPv4 network admits its addresses, IPv4-mapped too, but not through NAT64 or 6to4,
    which reach them through a translator instead."""
    loopback = networks(["127.0.0.0/8"])
    assert refused_address(["127.0.0.1", "::ffff:127.0.0.1"], loopback) is None
    assert refused_address(["64:ff9b::7f00:1"], loopback) is not None
    assert refused_address(["2002:7f00:1::"], loopback) is not None
    assert refused_address(["64:ff9b::7f00:1"], networks(["64:ff9b::/96"])) is None


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.slack.com/services/T0/B0/s3cr3t?token=abc#x", "https://hooks.slack.com:443"),
        ("http://Example.com:8080/genqueue/s3cr3t", "http://example.com:8080"),
        ("http://[::1]:9000/s3cr3t", "http://[::1]:9000"),
        ("https://user:s3cr3t@example.com/hook", "(not a usable URL)"),
        ("s3cr3t", "(not a usable URL)"),
    ],
)
def test_a_logged_url_shows_scheme_host_and_port_only(url: str, shown: str) -> None:
    """Path, query, fragment and credentials never reach a log line."""
    assert redacted(url) == shown and "s3cr3t" not in redacted(url)
