"""`genqueue loadtest`: simulated users who each submit once and follow their task to its end.

Each user presses generate (all at once, or spread evenly over a ramp), follows its task
over Server-Sent Events (falling back to polling the task view when the stream is not
available or breaks) and stops when the task ends; `serve_app.cli.loadreport` sums up what
they saw. The users talk to genqueue through `genqueue_client`, with retries off: the test
counts every refusal and every lost answer as the user saw it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import aiohttp
import httpx
import typer
from genqueue_client import AsyncClient, AsyncTask, ConnectionFailed, Forbidden, GenqueueError, Unauthorized
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from events import errors
from serve_app.cli.burst import images, pooled, prompt, user_id, user_kind
from serve_app.cli.loadreport import LoadReport, UserRun, hints, render, summarise
from serve_app.cli.options import fail

KINDS = ("photography", "fitting", "mixed")
FOLLOW = ("sse", "poll")
# A submit may wait long for its answer under a burst; connecting is bounded on its own. A watch
# stream's reads wait for its keep-alive comments at least (see `genqueue_client`).
TIMEOUT = httpx.Timeout(120.0, connect=30.0)


# A failure the client did not turn into a GenqueueError: one of aiohttp's (under the client's
# transport) that httpx-aiohttp does not map, such as a malformed answer.
UNMAPPED = aiohttp.ClientError


class LoadtestError(errors.GenqueueError):
    """The load test could not run at all (the instance is unreachable or answers nonsense)."""


def _reason(exc: GenqueueError | aiohttp.ClientError) -> str:
    """`<status> <problem title>` of a refused request; `no answer: <why>` of one not answered."""
    if isinstance(exc, GenqueueError) and exc.status:
        return f"{exc.status} {exc.title}".strip()
    return f"no answer: {type(exc.__cause__ or exc).__name__}"


class LoadTest:
    """Runs the simulated users against one instance; `runs` is live while it goes."""

    def __init__(
        self,
        url: str,
        users: int,
        kind: str = "mixed",
        ramp: float = 0.0,
        token: str | None = None,
        *,
        follow: str = "sse",
        poll_seconds: float = 1.0,
        deadline_seconds: float = 3600.0,
    ) -> None:
        problems = [
            why
            for bad, why in (
                (
                    urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname,
                    f"URL must be http(s)://HOST[:PORT], got {url!r}",
                ),
                (users < 1, f"--users must be >= 1, got {users}"),
                (kind not in KINDS, f"--kind must be one of {', '.join(KINDS)}, got {kind!r}"),
                (ramp < 0, f"--ramp must be >= 0, got {ramp:g}"),
                (follow not in FOLLOW, f"--follow must be sse or poll, got {follow!r}"),
                (poll_seconds <= 0, f"--poll must be > 0, got {poll_seconds:g}"),
                (deadline_seconds <= 0, f"--deadline must be > 0, got {deadline_seconds:g}"),
            )
            if bad
        ]
        if problems:
            raise ValueError("; ".join(problems))
        self.url, self.kind, self.ramp = url.rstrip("/"), kind, ramp
        self.follow, self.poll_seconds, self.deadline_seconds = follow, poll_seconds, deadline_seconds
        self._token = token
        self.runs = [UserRun(i, user_kind(i, kind)) for i in range(users)]
        self.reached = asyncio.Event()  # set once the instance has answered `/v1/queue`
        self.queue_refused = ""  # why `/v1/queue` was refused to this token, if it was

    def tally(self) -> dict[str, int]:
        """How many users have pressed, were accepted, rejected, have started and have ended."""
        return {
            "pressed": sum(1 for r in self.runs if r.pressed),
            "accepted": sum(1 for r in self.runs if r.accepted),
            "rejected": sum(1 for r in self.runs if r.reason),
            "started": sum(1 for r in self.runs if r.view.get("started_at") or r.ended),
            "ended": sum(1 for r in self.runs if r.ended),
        }

    async def _queue(self, client: AsyncClient) -> dict[str, Any] | None:
        """`/v1/queue`, or None when this token may not read it (it needs an admin's)."""
        try:
            body = await client.queue()
        except (Unauthorized, Forbidden) as exc:
            self.queue_refused = _reason(exc)
            return None
        except ConnectionFailed as exc:
            raise LoadtestError(f"cannot read {self.url}/v1/queue: {exc.detail}") from exc
        except GenqueueError as exc:
            if exc.status == 200:  # answered, but not with JSON
                raise LoadtestError(f"cannot read {self.url}/v1/queue: {exc.detail}") from exc
            raise LoadtestError(f"GET {self.url}/v1/queue answered {_reason(exc)}") from exc
        if "slots" not in body:
            raise LoadtestError(f"{self.url}/v1/queue does not look like genqueue's queue view")
        return body

    async def run(self) -> LoadReport:
        """Press generate for every user, follow every task to its end (or the deadline), report."""
        # Made before the clock starts: each simulated user has its photos ready when it presses.
        photos = await asyncio.to_thread(lambda: [images(r.index, r.kind) for r in self.runs])
        client = AsyncClient(self.url, self._token, timeout=TIMEOUT, retries=0, transport=pooled())
        async with client:
            await self._queue(client)
            self.reached.set()
            t0 = time.monotonic()
            deadline = t0 + self.deadline_seconds
            users = len(self.runs)

            async def user(run: UserRun, photos: Mapping[str, bytes]) -> None:
                await asyncio.sleep(max(0.0, t0 + self.ramp * run.index / users - time.monotonic()))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                        task = await self._submit(client, run, photos)
                        if task is not None:
                            await self._follow(task, run)

            await asyncio.gather(*(user(r, p) for r, p in zip(self.runs, photos, strict=True)))
            try:
                after = await self._queue(client)
            except LoadtestError:
                after = None
        return summarise(self.runs, self.kind, self.ramp, after)

    async def _submit(
        self, client: AsyncClient, run: UserRun, photos: Mapping[str, bytes]
    ) -> AsyncTask | None:
        run.pressed = time.time()
        t0 = time.perf_counter()
        try:
            task = await client.submit(run.kind, photos, prompt(run.index), user_id=user_id(run.index))
        except (GenqueueError, UNMAPPED) as exc:
            run.reason = _reason(exc)
            if isinstance(exc, GenqueueError) and exc.status:
                run.status, run.submit_seconds = exc.status, time.perf_counter() - t0
            return None
        run.submit_seconds = time.perf_counter() - t0
        run.status = 202
        run.task_id = task.id
        run.view = dict(task.submitted.raw) if task.submitted else {}
        return task

    async def _follow(self, task: AsyncTask, run: UserRun) -> None:
        if self.follow == "sse" and await self._watch(task, run):
            return
        await self._poll(task, run)

    async def _watch(self, task: AsyncTask, run: UserRun) -> bool:
        """Follow the task's SSE stream; True once it has ended, False to fall back to polling."""
        run.followed_by = "sse"
        with contextlib.suppress(GenqueueError, UNMAPPED):
            async with contextlib.aclosing(task.watch()) as updates:
                async for update in updates:
                    self._seen(run, update.view.raw)
                    if run.ended:
                        return True
        return False

    async def _poll(self, task: AsyncTask, run: UserRun) -> None:
        run.followed_by = "poll"
        while True:
            with contextlib.suppress(GenqueueError, UNMAPPED):
                self._seen(run, (await task.status()).raw)
            if run.ended:
                return
            await asyncio.sleep(self.poll_seconds)

    @staticmethod
    def _seen(run: UserRun, view: dict[str, Any]) -> None:
        run.view = view
        if run.ended and not run.seen_end:
            run.seen_end = time.time()


async def _show(test: LoadTest, console: Console) -> None:
    """Progress bars of pressed, accepted, started and ended users until cancelled."""
    await test.reached.wait()  # nothing to show before the instance has answered
    progress = Progress(
        TextColumn("{task.description:>8}"),
        BarColumn(),
        TextColumn("{task.completed:>6}/{task.total}"),
        console=console,
        transient=True,
    )
    bars = {
        name: progress.add_task(name, total=len(test.runs))
        for name in ("pressed", "accepted", "started", "ended")
    }
    with progress:
        while True:
            counts = test.tally()
            for name, bar in bars.items():
                progress.update(bar, completed=counts[name])
            await asyncio.sleep(0.25)


def command(
    url: Annotated[str, typer.Argument(help="The instance's base URL, e.g. http://127.0.0.1:8000.")],
    users: Annotated[int, typer.Option(help="Simulated users; each submits once.")],
    kind: Annotated[str, typer.Option(help="photography, fitting, or mixed (alternating).")] = "mixed",
    ramp: Annotated[
        float, typer.Option(help="Spread the submits evenly over this many seconds (0: at once).")
    ] = 0.0,
    token: Annotated[
        str | None,
        typer.Option(envvar="GENQUEUE_TOKEN", help="Bearer token; a service token submits for each user_id."),
    ] = None,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures to this file.")
    ] = None,
    follow: Annotated[str, typer.Option(help="sse (falls back to polling) or poll.")] = "sse",
    poll: Annotated[float, typer.Option(help="Seconds between polls of a task view.")] = 1.0,
    deadline: Annotated[
        float, typer.Option(help="Give up on tasks not ended after this many seconds.")
    ] = 3600.0,
) -> None:
    """Simulated users submit once each and follow their tasks to the end; report what they saw."""
    console = Console()
    try:
        test = LoadTest(
            url, users, kind, ramp, token, follow=follow, poll_seconds=poll, deadline_seconds=deadline
        )
    except ValueError as exc:
        fail(str(exc), 2)

    async def main() -> LoadReport:
        shown = asyncio.create_task(_show(test, console))
        try:
            return await test.run()
        finally:
            shown.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await shown

    try:
        report = asyncio.run(main())
    except LoadtestError as exc:
        fail(str(exc))
    console.print(render(report))
    for line in hints(report):
        console.print(line, markup=False, soft_wrap=True)
    if json_file is not None:
        try:
            json_file.write_text(json.dumps(report.as_json(), indent=2) + "\n")
        except OSError as exc:
            fail(f"cannot write {json_file}: {exc.strerror}")
        console.print(f"figures written to {json_file}", markup=False)
