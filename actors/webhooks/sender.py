"""Webhooks, the I/O part: URL checks that resolve names, POSTs to the checked addresses, and
the Deliverer, which sends task webhooks and alerts on a thread of its own.

The QueueActor's fold says which webhooks are pending (`QueueState.webhooks`); the actor
hands each new one to the Deliverer and, after a restart, every one the fold still holds.
The Deliverer never decides queue state: it appends webhook events, which the fold then
reads like any other. A delivery cut short by a crash between its POST and its append is
sent again after the restart with the same `webhook-id` (at least once, never lost). Alerts
take the same checked and signed path, retried `[alerts] webhook_attempts` times; their
attempts are logged, not recorded.

Each attempt resolves the host once, checks every address, and connects to a checked one:
a name cannot be rebound to a private address between the check and the connection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import json
import random
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TypeVar

import httpx
import structlog

from actors.config import Config
from actors.queue.alerts import SIGNER, alert_webhook_id, payload
from actors.queue.state import PendingWebhook, QueueState
from actors.shell import Backoff, retrying
from actors.webhooks.rules import (
    Network,
    advance,
    after_attempt,
    networks,
    off_event,
    redacted,
    refused_address,
    retry_delay,
    signed_headers,
    signing_secret,
    task_body,
    url_target,
    webhook_id,
)
from events.catalogue import (
    TERMINAL,
    AlertNotified,
    AlertRaised,
    AlertResolved,
    Event,
    TaskCancelled,
    TaskExpired,
    TaskFailed,
    TaskSucceeded,
)
from events.errors import StoreUnavailableError
from events.redis_store import RedisEventStore

T = TypeVar("T")

log = structlog.get_logger("genqueue.webhooks")

# (host, port) -> the addresses it resolves to; a test passes one that answers as it likes.
Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for `host`, asked afresh."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


# Host name -> (monotonic expiry, addresses): a burst of submits to one receiver resolves
# its name once, not once each. Deliveries resolve afresh before every attempt.
_resolved: dict[tuple[str, int], tuple[float, list[str]]] = {}
RESOLVED_SECONDS = 30.0


async def resolve_cached(host: str, port: int) -> list[str]:
    """`resolve`, remembered for RESOLVED_SECONDS."""
    now = time.monotonic()
    known = _resolved.get((host, port))
    if known is not None and known[0] > now:
        return known[1]
    found = await resolve(host, port)
    if len(_resolved) >= 1000:
        _resolved.clear()
    _resolved[(host, port)] = (now + RESOLVED_SECONDS, found)
    return found


async def checked_addresses(url: str, allowed: Sequence[Network], resolver: Resolver) -> list[str] | str:
    """The addresses of `url`'s host, every one of them allowed to receive webhooks, or why the
    URL may not receive them (its shape, or an address its host resolves to)."""
    target = url_target(url)
    if isinstance(target, str):
        return target
    host, port = target
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        addresses = [host]
    except ValueError:
        try:
            addresses = await resolver(host, port)
        except (OSError, UnicodeError, ValueError) as exc:  # gaierror is an OSError
            return f"host {host!r} does not resolve ({exc})"
    if not addresses:
        return f"host {host!r} does not resolve"
    return refused_address(addresses, allowed) or addresses


async def check_url(url: str, allow_networks: Iterable[str]) -> str | None:
    """Why `url` may not receive webhooks (its shape, or an address its host resolves to), or None."""
    found = await checked_addresses(url, networks(allow_networks), resolve_cached)
    return found if isinstance(found, str) else None


def pinned(url: str, headers: Mapping[str, str]) -> tuple[httpx.URL, dict[str, str], dict[str, object]]:
    """What a request to `url` sent to one of its host's checked addresses carries: the target,
    `headers` with the name in Host, and (https) the name as TLS SNI, so the server sees what a
    plain request would send and its certificate is verified against the name."""
    target = httpx.URL(url)
    carried = {**headers, "host": target.netloc.decode("ascii")}
    extensions: dict[str, object] = {}
    if target.scheme == "https":
        extensions["sni_hostname"] = target.raw_host.decode("ascii")
        # The pool keys connections by address: one verified for another name at the same
        # address must not carry this request.
        carried["connection"] = "close"
    return target, carried, extensions


async def first_to_connect(addresses: Sequence[str], attempt: Callable[[str], Awaitable[T]]) -> T:
    """`attempt` on the first of `addresses` that takes a connection (nothing was sent to those
    that did not, so the next may answer); the last one's failure is raised."""
    for address in addresses[:-1]:
        try:
            return await attempt(address)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            continue
    return await attempt(addresses[-1])


async def post_checked(
    client: httpx.AsyncClient, url: str, addresses: Sequence[str], body: str, headers: dict[str, str]
) -> httpx.Response:
    """POST `body` to `url` over a connection to the first of `addresses` (its host's, checked
    by `checked_addresses`) that takes one; the name is not resolved again (`pinned`)."""
    target, carried, extensions = pinned(url, headers)

    async def send(address: str) -> httpx.Response:
        request = client.build_request(
            "POST", target.copy_with(host=address), content=body, headers=carried, extensions=extensions
        )
        return await client.send(request)

    return await first_to_connect(addresses, send)


class Deliverer:
    """Delivers completion webhooks and alerts with retries, off the QueueActor's decision loop.

    `start`, `follow` and `alert` are called from the queue's loop thread and only hand work
    over; everything else runs on the Deliverer's own event loop thread. `resolver` looks
    hosts up before every attempt.
    """

    def __init__(self, config: Config, rng: random.Random, resolver: Resolver = resolve) -> None:
        self._config = config
        self._policy = config.webhooks
        self._allowed = networks(config.webhooks.allow_networks)
        self._resolver = resolver
        self._rng = rng
        self._active: dict[str, concurrent.futures.Future[None]] = {}
        self._alerts: set[concurrent.futures.Future[None]] = set()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="webhooks", daemon=True)
        self._thread.start()
        self._store: RedisEventStore | None = None
        self._client: httpx.AsyncClient | None = None
        self._slots: asyncio.Semaphore | None = None

    def follow(self, state: QueueState, event: Event) -> None:
        """Start the webhook that `event` (just applied to `state`) made pending, if any."""
        if isinstance(event, TaskSucceeded | TaskFailed | TaskCancelled | TaskExpired):
            pending = state.webhooks.get(event.task_id)
            if pending is not None and pending.attempts == 0:
                self.start(pending)

    def resume(self, state: QueueState) -> None:
        """Start every webhook the state holds pending (after a restart)."""
        for pending in list(state.webhooks.values()):
            self.start(pending)

    def start(self, pending: PendingWebhook) -> None:
        """Deliver `pending` unless it is already being delivered here."""
        with self._lock:
            if pending.task_id in self._active:
                return
            future = asyncio.run_coroutine_threadsafe(self._deliver(pending), self._loop)
            self._active[pending.task_id] = future
        future.add_done_callback(lambda _: self._done(pending.task_id))

    def alert(self, event: AlertRaised | AlertResolved) -> None:
        """Send an alert to every `[alerts] webhooks` URL."""
        body = json.dumps(payload(event, self._config.redis.namespace), separators=(",", ":"))
        for url in self._config.alerts.webhooks:
            future = asyncio.run_coroutine_threadsafe(self._alert(url, body, event), self._loop)
            with self._lock:
                self._alerts.add(future)
            future.add_done_callback(self._alert_done)

    def _alert_done(self, future: concurrent.futures.Future[None]) -> None:
        with self._lock:
            self._alerts.discard(future)

    def _done(self, task_id: str) -> None:
        with self._lock:
            self._active.pop(task_id, None)

    def pending(self) -> int:
        """How many webhooks are being delivered (or wait for their next attempt) here."""
        with self._lock:
            return len(self._active)

    def _resources(self) -> tuple[RedisEventStore, httpx.AsyncClient, asyncio.Semaphore]:
        if self._store is None or self._client is None or self._slots is None:
            redis = self._config.redis
            self._store = RedisEventStore.from_url(redis.url, redis.namespace)
            self._client = httpx.AsyncClient(
                timeout=self._policy.timeout_seconds,
                follow_redirects=False,  # a redirect could point anywhere, a private address too
                limits=httpx.Limits(max_connections=self._policy.concurrency),
            )
            self._slots = asyncio.Semaphore(self._policy.concurrency)
        return self._store, self._client, self._slots

    async def _deliver(self, pending: PendingWebhook) -> None:
        store, _, _ = self._resources()
        bound = log.bind(
            task_id=pending.task_id, webhook_id=webhook_id(pending.task_id), receiver=redacted(pending.url)
        )
        if not self._policy.enabled:
            # Signing with an empty server secret would use a key anyone can compute.
            off = "webhooks are off on this server: [webhooks] secret is not set"
            await self._append(store, [off_event(pending, off, time.time())])
            bound.warning("webhook not sent", reason=off)
            return
        body = json.dumps(await self._body(store, pending.task_id), separators=(",", ":"))
        secret = signing_secret(self._policy.secret, pending.token_id)
        current: PendingWebhook | None = pending
        while current is not None:
            await asyncio.sleep(max(0.0, current.next_at - time.time()))
            try:
                code, error = await self._post(current.url, body, secret, webhook_id(current.task_id))
                events = after_attempt(current, code, error, time.time(), self._policy, self._rng.random())
                await self._append(store, events)
            except Exception:
                bound.exception("webhook attempt broke; trying again")
                await asyncio.sleep(1.0)
                continue
            after = advance(current, events)
            if after is None:
                bound.info(
                    f"webhook {events[-1].type.removeprefix('webhook.')}", attempts=current.attempts + 1
                )
            else:
                bound.warning("webhook attempt failed", attempt=after.attempts, code=code, error=error)
            current = after

    async def _body(self, store: RedisEventStore, task_id: str) -> dict[str, object]:
        # The view turns terminal in the transaction that ended the task; it is polled
        # until then, and through a store outage, on the same backoff.
        backoff = Backoff()
        while True:
            with contextlib.suppress(StoreUnavailableError):
                view = await store.task_view(task_id) or {}
                if view.get("status") in TERMINAL:
                    return task_body(task_id, view)
            await backoff.wait()

    async def _alert(self, url: str, body: str, event: AlertRaised | AlertResolved) -> None:
        """POST an alert until a 2xx answers, at most `[alerts] webhook_attempts` times."""
        msg_id = alert_webhook_id(event)
        bound = log.bind(alert=event.name, webhook_id=msg_id, receiver=redacted(url))
        if not self._policy.enabled:
            bound.warning("alert not sent", reason="[webhooks] secret is not set: it signs alerts too")
            return
        secret = signing_secret(self._policy.secret, SIGNER)
        attempts = self._config.alerts.webhook_attempts
        code, error, delivered, attempt = 0, "", False, 0
        for attempt in range(1, attempts + 1):
            code, error = await self._post(url, body, secret, msg_id)
            if 200 <= code < 300:
                bound.info("alert delivered", attempt=attempt, code=code)
                delivered = True
                break
            bound.warning("alert delivery failed", attempt=attempt, code=code, error=error)
            if attempt < attempts:
                await asyncio.sleep(retry_delay(attempt, self._policy, self._rng.random()))
        # Recorded like a task webhook's end, so the log shows whether each receiver heard.
        sent = AlertNotified(
            name=event.name,
            webhook_id=msg_id,
            receiver=redacted(url),
            delivered=delivered,
            attempts=attempt,
            code=code,
            error=error[:200],
            at=time.time(),
        )
        store, _, _ = self._resources()
        await self._append(store, [sent])

    async def _post(self, url: str, body: str, secret: str, msg_id: str) -> tuple[int, str]:
        """One signed attempt: (status code, "") for an answer, or (0, why) when none came or
        the URL was refused."""
        _, client, slots = self._resources()
        found = await checked_addresses(url, self._allowed, self._resolver)
        if isinstance(found, str):
            return 0, f"the URL {found}"
        async with slots:
            headers = signed_headers(secret, msg_id, time.time(), body)
            try:
                response = await post_checked(client, url, found, body, headers)
            except Exception as exc:  # httpx's errors, and any other: an attempt that got no answer
                return 0, f"{type(exc).__name__}: {exc}"[:200]
        return response.status_code, ""

    async def _append(self, store: RedisEventStore, events: list[Event]) -> None:
        """Append, waiting out a store outage: the attempt happened and must be recorded."""
        await retrying("event store unavailable; webhook events wait", lambda: store.append(events), log)

    def stop(self) -> None:
        """Cancel every delivery and stop the thread (they resume from the stream on restart)."""
        with self._lock:
            futures = [*self._active.values(), *self._alerts]
        for future in futures:
            future.cancel()

        async def close() -> None:
            if self._client is not None:
                await self._client.aclose()
            if self._store is not None:
                await self._store.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
