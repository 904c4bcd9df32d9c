"""The HTTP app served by uvicorn in a thread, with no actors, and tokens on it (for tests)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from actors.config import Config
from serve_app.http.app import create_app
from serve_app.http.auth import new_token
from tests.conftest import free_port
from tests.helpers import append_to, eventually


class App:
    """A served app and tokens on it."""

    def __init__(self, config: Config, url: str) -> None:
        self.config, self.url = config, url
        self.port = int(url.rsplit(":", 1)[1])

    def token(self, user: str, role: str) -> dict[str, str]:
        """The Authorization header of a new token for `user` with `role`."""
        secret, event = new_token(user, role)
        append_to(self.config, [event])
        return {"Authorization": f"Bearer {secret}"}


@contextmanager
def served(config: Config) -> Iterator[App]:
    """The app for `config` on a free port of 127.0.0.1 until the block ends.

    Nothing is dispatched (there are no actors): submitted tasks stay waiting.
    """
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    eventually(lambda: server.started, timeout=30, what="uvicorn started")
    try:
        yield App(config, f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
