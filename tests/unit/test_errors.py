"""The error tree: every exception class genqueue defines hangs under one root, drawn in its docstring."""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil

import pytest

import events.errors
from events.errors import GenqueueError
from serve_app.http.problems import ApiProblem


def defined_exceptions() -> list[type[BaseException]]:
    """Every exception class defined in the project's packages."""
    found: list[type[BaseException]] = []
    for package in ("events", "actors", "serve_app"):
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            module = importlib.import_module(info.name)
            found += [
                obj
                for obj in vars(module).values()
                if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == info.name
            ]
    return found


ERRORS = [cls for cls in defined_exceptions() if issubclass(cls, GenqueueError)]


def test_every_exception_class_has_a_root() -> None:
    """Each exception class is a GenqueueError, or an HTTP problem of the separate ApiProblem tree.

    A stop signal turned into a KeyboardInterrupt (`genqueue up` on SIGTERM) is not an error and
    stays out of both trees."""
    strays = [
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in defined_exceptions()
        if not issubclass(cls, KeyboardInterrupt)
        if issubclass(cls, GenqueueError) == issubclass(cls, ApiProblem)
    ]
    assert strays == []


@pytest.mark.parametrize("cls", ERRORS, ids=lambda cls: cls.__qualname__)
def test_the_docstring_draws_every_error(cls: type[GenqueueError]) -> None:
    """The root's module docstring names every class of the tree, so the drawing stays whole."""
    assert f"── {cls.__qualname__} " in (events.errors.__doc__ or "") or cls is GenqueueError


@pytest.mark.parametrize("cls", ERRORS, ids=lambda cls: cls.__qualname__)
def test_every_error_survives_pickling(cls: type[GenqueueError]) -> None:
    """An error crosses Ray whole: its type and message survive a pickle round trip."""
    error = cls("the message")
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy)) == (cls, "the message")
