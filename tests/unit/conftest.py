"""Unit tests run without Ray: starting one, or asking for the shared one, fails the test loudly."""

from __future__ import annotations

from typing import Any, NoReturn

import pytest
import ray


class RayInUnitTest(AssertionError):
    """A unit test tried to start Ray; it belongs in tests/actors or tests/e2e."""


def _refuse(*args: Any, **kwargs: Any) -> NoReturn:
    raise RayInUnitTest("ray.init called in a unit test: unit tests run without Ray (tests/actors has one)")


@pytest.fixture(autouse=True)
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `ray.init`, and so Ray's automatic start on a first `.remote()`, raise."""
    monkeypatch.setattr(ray, "init", _refuse)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Refuse a unit test that asks for the shared Ray, which is started before this patch applies."""
    if "ray_session" in getattr(item, "fixturenames", ()) or item.get_closest_marker("ray"):
        raise RayInUnitTest(f"{item.nodeid} needs Ray: move it to tests/actors or tests/e2e")
