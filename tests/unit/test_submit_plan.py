"""The submit's commands computed in Python with blanks: filled in, they are the projection's own."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events.admission import Admission, Refusal, Seen, admit
from events.catalogue import CreditsGranted, fair_order
from events.keys import Keys
from events.redis_commands import entry_commands
from events.redis_submit import SUBMIT_SCRIPT, lua_function
from events.submit_plan import GRANT_ONLY, SUBMITTED, Command, _blanks, fill, submit_commands
from tests.helpers import submitted

KEYS = Keys("plan")


def _expected(event: object, admission: Admission, round_: int, n: int, welcomed: bool) -> list[Command]:
    seen = Seen(balance=10**6, welcomed=welcomed, last_round=-1, current_round=0, waiting=0)
    events = admit(event, admission, seen, round_, n)  # type: ignore[arg-type]
    assert not isinstance(events, Refusal)
    return [Command(name, (key, *args)) for e in events for name, key, args in entry_commands(e, KEYS)]


@settings(max_examples=200, deadline=None)
@given(
    prompt=st.text(max_size=40) | st.sampled_from(["1111111111", "1165084444327937.0", '"order":1.0']),
    user=st.sampled_from(["u", "1111111111", "2222222222", "u:1165084444327937"]),
    key=st.sampled_from(["", "k", "1111111111"]),
    round_=st.integers(0, 2**33 - 1),
    n=st.integers(1, 2**20 - 1),
    price=st.integers(0, 3),
    grant=st.integers(0, 3),
    welcomed=st.booleans(),
)
def test_a_filled_plan_is_what_the_projection_writes_for_that_place(
    prompt: str, user: str, key: str, round_: int, n: int, price: int, grant: int, welcomed: bool
) -> None:
    """For any request text (the blanks' own digits included) and any place, filling the blanks
    and keeping the grant's commands only when it applies gives exactly the commands of the
    events `admit` decides for that place."""
    event = replace(submitted(user=user), prompt=prompt, idempotency_key=key, digest="d" if key else "")
    admission = Admission(price=price, default_grant=grant)
    plan = submit_commands(event, admission, KEYS)
    order = int(fair_order(round_, n))
    filled = [replace(fill(c, order), flags="") for c in plan if not welcomed or GRANT_ONLY not in c.flags]
    assert filled == _expected(event, admission, round_, n, welcomed)
    assert sum(SUBMITTED in c.flags for c in plan) == 1


def test_only_the_grant_is_conditional_and_only_the_place_is_blank() -> None:
    """The default grant's entry and writes are the commands marked grant-only; the blanks sit
    in the task's entry, its waiting score and its user's newest round."""
    event = replace(submitted(user="ann"), idempotency_key="k", digest="d")
    plan = submit_commands(event, Admission(price=2, default_grant=5), KEYS)
    grant_only = [c for c in plan if GRANT_ONLY in c.flags]
    granted = CreditsGranted(user_id="ann", amount=5, reason="default grant", by="config", at=event.at)
    assert [(c.name, c.args) for c in grant_only] == [
        (name, (key, *args)) for name, key, args in entry_commands(granted, KEYS)
    ]
    blank = {(c.name, c.args[0], b.kind) for c in plan for b in c.blanks}
    assert blank == {
        ("XADD", KEYS.events, "o"),
        ("ZADD", KEYS.waiting, "o"),
        ("HSET", KEYS.user("ann"), "r"),
    }


def test_an_argument_that_depends_on_the_place_otherwise_is_refused() -> None:
    """An argument that changes with the place other than by writing its numbers cannot be
    filled in by the script: the plan refuses it rather than write it wrong."""
    literal, blanks = _blanks(3, "a1111111111b", "a2222222222b")
    assert literal == "ab" and [b.spec() for b in blanks] == [[3, "r", 1]]
    with pytest.raises(ValueError, match="argument 3"):
        _blanks(3, "round 1111111111", "round 2222222222 and more")


def test_the_script_runs_the_python_rules_translated() -> None:
    """Every admission rule is in the submit script as Lua generated from its Python source."""
    from events import admission

    for rule in (admission.place_round, admission.rate_wait, admission.refusal_code, admission.over):
        assert lua_function(rule) in SUBMIT_SCRIPT
