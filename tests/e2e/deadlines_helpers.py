"""What the tests of deadlines at submit share: a small PNG, a submit body, and `Served`, the
app with no actors plus what the tests read from its store."""

from __future__ import annotations

import base64
import contextlib
import io
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
from PIL import Image

from actors.config import Config
from events.catalogue import CreditsGranted
from serve_app.http.auth import new_token
from tests.helpers import append_to, log_of, with_store
from tests.served import served

PROBLEM = "application/problem+json"
UNREACHABLE = "/problems/deadline-unreachable"
# What the last test adds to the shortest deadline a 409 names (see there).
MARGIN_SECONDS = 2


def png() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (9, 99, 199)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


PNG = png()


def task(user: str, **fields: Any) -> dict[str, Any]:
    """A photography submit for `user`."""
    return {"kind": "photography", "prompt": "p", "images": {"person": PNG}, "user_id": user, **fields}


def counted_from_the_submit(view: dict[str, Any], seconds: float) -> bool:
    """Whether the view's deadline is `seconds` after the submit: counted from when the request
    was checked, which is at most a moment before the store stamps `submitted_at`."""
    early = view["submitted_at"] + seconds - view["deadline"]
    return bool(0 <= early < 1)


class Served:
    """The app with no actors, an admin client on it, and what the tests read from the store."""

    def __init__(self, config: Config, client: httpx.Client) -> None:
        self.config, self.client = config, client
        self.blobs = Path(config.server.data_dir) / "blobs"
        self.schema: dict[str, Any] = client.get("/openapi.json").json()

    def users(self, n: int, credits: int) -> list[str]:
        """`n` new users, each granted `credits`."""
        users = [f"d-{uuid.uuid4().hex[:10]}" for _ in range(n)]
        now = time.time()
        append_to(self.config, [CreditsGranted(user_id=u, amount=credits, by="test", at=now) for u in users])
        return users

    def crowd(self, n: int) -> None:
        """`n` new users' tasks, queued in one batch: each in the current round, so ahead of
        every new user's task after them."""
        answer = self.client.post("/v1/tasks/batch", json={"tasks": [task(u) for u in self.users(n, 1)]})
        assert answer.status_code == 200 and answer.json()["accepted"] == n, answer.text

    def balance(self, user: str) -> int:
        totals, _ = with_store(self.config, lambda store: store.user(user, entries=0))
        return int(totals.get("balance", 0))

    def log_length(self) -> int:
        return len(log_of(self.config))

    def blob_paths(self) -> set[str]:
        return (
            {str(p.relative_to(self.blobs)) for p in self.blobs.rglob("*")} if self.blobs.exists() else set()
        )

    def view(self, task_id: str) -> dict[str, Any]:
        answer = self.client.get(f"/v1/tasks/{task_id}")
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def unreachable(self, answer: httpx.Response) -> dict[str, Any]:
        """The 409 deadline-unreachable problem of `answer`, checked against the submit's schema."""
        assert answer.status_code == 409, answer.text
        assert answer.headers["content-type"] == PROBLEM
        problem: dict[str, Any] = answer.json()
        assert problem["type"] == UNREACHABLE and problem["status"] == 409 and problem["detail"]
        declared = self.schema["paths"]["/v1/tasks"]["post"]["responses"]["409"]["content"][PROBLEM]["schema"]
        jsonschema.validate(problem, {**declared, "components": self.schema["components"]})
        return problem


@contextlib.contextmanager
def served_as_admin(config: Config) -> Iterator[Served]:
    """The app of `config` with no actors, served, and an admin's client on it."""
    with served(config) as running:
        secret, event = new_token("root", "admin")
        append_to(config, [event])
        headers = {"Authorization": f"Bearer {secret}"}
        with httpx.Client(base_url=running.url, timeout=30, headers=headers) as client:
            yield Served(config, client)
