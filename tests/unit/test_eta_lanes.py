"""The ETA with priority lanes: the slot holders still waiting for a token count by the lanes'
shares of the tokens (`actors.eta_range.needing_before`), as the key pool hands them out."""

from __future__ import annotations

from actors.eta_range import needing_before
from serve_app.http.estimates import lane_ahead

WEIGHTS = {"paid": 9.0, "free": 1.0}
HOLDERS = ("free",) * 16 + ("paid",) * 2


def test_a_paid_task_counts_its_own_lanes_holders_and_free_ones_share() -> None:
    """Behind 16 free and 2 paid holders, a paid task needing 3 paid tokens: the 2 paid holders,
    and of the free ones what free gets while paid gets 5 (5 / 9: none)."""
    assert needing_before(HOLDERS, "paid", 3, WEIGHTS) == 2
    assert needing_before(HOLDERS, "paid", 20, WEIGHTS) == 2 + 2  # 22 paid tokens: 22 / 9 = 2 free


def test_a_free_task_counts_every_holder_it_waits_behind() -> None:
    """A free task waits for all 16 free holders and, meanwhile, paid gets 9 per free token:
    both paid holders go first."""
    assert needing_before(HOLDERS, "free", 1, WEIGHTS) == 18


def test_a_lane_with_no_holders_counts_the_others_shares_only() -> None:
    assert needing_before(("free",) * 30, "paid", 18, WEIGHTS) == 2
    assert needing_before((), "paid", 5, WEIGHTS) == 0


def test_a_lane_the_weights_do_not_name_weighs_one() -> None:
    """Older tasks' holders ("") against a new lane of weight 1: token for token."""
    assert needing_before(("",) * 10, "free", 4, WEIGHTS) == 4


def test_a_lane_that_leaves_others_reserves_counts_its_tasks_ahead_as_more() -> None:
    """Free may use 0.8 of the slots and windows (paid reserves 0.2): 8 tasks ahead take the
    time of 10; no reserve, no change."""
    assert lane_ahead(8, 0.2) == 10 and lane_ahead(9, 0.2) == 12 and lane_ahead(8, 0.0) == 8
