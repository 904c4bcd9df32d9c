"""A pool that counts against another (a priority pool against its project's standard one):
each of its grants takes a place in both windows, so the standard window never holds more
than its capacity counting both pools' calls, and the fold stays a fold."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.audit import max_in_window
from actors.config import PRIORITY, Config, PoolConfig, Secret
from actors.keypool.state import (
    KeyPoolState,
    PoolState,
    Tuning,
    copy_pools,
    from_config,
    replay,
    restore,
    snapshot,
    window_capacity,
)
from tests.unit.test_keypool_fold import LEAD, NOON, Sim

WINDOW = 1.0


def tiered() -> KeyPoolState:
    """s: standard, 4 calls a second; p: priority, 3 a second, counting against s; c: on its own."""
    tuning = Tuning(margin=0.02, probe_after=2, probe_step=0.2)
    return KeyPoolState(
        pools={
            "s": PoolState(name="s", rpm=240, window=WINDOW, key_ids=("s#1",), tuning=tuning),
            "p": PoolState(
                name="p",
                rpm=180,
                window=WINDOW,
                key_ids=("p#1", "p#2"),
                tuning=tuning,
                service_tier=PRIORITY,
                counts_against=("s",),
            ),
            "c": PoolState(name="c", rpm=60, window=2.0, key_ids=("c#1",), tuning=tuning),
        }
    )


class TieredSim(Sim):
    """The fold test's driver over linked pools: the live view copies them linked too."""

    def live_view(self) -> dict[str, PoolState]:
        """The pools as the live actor decides with them, linked as `grant_round` links them."""
        pools = copy_pools(self.state.pools)
        return {name: pools[name] for name in pools}


ops = st.lists(
    st.one_of(
        st.tuples(st.just("acquire"), st.integers(1, 8)),
        st.tuples(
            st.just("tick"), st.integers(1, 30), st.integers(0, 6), st.sampled_from([None, 0.0, 0.05, 0.3])
        ),
        st.tuples(st.just("send"), st.one_of(st.just(-1), st.integers(0, 50)), st.floats(0.0, 0.6)),
        st.tuples(
            st.just("429"),
            st.sampled_from(["s", "p", "c"]),
            st.floats(0.0, 1.0),
            st.sampled_from([None, 120]),
        ),
        st.tuples(st.just("reject"), st.sampled_from(["s", "p"])),
        st.tuples(
            st.just("restart"), st.integers(0, 400), st.integers(0, 10), st.sampled_from([None, 0.0, 0.3])
        ),
    ),
    max_size=80,
)


@settings(max_examples=600, deadline=None)
@given(ops)
def test_no_window_of_the_standard_pool_holds_more_than_its_capacity_counting_both_pools(
    steps: list[tuple[object, ...]],
) -> None:
    """Random grants, sends, 429s, rejected keys and restarts over a priority pool that counts
    against a standard one: no window of the standard pool ever holds more grants than its
    capacity, its own and the priority pool's together; none of the priority pool's own
    windows more than its capacity; and the state folded live equals the one replayed from
    the log and the one restored from a snapshot plus the rest."""
    sim = TieredSim(tiered)
    grants: dict[str, list[float]] = {"s": [], "p": [], "c": []}
    for step in steps:
        restarted = sim.play(step, grants)
        if restarted is not None:
            live, after = restarted
            for name, rebuilt in after.pools.items():
                assert rebuilt.next_free_at(sim.now) >= live[name].next_free_at(sim.now)
    standard = window_capacity(240, WINDOW)
    assert max_in_window(sorted(grants["s"] + grants["p"]), WINDOW) <= standard
    assert max_in_window(sorted(grants["p"]), WINDOW) <= window_capacity(180, WINDOW)
    assert max_in_window(sorted(grants["c"]), 2.0) <= window_capacity(60, 2.0)
    assert replay(sim.log, tiered()) == sim.state
    for cut in (0, len(sim.log) // 2, len(sim.log)):
        data = json.loads(json.dumps(snapshot(replay(sim.log[:cut], tiered()))))
        restored = replay(sim.log[cut:], restore(data, tiered()))
        assert restored == sim.state
        # The links survive a restore: the priority pool still sees the standard window.
        assert restored.pools["p"].over == (restored.pools["s"].limiter,)


def test_a_burst_takes_the_standard_windows_capacity_across_both_pools() -> None:
    """Ten attempts at once: the standard window (4) is shared, so four calls of s and p go out
    now, not seven, the priority pool taking its three; the next four a window (and the
    margin) later, none before."""
    sim = Sim(tiered)
    sim.acquire(10)
    first = sim.turn()
    # s (4 left) is taken while it has more places than p (3); then p wins the ties: 1 + 3.
    assert sorted(g.pool for g in first if g.pool != "c") == ["p", "p", "p", "s"]
    assert len(sim.state.pools["s"].limiter.log) == 4  # the priority grants are in it too
    sim.now = NOON + WINDOW + 0.02 - 2 * LEAD
    assert not sim.turn()
    sim.now = NOON + WINDOW + 0.02
    assert len([g for g in sim.turn() if g.pool in ("s", "p")]) == 4


def test_a_pool_counting_against_another_is_built_linked_from_the_configuration() -> None:
    """`counts_against` chains: a pool of a pool of a pool counts against both."""
    key = (Secret("k"),)
    config = Config(
        pools=(
            PoolConfig("s", 60, key),
            PoolConfig("m", 30, key, counts_against="s"),
            PoolConfig("p", 10, key, service_tier=PRIORITY, counts_against="m"),
        )
    )
    state = from_config(config)
    assert state.pools["p"].counts_against == ("m", "s")
    assert state.pools["p"].over == (state.pools["m"].limiter, state.pools["s"].limiter)
    described = state.pools["p"].describe(NOON, 0)
    assert (described["service_tier"], described["counts_against"]) == ("priority", ["m", "s"])
