"""Redis key names: parts a caller controls never make two names alike."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from events.keys import Keys

# Few characters, ':' and digits among them, so that near-misses are common.
PARTS = st.text(alphabet="ab1:", max_size=6)


@given(PARTS, PARTS)
def test_moving_a_colon_part_between_user_and_key_names_another_key(user: str, key: str) -> None:
    """Splitting "<user>:<key>" at another ':' gives a different pair, and a different name."""
    keys = Keys("ns")
    joined = f"{user}:{key}"
    for i, char in enumerate(joined):
        if char == ":" and i != len(user):
            assert keys.idempotency(joined[:i], joined[i + 1 :]) != keys.idempotency(user, key)


@given(PARTS, PARTS)
def test_idempotency_names_are_apart_from_the_older_ones(user: str, key: str) -> None:
    """No idempotency name falls among the `idem:<user>:<key>` names written before, which
    therefore are never read again and simply expire."""
    keys = Keys("ns")
    assert not keys.idempotency(user, key).startswith(f"{keys.prefix}:idem:")
