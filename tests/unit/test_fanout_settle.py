"""When a replica's watch fanout renders the watched tasks' stages again after key events."""

from __future__ import annotations

from typing import Any, cast

import pytest

from serve_app.http.fanout import POOLS_SETTLE_SECONDS, Fanout


def fanout_at(now: list[float]) -> Fanout:
    """A fanout on the clock `now[0]`; `stages_due` reads nothing from its store."""
    return Fanout(cast(Any, None), lambda task_id, update: True, clock=lambda: now[0])


def test_each_key_event_gets_a_render_once_it_settles_even_when_one_was_due_before() -> None:
    """A grant 0.2 s after another: the render due for the first comes at 0.25 s, and may read
    pools' views cached before the second (they are kept up to 0.2 s); so the second's own render
    follows at 0.45 s, and nothing after it."""
    now = [0.0]
    fanout = fanout_at(now)
    fanout.pools_changed(every=False)
    now[0] = 0.1
    assert fanout.stages_due() == (None, set())
    now[0] = 0.2
    fanout.pools_changed(every=False)
    now[0] = POOLS_SETTLE_SECONDS
    assert fanout.stages_due() == (False, set())
    now[0] = 0.3
    assert fanout.stages_due() == (None, set())
    now[0] = 0.2 + POOLS_SETTLE_SECONDS
    assert fanout.stages_due() == (False, set())
    now[0] = 5.0
    assert fanout.stages_due() == (None, set())


@pytest.mark.parametrize("gap", [0.0, 0.05, POOLS_SETTLE_SECONDS / 2])
def test_a_parked_pool_and_an_opened_stream_are_rendered_and_a_burst_of_events_costs_two_renders(
    gap: float,
) -> None:
    """A parked pool (every queued task) and a stream opened beside it are rendered once settled;
    events `gap` apart inside one settling time give two renders, not one each."""
    now = [10.0]
    fanout = fanout_at(now)
    fanout.opened("t1")
    fanout.pools_changed(every=True)
    for _ in range(4):
        now[0] += gap
        fanout.pools_changed(every=False)
    last = now[0]
    now[0] = 10.0 + POOLS_SETTLE_SECONDS
    stages, opened = fanout.stages_due()
    assert stages is True and opened == {"t1"}
    renders = 1
    now[0] = last + POOLS_SETTLE_SECONDS
    if fanout.stages_due()[0] is not None:
        renders += 1
    assert renders == (2 if last > 10.0 else 1)
    now[0] = last + 10
    assert fanout.stages_due() == (None, set())


def test_a_stream_opened_after_a_key_event_is_rendered_again_once_its_own_time_has_come() -> None:
    """A grant at 0, then a stream opened at 0.1: the render due for the grant (0.25 s) renders
    the new task too, but may read the pools' views its first render read; so the task is named
    again in a render once 0.25 s have passed since its stream opened, and not after."""
    now = [0.0]
    fanout = fanout_at(now)
    fanout.pools_changed(every=False)
    now[0] = 0.1
    fanout.opened("t1")
    now[0] = POOLS_SETTLE_SECONDS
    assert fanout.stages_due() == (False, {"t1"})
    now[0] = 0.3
    assert fanout.stages_due() == (None, set())
    now[0] = 0.1 + POOLS_SETTLE_SECONDS
    assert fanout.stages_due() == (False, {"t1"})
    now[0] = 5.0
    assert fanout.stages_due() == (None, set())


def test_a_stream_no_longer_watched_is_not_rendered_again() -> None:
    """A stream opened and closed before its render: nothing names it."""
    now = [0.0]
    fanout = fanout_at(now)
    fanout.pools_changed(every=False)
    now[0] = 0.1
    fanout.opened("t1")
    fanout.forget("t1")
    now[0] = 0.1 + POOLS_SETTLE_SECONDS
    assert fanout.stages_due() == (False, set())
    now[0] = 5.0
    assert fanout.stages_due() == (None, set())
