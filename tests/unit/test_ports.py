"""The ports genqueue picks for its listeners lie outside the range outgoing connections take."""

from __future__ import annotations

import socket
from contextlib import ExitStack

from serve_app.ports import PICK_RANGE, _outgoing_range, free_port


def test_a_picked_port_is_outside_the_outgoing_range_and_can_be_listened_on() -> None:
    """Twenty picks: each in the pick range, below the kernel's outgoing range, and bindable."""
    outgoing = _outgoing_range()
    for _ in range(20):
        port = free_port("127.0.0.1")
        assert port in PICK_RANGE
        assert port not in outgoing
        with socket.create_server(("127.0.0.1", port)) as listener:
            assert listener.getsockname()[1] == port


def test_ports_in_use_are_skipped_and_a_full_range_falls_back_to_the_kernel() -> None:
    """Of three ports two held: the third is picked; all three held: a port outside them."""
    base = free_port("127.0.0.1", range(25000, 25900, 3))
    among = range(base, base + 3)
    with ExitStack() as held:
        for port in among[:2]:
            held.enter_context(socket.create_server(("127.0.0.1", port)))
        assert {free_port("127.0.0.1", among) for _ in range(10)} == {among[2]}
        held.enter_context(socket.create_server(("127.0.0.1", among[2])))
        assert free_port("127.0.0.1", among) not in among
