"""`genqueue loadtest`: simulated users who each submit once and follow their task to its end.

Each user presses generate (all at once, or spread evenly over a ramp), follows its task
over Server-Sent Events (falling back to polling the task view when the stream is not
available or breaks) and stops when the task ends; `serve_app.cli.loadreport` sums up what
they saw. aiohttp is imported when a test runs, so that the `genqueue` command starts fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import aiohttp
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from events.errors import GenqueueError
from serve_app.cli.burst import payload, sse_messages, user_kind
from serve_app.cli.loadreport import LoadReport, UserRun, hints, render, summarise
from serve_app.cli.options import fail

KINDS = ("photography", "fitting", "mixed")
FOLLOW = ("sse", "poll")


class LoadtestError(GenqueueError):
    """The load test could not run at all (the instance is unreachable or answers nonsense)."""


async def _problem_reason(r: aiohttp.ClientResponse) -> str:
    """`<status> <problem title>` of a refused request (its reason phrase when the body has no title)."""
    title = r.reason or ""
    with contextlib.suppress(ValueError, aiohttp.ClientError):
        body = await r.json(content_type=None)
        if isinstance(body, dict) and body.get("title"):
            title = str(body["title"])
    return f"{r.status} {title}".strip()


# An SSE stream stays quiet while nothing changes for its task; only connecting is bounded.
_NO_READ_LIMIT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=None)


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
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
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

    async def _queue(self, client: aiohttp.ClientSession) -> dict[str, Any] | None:
        """`/v1/queue`, or None when this token may not read it (it needs an admin's)."""
        try:
            async with client.get("/v1/queue", timeout=aiohttp.ClientTimeout(total=30)) as r:
                if r.status in (401, 403):
                    self.queue_refused = await _problem_reason(r)
                    return None
                if r.status != 200:
                    raise LoadtestError(f"GET {self.url}/v1/queue answered {await _problem_reason(r)}")
                body = await r.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise LoadtestError(f"cannot read {self.url}/v1/queue: {type(exc).__name__}: {exc}") from exc
        if not isinstance(body, dict) or "slots" not in body:
            raise LoadtestError(f"{self.url}/v1/queue does not look like genqueue's queue view")
        return body

    async def run(self) -> LoadReport:
        """Press generate for every user, follow every task to its end (or the deadline), report."""
        bodies = await asyncio.to_thread(lambda: [payload(r.index, r.kind) for r in self.runs])
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(self.url, connector=connector, headers=self._headers) as client:
            await self._queue(client)
            self.reached.set()
            t0 = time.monotonic()
            deadline = t0 + self.deadline_seconds
            users = len(self.runs)

            async def user(run: UserRun, body: dict[str, Any]) -> None:
                await asyncio.sleep(max(0.0, t0 + self.ramp * run.index / users - time.monotonic()))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                        if await self._submit(client, run, body):
                            await self._follow(client, run)

            await asyncio.gather(*(user(r, b) for r, b in zip(self.runs, bodies, strict=True)))
            try:
                after = await self._queue(client)
            except LoadtestError:
                after = None
        return summarise(self.runs, self.kind, self.ramp, after)

    async def _submit(self, client: aiohttp.ClientSession, run: UserRun, body: dict[str, Any]) -> bool:
        run.pressed = time.time()
        t0 = time.perf_counter()
        try:
            async with client.post("/v1/tasks", json=body, timeout=aiohttp.ClientTimeout(total=120)) as r:
                if r.status == 202:
                    answer = await r.json(content_type=None)
                    run.task_id = str(answer["task_id"])
                    run.view = dict(answer)
                else:
                    run.reason = await _problem_reason(r)
                run.status = r.status
            run.submit_seconds = time.perf_counter() - t0
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
            run.reason = f"no answer: {type(exc).__name__}"
        return run.accepted

    async def _follow(self, client: aiohttp.ClientSession, run: UserRun) -> None:
        if self.follow == "sse" and await self._watch(client, run):
            return
        await self._poll(client, run)

    async def _watch(self, client: aiohttp.ClientSession, run: UserRun) -> bool:
        """Follow the task's SSE stream; True once it has ended, False to fall back to polling."""
        run.followed_by = "sse"
        path = f"/v1/tasks/{run.task_id}/watch"
        try:
            async with client.get(path, headers={"Accept": "text/event-stream"}, timeout=_NO_READ_LIMIT) as r:
                if r.status != 200 or not r.content_type.startswith("text/event-stream"):
                    return False
                async for message in sse_messages(r.content):
                    self._seen(run, json.loads(message["data"]))
                    if run.ended:
                        return True
        except (aiohttp.ClientError, ValueError):
            pass
        return False

    async def _poll(self, client: aiohttp.ClientSession, run: UserRun) -> None:
        run.followed_by = "poll"
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                timeout = aiohttp.ClientTimeout(total=30)
                async with client.get(f"/v1/tasks/{run.task_id}", timeout=timeout) as r:
                    if r.status == 200:
                        self._seen(run, await r.json(content_type=None))
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
