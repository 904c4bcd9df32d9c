"""The blocking client: `Client`, and the `Task` handles it gives."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Generator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, overload

import httpx
from httpx_sse import SSEError, connect_sse

from genqueue_client._wire import (
    Attempts,
    IfLate,
    Image,
    check,
    headers,
    image_bytes,
    json_of,
    new_key,
    no_answer,
    stream_timeout,
    submit_body,
    submitted,
    timeout_of,
    update_of,
)
from genqueue_client.errors import Conflict, ConnectionFailed, GenqueueError, error_for
from genqueue_client.models import Cancelled, Me, Submitted, TaskView, Update
from genqueue_client.retry import NO_ANSWER, Retries


class Client:
    """genqueue at `base_url`, reached with `token` (a user's, or a service's that submits for
    its users' `user_id`).

    Each request is tried again when that is safe (`retries`: a count, or a `Retries`): on no
    answer, and on a 429 or 503 after its `Retry-After`. `timeout` bounds each connect, read
    and write. `transport` and `limits` go to httpx (a `httpx.MockTransport` in tests; more
    connections for many watchers). Close it, or use it in a `with` block.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float | httpx.Timeout = 30.0,
        retries: int | Retries = 3,
        transport: httpx.BaseTransport | None = None,
        limits: httpx.Limits | None = None,
    ) -> None:
        self.retries = Retries.of(retries)
        self._timeout = timeout_of(timeout)
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=headers(token),
            timeout=self._timeout,
            transport=transport,
            limits=limits or httpx.Limits(),
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the client's connections."""
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """`method path` (with a JSON `body`), tried again when safe: the response of a success,
        or the error of the problem answered. For routes this client has no method for."""
        attempts = Attempts(self.retries)
        while True:
            try:
                return check(self._http.request(method, path, json=body, params=params, headers=headers))
            except NO_ANSWER as exc:
                error: GenqueueError = no_answer(exc, method, path)
            except httpx.HTTPError as exc:  # one that a repeat would meet again
                raise GenqueueError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
            except GenqueueError as exc:
                error = exc
            time.sleep(attempts.after(error))

    def submit(
        self,
        kind: str,
        images: Mapping[str, Image],
        prompt: str = "",
        *,
        idempotency_key: str | None = None,
        webhook_url: str | None = None,
        user_id: str | None = None,
        aspect_ratio: str | None = None,
        seed: int | None = None,
        deadline_seconds: float | None = None,
        if_late: IfLate | None = None,
        max_price: int | None = None,
        lane: str | None = None,
    ) -> Task:
        """Queue a task: `kind` photography or fitting, `images` by role (`person`, and `garment`
        for a fitting) as bytes or paths. It is charged once however often it is tried: every
        try carries `idempotency_key`, one made here unless given.

        `deadline_seconds` (at most a day): by then the task's upstream call must have started,
        or it ends expired and is refunded. When its ETA already misses that, the submit raises
        `DeadlineUnreachable` (a `Conflict` carrying `min_deadline_seconds`, nothing charged),
        unless `if_late` is "accept".

        `max_price`: the most credits it may cost, for a dearer fallback route (a cheaper one
        refunds the difference). `lane`: the priority lane it rides, for a service token (a
        user token's tasks ride its own)."""
        body = submit_body(
            kind,
            {role: image_bytes(image) for role, image in images.items()},
            prompt,
            user_id=user_id,
            webhook_url=webhook_url,
            aspect_ratio=aspect_ratio,
            seed=seed,
            deadline_seconds=deadline_seconds,
            if_late=if_late,
            max_price=max_price,
            lane=lane,
        )
        key = idempotency_key or new_key()
        sent = self.request("POST", "/v1/tasks", body=body, headers={"Idempotency-Key": key})
        answer = submitted(sent, key)
        return Task(self, answer.task_id, answer)

    def submit_and_wait(
        self,
        kind: str,
        images: Mapping[str, Image],
        prompt: str = "",
        *,
        idempotency_key: str | None = None,
        webhook_url: str | None = None,
        user_id: str | None = None,
        aspect_ratio: str | None = None,
        seed: int | None = None,
        deadline_seconds: float | None = None,
        if_late: IfLate | None = None,
        max_price: int | None = None,
        lane: str | None = None,
    ) -> Task:
        """Submit as `submit` does and follow the task to its end; `task.view` is then its last
        view (succeeded, failed, cancelled or expired)."""
        task = self.submit(
            kind,
            images,
            prompt,
            idempotency_key=idempotency_key,
            webhook_url=webhook_url,
            user_id=user_id,
            aspect_ratio=aspect_ratio,
            seed=seed,
            deadline_seconds=deadline_seconds,
            if_late=if_late,
            max_price=max_price,
            lane=lane,
        )
        task.wait()
        return task

    def task(self, task_id: str) -> Task:
        """A handle on a task submitted before (by its id)."""
        return Task(self, task_id)

    def me(self, user_id: str | None = None) -> Me:
        """The caller's credits and newest ledger entries (a service's: those of `user_id`)."""
        params = {"user_id": user_id} if user_id else None
        return Me.from_json(json_of(self.request("GET", "/v1/me", params=params)))

    def _view(self, task_id: str) -> TaskView:
        """The task's view as it stands now."""
        return TaskView.from_json(json_of(self.request("GET", f"/v1/tasks/{task_id}")))

    def queue(self) -> dict[str, Any]:
        """The queue's overview as `GET /v1/queue` shows it (an admin token)."""
        return json_of(self.request("GET", "/v1/queue"))

    def watch(self, task_id: str, last_event_id: str = "") -> Generator[Update, None, None]:
        """The task's updates from its watch stream, the first one being how it stands now (or
        what changed since `last_event_id`), until it ends. A stream that breaks is opened
        again with the id of the last update, so none is lost or repeated."""
        path = f"/v1/tasks/{task_id}/watch"
        timeout = stream_timeout(self._timeout)
        attempts = Attempts(self.retries)
        while True:
            resume = {"Last-Event-ID": last_event_id} if last_event_id else {}
            delivered = False
            try:
                with connect_sse(self._http, "GET", path, headers=resume, timeout=timeout) as source:
                    if not source.response.is_success:
                        source.response.read()
                        raise error_for(source.response)
                    for message in source.iter_sse():
                        update = update_of(message)
                        if update is None:
                            continue
                        last_event_id, delivered = update.id, True
                        attempts.reset()
                        yield update
                        if update.ended:
                            return
                # Ended with nothing new: resumed after the task's last update, or cut short.
                if not delivered and (self._view(task_id)).ended:
                    return
                error: GenqueueError = ConnectionFailed(f"GET {path}: the stream ended before the task")
            except NO_ANSWER as exc:
                error = no_answer(exc, "GET", path)
            except httpx.HTTPError as exc:
                raise GenqueueError(f"GET {path}: {type(exc).__name__}: {exc}") from exc
            except SSEError as exc:
                error = GenqueueError(f"GET {path} is not an event stream: {exc}")
            except GenqueueError as exc:
                error = exc
            time.sleep(attempts.after(error))


class Task:
    """A submitted task: `submitted` is the answer to its submit (None for a handle made from an
    id), `view` the latest view this handle has seen."""

    def __init__(self, client: Client, task_id: str, submitted: Submitted | None = None) -> None:
        self.id = task_id
        self.submitted = submitted
        self.view: TaskView | None = None
        self.last_event_id = ""
        self._client = client

    def __repr__(self) -> str:
        return f"Task({self.id!r}, status={self.view.status if self.view else None!r})"

    def status(self) -> TaskView:
        """The task as it stands now."""
        self.view = self._client._view(self.id)
        return self.view

    def watch(self) -> Generator[Update, None, None]:
        """The task's updates as they happen, until it ends (see `Client.watch`); a second
        watch of the same handle goes on from the last update the first one gave."""
        with contextlib.closing(self._client.watch(self.id, self.last_event_id)) as updates:
            for update in updates:
                self.view, self.last_event_id = update.view, update.id
                yield update

    def wait(self) -> TaskView:
        """Follow the task to its end; its last view."""
        if self.view is None or not self.view.ended:
            for _ in self.watch():
                pass
        assert self.view is not None  # a watch ends only after an update that ends it
        return self.view

    @overload
    def result(self, path: None = None) -> bytes: ...
    @overload
    def result(self, path: str | os.PathLike[str]) -> Path: ...
    def result(self, path: str | os.PathLike[str] | None = None) -> bytes | Path:
        """The generated image's bytes; with `path`, written to that file (whose path is
        returned). A 409 Conflict while the task has not succeeded; its problem says why (it
        failed, was cancelled or expired, or has not ended yet)."""
        data = self._client.request("GET", f"/v1/tasks/{self.id}/result").content
        if path is None:
            return data
        target = Path(path)
        target.write_bytes(data)
        return target

    def cancel(self) -> Cancelled:
        """Cancel the task while it waits for its turn, and get its credits back; a 409 Conflict
        once it holds a slot or has ended. A task already cancelled (by a try whose answer was
        lost, say) answers as if cancelled now."""
        try:
            body = json_of(self._client.request("DELETE", f"/v1/tasks/{self.id}"))
        except Conflict:
            view = self.status()
            if view.status != "cancelled":
                raise
            return Cancelled(task_id=self.id, status=view.status, refunded=view.refunded or 0)
        return Cancelled.from_json(body)
