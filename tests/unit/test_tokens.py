"""Token roles and scopes: parsing `--users`, matching user ids, and token events old and new."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from events.catalogue import TokenCreated
from events.codec import decode, encode
from serve_app.http.auth import Caller, in_scope, new_token, parse_scope
from serve_app.http.problems import Forbidden

user_ids = st.text(alphabet="abcxyz019._@:-", min_size=1, max_size=20)


def test_a_scope_is_ids_and_prefixes_comma_separated_or_repeated() -> None:
    """`--users 'app1:*,vip' --users bob` is three entries, a repeat counted once."""
    assert parse_scope(["app1:*, vip", "bob", "vip"]) == ["app1:*", "vip", "bob"]
    assert parse_scope([]) == []


@pytest.mark.parametrize("bad", ["*", "a*b", "bad user!", "", "x" * 129 + "*", "app1:*,"])
def test_anything_but_an_id_or_a_prefix_is_refused_by_name(bad: str) -> None:
    """A bare star, a star inside, spaces, an empty entry or an over-long id is a ValueError."""
    with pytest.raises(ValueError, match="neither a user id nor a prefix"):
        parse_scope([bad])


@given(user_ids, user_ids)
def test_a_prefix_admits_every_id_it_starts_and_an_id_only_itself(stem: str, rest: str) -> None:
    """`stem*` admits stem + anything; an exact id admits only that id."""
    assert in_scope(stem + rest, [stem + "*"])
    assert in_scope(stem, [stem]) and not in_scope(stem + rest, [stem])
    assert not in_scope(stem, [])


def test_a_stored_token_event_without_users_decodes_as_unscoped() -> None:
    """A token.created written before scopes existed decodes with an empty scope; a new one
    round-trips with its scope."""
    _, event = new_token("shop", "service", users=["app1:*"])
    fields = encode(event)
    assert decode(fields) == event and json.loads(fields["data"])["users"] == ["app1:*"]
    old = json.loads(fields["data"])
    del old["users"]
    decoded = decode({**fields, "data": json.dumps(old)})
    assert isinstance(decoded, TokenCreated) and decoded.users == []


def test_only_a_service_token_is_scoped_and_metrics_is_a_role() -> None:
    """A scope on a user, admin or metrics token is a ValueError; a metrics token is made."""
    for role in ("user", "admin", "metrics"):
        with pytest.raises(ValueError, match="only a service token"):
            new_token("x", role, users=["a"])
    assert new_token("prometheus", "metrics")[1].role == "metrics"


def test_a_scoped_caller_is_refused_outside_its_scope() -> None:
    """A scoped service acts for and sees its users, and gets a 403 for any other."""
    caller = Caller("shop", "service", "t1", users=("app1:*",))
    assert caller.acts_for("app1:ann") == "app1:ann" and caller.may_see("app1:ann")
    for outside in ("bob", None):  # None: the token's own user, "shop"
        with pytest.raises(Forbidden):
            caller.acts_for(outside)
    with pytest.raises(Forbidden):
        caller.may_see("bob")
    assert Caller("shop", "service").may_see("bob")
