"""A pool's daily spend cap in the key pool's fold: the pool grants exactly the calls its cap
pays for on a Pacific day, is then parked until Pacific midnight by a `key.parked` written with
the grant that reached the cap (raising `spend_cap:<pool>`), the other pool takes the next
grants, and live, replayed and snapshot-restored states agree."""

from __future__ import annotations

import json

from actors.config.pools import spend_cap_calls
from actors.keypool.decide import RPD_QUOTA, SPEND_CAP_QUOTA, day_park, grant_round, probe_all
from actors.keypool.state import KeyPoolState, PoolState, Tuning, replay, restore, snapshot
from events.catalogue import AlertRaised, KeyGrantsRedated, KeyParked, KeyTokenGranted
from events.days import next_pacific_midnight, pacific_day
from tests.unit.test_keypool_fold import LEAD, NOON, Sim

PRICE = 0.067
MIDNIGHT = next_pacific_midnight(NOON)


def pools(cap: float = 0.67, rpd: int = 0) -> KeyPoolState:
    """a: 10 calls a second, $0.067 an image, at most `cap` USD a day (10 calls at 0.67);
    b: 10 calls a second, no cap."""
    tuning = Tuning(margin=0.0)
    return KeyPoolState(
        pools={
            "a": PoolState(
                name="a",
                rpm=600,
                window=1.0,
                key_ids=("a#1",),
                rpd=rpd,
                tuning=tuning,
                price_per_image=PRICE,
                max_spend_per_day=cap,
            ),
            "b": PoolState(name="b", rpm=600, window=1.0, key_ids=("b#1",), tuning=tuning),
        }
    )


class CapSim(Sim):
    """The fold test's driver, keeping the alerts each turn appends with its events."""

    def __init__(self, cap: float = 0.67, rpd: int = 0) -> None:
        super().__init__(lambda: pools(cap, rpd))
        self.alerts: list[AlertRaised] = []

    def turn(self, flush: bool = False) -> list[KeyTokenGranted]:
        """One turn of the grant loop (as `Sim.turn`), its alerts kept."""
        if learned := probe_all(list(self.state.pools.values()), self.now):
            self.append(learned)
        turn = grant_round(self.state, self.reported, self._next(), self.now, LEAD)
        if turn.events:
            self.append(turn.events)
            self.reported = {}
        self.alerts += turn.alerts
        return turn.grants

    def run(self, tasks: int, step: float = 0.5) -> list[KeyTokenGranted]:
        """`tasks` attempts wait; turns every `step` seconds until each has a token."""
        self.acquire(tasks)
        granted: list[KeyTokenGranted] = []
        while len(granted) < tasks:
            granted += self.turn()
            self.now += step
        return granted

    def parks(self) -> list[KeyParked]:
        """The key.parked events in the log."""
        return [s.event for s in self.log if isinstance(s.event, KeyParked)]


def test_a_pool_parks_at_exactly_the_calls_its_cap_pays_for_and_the_other_pool_takes_the_rest() -> None:
    """$0.67 at $0.067 a call: pool a grants 10 calls, the 10th followed in the log by its
    park until Pacific midnight with the spend cap's reason, and an alert; the next 30 grants
    all go to b, and the tasks are served in their order."""
    sim = CapSim()
    granted = sim.run(40)
    assert [g.task_id for g in granted] == [f"t{i}" for i in range(1, 41)]
    on_a = [g for g in granted if g.pool == "a"]
    assert len(on_a) == 10 and spend_cap_calls(0.67, PRICE) == 10
    tenth = next(i for i, stored in enumerate(sim.log) if stored.event == on_a[-1])
    park = sim.log[tenth + 1].event
    assert isinstance(park, KeyParked)
    assert (park.pool, park.quota_id, park.until) == ("a", SPEND_CAP_QUOTA, MIDNIGHT)
    assert park.reason == "spend cap: $0.67 of $0.67 today"
    assert sim.parks() == [park]
    after = [g.pool for g in granted if g.at > on_a[-1].at]
    assert after and set(after) == {"b"}
    a = sim.state.pools["a"]
    assert (a.day_calls, a.parked_until, a.available(sim.now)) == (10, MIDNIGHT, 0)
    described = a.describe(sim.now, 0)
    assert (described["day_limit"], described["spent_today"], described["day_calls"]) == (10, 0.67, 10)
    [alert] = sim.alerts
    assert (alert.name, alert.value, alert.threshold, alert.at) == ("spend_cap:a", 0.67, 0.67, park.at)
    assert "$0.67 of $0.67 today" in alert.detail and "10 calls" in alert.detail


def test_a_replay_and_a_snapshot_restore_give_the_live_state() -> None:
    """The log of a capped day, replayed from the start or restored from a snapshot at any
    cut (through JSON) and replayed on, gives the state the live turns folded; a restart
    mid-day then grants pool a nothing more."""
    sim = CapSim()
    sim.run(25)
    assert sim.parks()
    assert replay(sim.log, pools()) == sim.state
    for cut in range(len(sim.log) + 1):
        data = json.loads(json.dumps(snapshot(replay(sim.log[:cut], pools()))))
        assert replay(sim.log[cut:], restore(data, pools())) == sim.state, cut
    sim.restart(cut=len(sim.log) // 2)
    more = sim.run(10)
    assert {g.pool for g in more} == {"b"} and len(sim.parks()) == 1


def test_the_day_rolls_over_at_pacific_midnight() -> None:
    """Capped at noon: just before Pacific midnight pool a still grants nothing; from
    midnight on it grants again, its count starts afresh, and it parks again at its cap
    until the next midnight."""
    sim = CapSim()
    sim.run(25)
    assert len(sim.parks()) == 1
    sim.now = MIDNIGHT - 0.2
    assert {g.pool for g in sim.run(5, step=0.01)} == {"b"}
    sim.now = MIDNIGHT
    day2 = sim.run(40)
    a = sim.state.pools["a"]
    assert len([g for g in day2 if g.pool == "a"]) == 10 and a.day == pacific_day(MIDNIGHT)
    assert [p.until for p in sim.parks()] == [MIDNIGHT, next_pacific_midnight(MIDNIGHT)]
    assert replay(sim.log, pools()) == sim.state


def test_rpd_and_the_spend_cap_the_lower_binds() -> None:
    """rpd 4 under a cap worth 10: pool a stops at 4 calls, parked by its rpd (so a fallback
    route moves on), with no spend-cap alert. rpd 40 over a cap worth 10: it stops at 10,
    parked by its cap."""
    rpd = CapSim(rpd=4)
    assert len([g for g in rpd.run(30) if g.pool == "a"]) == 4
    [park] = rpd.parks()
    assert (park.quota_id, park.until) == (RPD_QUOTA, MIDNIGHT) and "rpd" in park.reason
    assert rpd.alerts == [] and rpd.state.pools["a"].day_limit == 4
    cap = CapSim(rpd=40)
    assert len([g for g in cap.run(30) if g.pool == "a"]) == 10
    assert len(cap.parks()) == 1 and cap.state.pools["a"].day_limit == 10


def test_a_cap_lowered_at_a_restart_parks_the_pool_at_the_next_turn() -> None:
    """Calls made under a $0.67 cap; restarted with a cap worth half of them, the next turn,
    with nobody waiting, writes the park (and its alert) with the sends reported since, and
    no grant goes to a."""
    sim = CapSim()
    sim.acquire(8)
    granted = sim.turn()
    assert len([g for g in granted if g.pool == "a"]) >= 4
    calls = sim.state.pools["a"].day_calls
    data = json.loads(json.dumps(snapshot(sim.state)))
    sim.make = lambda: pools(cap=calls * PRICE / 2)
    sim.state = restore(data, sim.make())
    sim.alerts = []
    sim.now += 1.0
    sim.send(-1, 0.1)
    assert sim.turn() == []
    assert isinstance(sim.log[-2].event, KeyGrantsRedated) and all(g.sent for g in sim.state.grants.values())
    [park] = sim.parks()
    assert park.key_id == "" and park.until == MIDNIGHT and len(sim.alerts) == 1
    assert {g.pool for g in sim.run(10)} == {"b"}
    assert sim.turn() == [] and len(sim.parks()) == 1  # parked: never written twice


def test_a_grant_made_ahead_past_midnight_counts_in_the_new_day() -> None:
    """Pool a (2 calls a day) capped for today; pool b parked past midnight. A grant made
    ahead (within the lead) for Pacific midnight goes to a and counts as the new day's first
    call: no park for it, and the state replays."""
    sim = CapSim(cap=2 * PRICE)
    b_parked = KeyParked(pool="b", key_id="b#1", until=MIDNIGHT + 10.0, quota_id="q", reason="r", at=NOON)
    sim.append([b_parked])
    first = sim.run(2)
    assert [g.pool for g in first] == ["a", "a"] and len(sim.parks()) == 2
    sim.now = MIDNIGHT - LEAD / 2
    sim.acquire(1)
    [ahead] = sim.turn()
    assert (ahead.pool, ahead.at) == ("a", MIDNIGHT)
    a = sim.state.pools["a"]
    assert (a.day, a.day_calls, a.parked_until) == (pacific_day(MIDNIGHT), 1, MIDNIGHT)
    assert [p.until for p in sim.parks()] == [MIDNIGHT + 10.0, MIDNIGHT]
    assert replay(sim.log, pools(cap=2 * PRICE)) == sim.state


def test_a_park_is_decided_only_at_the_cap_and_only_once_a_day() -> None:
    """`day_park`: none under the cap or without one, the park at it, none once parked
    through the day; a quotient a rounding error under a whole number counts as it."""
    pool = pools().pools["a"]
    for _ in range(9):
        pool.count_day(NOON)
    assert day_park(pool, "a#1", NOON, NOON) is None
    pool.count_day(NOON)
    park = day_park(pool, "a#1", NOON, NOON)
    assert park is not None and park.until == MIDNIGHT
    pool.parked_until = MIDNIGHT
    assert day_park(pool, "a#1", NOON, NOON) is None
    assert day_park(pools().pools["b"], "b#1", NOON, NOON) is None
    assert spend_cap_calls(0.3, 0.1) == 3 and spend_cap_calls(0.7, 0.1) == 7
    assert spend_cap_calls(1.0, PRICE) == 14 and spend_cap_calls(0.0, PRICE) == 0
    assert spend_cap_calls(1.0, 0.0) == 0


def test_the_reason_names_what_was_spent_and_the_cap() -> None:
    """A $1 cap at $0.067 pays for 14 calls, $0.938: the reason says so to the tenth of a cent."""
    sim = CapSim(cap=1.0)
    assert len([g for g in sim.run(40) if g.pool == "a"]) == 14
    [park] = sim.parks()
    assert park.reason == "spend cap: $0.938 of $1.00 today"
