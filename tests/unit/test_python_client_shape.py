"""genqueue_client's sync and async clients have the same shape: the same public methods, each
taking the same parameters, the async ones coroutines (watch an async generator)."""

from __future__ import annotations

import inspect

import pytest
from genqueue_client import AsyncClient, AsyncTask, Client, Task

PAIRS = [(Client, AsyncClient), (Task, AsyncTask)]
# Closing differs by name, as in httpx: close() and aclose().
RENAMED = {"close": "aclose"}
# Methods that make a handle without a request: plain on both.
NO_IO = {"task"}


def public(cls: type) -> dict[str, object]:
    return {name: member for name, member in vars(cls).items() if not name.startswith("_")}


@pytest.mark.parametrize(("sync", "aio"), PAIRS, ids=["client", "task"])
def test_the_async_twin_has_every_method_with_the_same_parameters(sync: type, aio: type) -> None:
    """Each public method of the sync class is on the async one, with the same parameter names."""
    twins = public(aio)
    for name, method in public(sync).items():
        if not callable(method):
            continue
        twin = twins[RENAMED.get(name, name)]
        assert callable(twin), name
        assert list(inspect.signature(method).parameters) == list(inspect.signature(twin).parameters), name
        if name == "watch":
            assert inspect.isasyncgenfunction(twin)
        else:
            assert inspect.iscoroutinefunction(twin) == (name not in NO_IO), name
