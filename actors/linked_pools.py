"""Pools that count against others, as one budget for the forecast.

A pool with `counts_against` (a priority pool against its project's standard pool) takes a
place in its own window and in every window it counts against with each call, so it adds no
calls beyond the window at the end of its chain (the group's root): it only decides which tier
serves them. The forecast (`actors.forecast`) treats its pools as independent, so every group
of linked pools is given to it as one window: the root's window holding every call of the
group, with the root's capacity. Pure arithmetic, used by the ETA, `/v1/queue`'s throughput
bound and the capacity planner alike.

Where the root cannot serve (no keys, parked) the group's members serve within it, each at
most at the smallest capacity of its chain: the group's capacity is then their sum, at most
the root's. A member with a window other than the root's is counted in the root's.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace

from actors.forecast import PoolWindow

Chains = Mapping[str, tuple[str, ...]]


def chains(links: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """Each pool's chain of pools it counts against, nearest first, from each pool's
    `counts_against` ("" for none), as `actors.config.counted_against` gives it: a name not
    among `links` or a cycle ends the chain."""
    out: dict[str, tuple[str, ...]] = {}
    for name in links:
        chain: list[str] = []
        at = links[name]
        while at and at in links and at not in chain and at != name:
            chain.append(at)
            at = links[at]
        out[name] = tuple(chain)
    return out


def root(name: str, links: Chains) -> str:
    """The pool at the end of `name`'s chain (the pool itself when it counts against none)."""
    chain = links.get(name, ())
    return chain[-1] if chain else name


def groups(names: Sequence[str], links: Chains) -> dict[str, list[str]]:
    """Each root (in the order of `names`) with the pools whose calls end in its window, itself first."""
    out: dict[str, list[str]] = {}
    for name in names:
        out.setdefault(root(name, links), [])
    for name in names:
        members = out[root(name, links)]
        if name == root(name, links):
            members.insert(0, name)
        else:
            members.append(name)
    return out


def group_budget(
    top: str, members: Sequence[str], values: Mapping[str, float], links: Chains, serving: Collection[str]
) -> float:
    """What a group of linked pools may do together (calls per window, or per minute): the root's
    figure when it serves (or none does); else each serving member's smallest figure along its
    chain, summed, at most the root's."""
    if top in serving or not any(m in serving for m in members):
        return values[top]
    own = [min(values[x] for x in (m, *links.get(m, ())) if x in values) for m in members if m in serving]
    return min(values[top], sum(own))


def shared_rates(rates: Mapping[str, float], links: Chains, serving: Collection[str]) -> list[float]:
    """The calls per minute of every group with a serving pool (its `group_budget`): a standard
    pool and the priority pools counting against it together make the standard pool's rate."""
    return [
        group_budget(top, members, rates, links, serving)
        for top, members in groups(list(rates), links).items()
        if any(m in serving for m in members)
    ]


def shared_windows(windows: Mapping[str, PoolWindow], links: Chains) -> list[PoolWindow]:
    """One window per group of linked pools, in the order of their roots: the root's window, whose
    grants must already hold every call of the group (as the key pool's limiter holds them), with
    the group's capacity (`group_budget`), open from when its first pool may grant. Pools that
    count against none and have none counting against them come back as given."""
    serving = {name for name, w in windows.items() if not math.isinf(w.available_from)}
    capacities = {name: float(w.capacity) for name, w in windows.items()}
    out = []
    for top, members in groups(list(windows), links).items():
        if members == [top]:
            out.append(windows[top])
            continue
        capacity = int(group_budget(top, members, capacities, links, serving))
        opens = min(windows[m].available_from for m in members)
        out.append(replace(windows[top], capacity=capacity, available_from=opens))
    return out


def counted_grants(
    grants: Mapping[str, Sequence[float]], links: Chains, since: Mapping[str, float]
) -> dict[str, tuple[float, ...]]:
    """Each pool's window as the key pool's limiter holds it: its own grants and those of every
    pool counting against it, after `since[pool]`, oldest first."""
    held: dict[str, list[float]] = {name: list(times) for name, times in grants.items()}
    for name, times in grants.items():
        for over in links.get(name, ()):
            if over in held:
                held[over].extend(times)
    return {
        name: tuple(sorted(t for t in times if t > since.get(name, -math.inf)))
        for name, times in held.items()
    }
