"""Cases of genqueue_client against the real app (collected in tests/e2e/test_clients.py, whose
genqueue they share) (Ray Serve, actors, embedded Valkey, offline provider):
submit, watch, result, cancel, credits and problems; and through a local TCP proxy that drops
connections, a retried submit charged once and a watch resumed without a loss or a repeat."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from genqueue_client import (
    AsyncClient,
    Client,
    PaymentRequired,
    Retries,
    Task,
    Unauthorized,
)
from PIL import Image

from events.catalogue import CreditsGranted
from serve_app.cli.burst import images
from serve_app.http.auth import new_token
from serve_app.runtime import Running
from tests.helpers import append_to

SLOTS = 2
SELFIE = images(0, "photography")
# What the proxy does with one connection: (to the client, to genqueue); it closes both after.
Plan = Callable[[socket.socket, socket.socket], None]
QUICK = Retries(attempts=4, total_seconds=30.0, base_seconds=0.05, cap_seconds=0.2)


def user(live: Running, name: str, credits: int = 100) -> str:
    """A new user token for `name`, whose balance is `credits`."""
    secret, created = new_token(name, "user")
    grants = [CreditsGranted(user_id=name, amount=credits, by="test", at=0.0)] if credits else []
    append_to(live.config, [created, *grants])
    return secret


def backlog(client: Client, tasks: int) -> list[Task]:
    """`tasks` tasks of the client's user, queued first: users take turns, so the user's next
    task waits behind them."""
    return [client.submit("photography", SELFIE, f"filler {i}") for i in range(tasks)]


def test_submit_watch_result_and_credits(live: Running, tmp_path: Path) -> None:
    """A task is followed to succeeded, its image read as bytes and into a file; /v1/me shows one charge."""
    with Client(live.api_url, user(live, "alice", credits=5)) as client:
        task = client.submit("photography", SELFIE, "warm film portrait", aspect_ratio="1:1", seed=7)
        assert task.submitted is not None and task.submitted.balance == 4
        statuses = [update.view.status for update in task.watch()]
        assert statuses[-1] == "succeeded" and set(statuses) <= {"queued", "running", "succeeded"}
        assert task.status().status == "succeeded" and task.view is not None and task.view.price == 1
        image = Image.open(io.BytesIO(task.result()))
        assert image.format == "PNG" and image.size[0] > 0
        written = task.result(tmp_path / "portrait.png")
        assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        me = client.me()
    assert (me.user_id, me.role, me.balance, me.charged) == ("alice", "user", 4, 1)
    assert any(entry.get("task_id") == task.id for entry in me.ledger), me.ledger


def test_async_submit_and_wait(live: Running, tmp_path: Path) -> None:
    """The async client submits a fitting and waits for it; its result is an image."""

    async def main() -> bytes:
        async with AsyncClient(live.api_url, user(live, "bob")) as client:
            photos = images(1, "fitting")
            task = await client.submit_and_wait("fitting", photos, "try it on", user_id="bob")
            assert task.view is not None and task.view.status == "succeeded" and task.view.kind == "fitting"
            assert (await client.me()).balance == 98
            return await task.result()

    assert Image.open(io.BytesIO(asyncio.run(main()))).format == "PNG"


def test_a_waiting_task_is_cancelled_and_refunded(live: Running) -> None:
    """A task behind a backlog is cancelled with its credit back; a second cancel answers the same."""
    with Client(live.api_url, user(live, "carol", credits=10)) as client:
        backlog(client, 8)
        task = client.submit("photography", SELFIE, "soon cancelled")
        assert task.submitted is not None and (task.submitted.position or 0) >= SLOTS
        assert client.me().balance == 1
        cancelled = task.cancel()
        assert (cancelled.task_id, cancelled.status, cancelled.refunded) == (task.id, "cancelled", 1)
        assert task.cancel().status == "cancelled"  # already cancelled: the same answer, no error
        assert client.me().balance == 2
        assert task.wait().status == "cancelled"


def test_problems_are_raised_with_their_fields(live: Running) -> None:
    """A 402 carries balance and price and charges nothing; a wrong token is a 401."""
    with Client(live.api_url, user(live, "dave", credits=1), retries=QUICK) as client:
        with pytest.raises(PaymentRequired) as short:
            client.submit("fitting", images(2, "fitting"), "too dear")
        assert (short.value.status, short.value.balance, short.value.price) == (402, 1, 2)
        assert short.value.type.endswith("insufficient-credits") and short.value.raw["balance"] == 1
        assert client.me().balance == 1
    with (
        Client(live.api_url, "not-a-token", retries=QUICK) as stranger,
        pytest.raises(Unauthorized) as denied,
    ):
        stranger.me()
    assert denied.value.status == 401 and denied.value.title


class Proxy:
    """A TCP proxy on 127.0.0.1 in front of genqueue. Each new connection takes the next plan
    (`pipe` when none is left); it records the head of every request sent through it."""

    def __init__(self, upstream: int, *plans: Plan) -> None:
        self.upstream, self.plans = upstream, list(plans)
        self.requests: list[bytes] = []
        self.cut_ids: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
            plan = self.plans.pop(0) if self.plans else self.pipe
            threading.Thread(target=self._relay, args=(downstream, upstream), daemon=True).start()
            threading.Thread(target=self._run, args=(plan, downstream, upstream), daemon=True).start()

    @staticmethod
    def _run(plan: Plan, down: socket.socket, up: socket.socket) -> None:
        try:
            plan(down, up)
        except OSError:
            pass
        finally:
            for s in (down, up):
                # shutdown, not close alone: it wakes the other thread blocked reading the socket
                # and sends the FIN at once.
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def _relay(self, down: socket.socket, up: socket.socket) -> None:
        """Client to genqueue, recording each request's head."""
        try:
            while chunk := down.recv(65536):
                if re.match(rb"[A-Z]+ /", chunk):
                    self.requests.append(chunk.split(b"\r\n\r\n", 1)[0])
                up.sendall(chunk)
        except OSError:
            pass

    @staticmethod
    def pipe(down: socket.socket, up: socket.socket) -> None:
        """genqueue to the client, untouched."""
        while chunk := up.recv(65536):
            down.sendall(chunk)

    @staticmethod
    def drop_the_answer(down: socket.socket, up: socket.socket) -> None:
        """Wait until genqueue answers the request, then close the client's connection instead."""
        up.recv(65536)

    def cut_the_second_message(self, down: socket.socket, up: socket.socket) -> None:
        """Pass a watch stream's first message whole, then half of the second, then close."""
        seen = b""
        while chunk := up.recv(65536):
            seen += chunk
            starts = [m.start() for m in re.finditer(rb"event: task", seen)]
            if len(starts) >= 2 and re.search(rb"id: [^\n]*\n\n", seen[starts[1] :]):
                cut = re.search(rb"id: ([^\n]*)\n", seen[starts[1] :])
                assert cut is not None
                self.cut_ids.append(cut.group(1).decode())
                down.sendall(seen[: starts[1] + 40])
                return
        down.sendall(seen)

    def sent(self, path: str) -> list[bytes]:
        """The heads of the requests for `path` that went through."""
        return [r for r in self.requests if r.split(b" ")[1] == path.encode()]


def test_a_submit_retried_through_a_dropped_connection_is_charged_once(live: Running) -> None:
    """The first submit reaches genqueue but its answer is lost; the retry, with the same key,
    gets the same task (replayed): one task, one charge."""
    proxy = Proxy(live.config.server.port, Proxy.drop_the_answer)
    try:
        with Client(proxy.url, user(live, "erin", credits=10), retries=QUICK) as client:
            task = client.submit("photography", SELFIE, "charged once")
            me = client.me()
    finally:
        proxy.close()
    submits = proxy.sent("/v1/tasks")
    keys = {header(head, "idempotency-key") for head in submits}
    assert len(submits) == 2 and len(keys) == 1 and None not in keys, submits
    assert task.submitted is not None and task.submitted.replayed
    charges = [entry for entry in me.ledger if entry.get("task_id")]
    assert {entry["task_id"] for entry in charges} == {task.id}, me.ledger
    assert (me.balance, me.charged, len(charges)) == (9, 1, 1)


def test_a_watch_cut_mid_message_resumes_without_a_loss_or_a_repeat(live: Running) -> None:
    """The stream is cut inside its second message; the client reopens it with the first message's
    id, gets the cut update (or a later one) next, never one twice, and ends at succeeded."""
    token = user(live, "frank")
    with Client(live.api_url, token) as client:
        backlog(client, 8)
        task_id = client.submit("photography", SELFIE, "watched").id
    proxy = Proxy(live.config.server.port)
    proxy.plans.append(proxy.cut_the_second_message)
    try:
        with Client(proxy.url, token, retries=QUICK) as watcher:
            updates = list(watcher.watch(task_id))
    finally:
        proxy.close()
    ids = [u.id for u in updates]
    watches = proxy.sent(f"/v1/tasks/{task_id}/watch")
    assert [header(head, "last-event-id") for head in watches] == [None, ids[0]], watches
    (cut,) = proxy.cut_ids
    print(f"updates {ids}; cut inside {cut}; resumed with {ids[1]}")
    assert len(set(ids)) == len(ids)
    assert [order(i) for i in ids] == sorted(order(i) for i in ids)
    assert order(ids[1]) >= order(cut)  # the cut update, or a later one: nothing older, nothing lost
    assert updates[-1].view.status == "succeeded"


def order(event_id: str) -> tuple[int, int]:
    """Where a watch message id (`<events seen>-<position>-<stage>`) stands in the task's life:
    more events seen, or as many and a place nearer the front, is later."""
    seen, _, rest = event_id.partition("-")
    position = rest.partition("-")[0]
    return int(seen), -int(position) if position else 0


def header(head: bytes, name: str) -> str | None:
    """A header's value in a request head, if it is there."""
    found = re.search(rb"(?im)^" + name.encode() + rb": ([^\r]+)", head)
    return found.group(1).decode() if found else None
