"""The figures of a load test, from what each simulated user saw: a pure summary, and its table.

Clocks: waits, call times and the makespan come from the server's timestamps (submitted_at,
started_at, finished_at), so the client's own delays do not enter them; submit latency and
time to image are what a user sees, on the client's clock.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.table import Table

from actors.forecast import makespan_at_rate
from actors.keypool.status import OK, SERVING
from actors.planner import PoolPlan, simulate
from events.catalogue import TERMINAL
from serve_app.cli.burst import percentile


@dataclass(slots=True)
class UserRun:
    """One simulated user: what its submit got and what became of its task."""

    index: int
    kind: str
    pressed: float = 0.0  # client wall clock when the user pressed generate
    submit_seconds: float | None = None  # None: no answer
    status: int = 0  # HTTP status of the submit; 0 when there was no answer
    reason: str = ""  # why a submit was not accepted: "402 Insufficient credits", "no answer: ..."
    task_id: str = ""
    view: dict[str, Any] = field(default_factory=dict)  # the newest task view seen
    seen_end: float = 0.0  # client wall clock when the task was seen to end
    followed_by: str = ""  # "sse" or "poll"

    @property
    def accepted(self) -> bool:
        """Whether the submit was answered 202 with a task id."""
        return bool(self.task_id)

    @property
    def ended(self) -> bool:
        """Whether its task reached a terminal status."""
        return self.view.get("status") in TERMINAL


@dataclass(frozen=True, slots=True)
class Bound:
    """The best makespan the configuration allows, from `/v1/queue`."""

    slots: int
    mean_latency_seconds: float
    throughput_bound_per_second: float
    seconds: float  # FIFO under the slots and the pools' windows, nothing else in the way
    how: str  # "windows" (simulated rolling windows) or "rate" (N / throughput + latency)


@dataclass(frozen=True, slots=True)
class LoadReport:
    """The figures of one load test; `as_json` is what `--json` writes."""

    users: int
    kind: str
    ramp_seconds: float
    accepted: int
    rejected: dict[str, int]
    submit_p50_ms: float
    submit_p99_ms: float
    wait_p50_s: float
    wait_p90_s: float
    wait_p99_s: float
    time_to_image_p50_s: float
    time_to_image_p90_s: float
    time_to_image_p99_s: float
    makespan_s: float
    call_mean_s: float  # from start to end of a succeeded task's upstream call
    hold_p50_s: float  # from dispatch to end, the median: how long a task holds its slot
    succeeded: int
    failures: dict[str, int]
    followed: dict[str, int]
    bound: Bound | None
    efficiency: float | None

    def as_json(self) -> dict[str, Any]:
        """Plain JSON-ready figures."""
        return asdict(self)


def _ms(values: list[float], q: float) -> float:
    return round(1000 * percentile(values, q), 1)


def _s(values: list[float], q: float) -> float:
    return round(percentile(values, q), 3)


def bound_from_queue(queue: dict[str, Any], arrival_times: list[float]) -> Bound | None:
    """The ideal makespan for these arrivals under the slots, latency and pools `/v1/queue` shows.

    With one window length for every usable pool this is the planner's schedule without a
    margin (a burst may take each window's whole budget at once); otherwise N divided by the
    throughput bound, plus one call. None when no pool can serve.
    """
    pools = [p for p in queue.get("pools", []) if p.get("state", OK) in SERVING]
    slots, latency = int(queue["slots"]), float(queue["mean_latency_seconds"])
    rate = float(queue["throughput_bound_per_second"])
    if not pools or rate <= 0 or not arrival_times:
        return None
    windows = {float(p["window_seconds"]) for p in pools}
    if len(windows) == 1:
        window = windows.pop()
        names = {p["name"] for p in pools}
        # A pool counting against another shares that one's window (only if it serves too).
        against = {p["name"]: next(iter(p.get("counts_against") or []), "") for p in pools}
        plans = tuple(
            PoolPlan(p["name"], int(p["learned_rpm"]), a if (a := against[p["name"]]) in names else "")
            for p in pools
        )
        seconds = simulate(arrival_times, slots, latency, plans, window).makespan
        return Bound(slots, latency, rate, round(seconds, 3), "windows")
    seconds = makespan_at_rate(len(arrival_times), rate, latency, max(arrival_times))
    return Bound(slots, latency, rate, round(seconds, 3), "rate")


def _cause(run: UserRun) -> str | None:
    """Why an accepted task did not give its user an image; None when it did."""
    status = run.view.get("status")
    if status == "succeeded":
        return None
    if status == "failed":
        return f"failed: {str(run.view.get('error') or 'no reason given')[:80]}"
    if status in ("cancelled", "expired"):
        return str(status)  # expired: its deadline passed before it could start; refunded
    return f"unfinished ({status or 'never seen'})"


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 3) if values else 0.0


def _has(view: dict[str, Any], *stamps: str) -> bool:
    return all(view.get(stamp) is not None for stamp in stamps)


def arrival_offsets(runs: list[UserRun]) -> list[float]:
    """Seconds from the first acceptance to each accepted task's, on the server's clock."""
    stamps = sorted(
        r.view["submitted_at"] for r in runs if r.accepted and r.view.get("submitted_at") is not None
    )
    return [t - stamps[0] for t in stamps]


def summarise(runs: list[UserRun], kind: str, ramp: float, queue_after: dict[str, Any] | None) -> LoadReport:
    """The report of a finished run."""
    accepted = [r for r in runs if r.accepted]
    views = [r.view for r in accepted]
    waits = [v["started_at"] - v["submitted_at"] for v in views if _has(v, "started_at", "submitted_at")]
    images = [r for r in accepted if r.view.get("status") == "succeeded"]
    to_image = [r.seen_end - r.pressed for r in images if r.seen_end]
    submitted = [v["submitted_at"] for v in views if _has(v, "submitted_at")]
    finished = [v["finished_at"] for v in views if _has(v, "finished_at")]
    makespan = max(finished) - min(submitted) if submitted and finished else 0.0
    done = [r.view for r in images]
    calls = [v["finished_at"] - v["started_at"] for v in done if _has(v, "started_at", "finished_at")]
    holds = [v["finished_at"] - v["dispatched_at"] for v in done if _has(v, "dispatched_at", "finished_at")]
    # The bound is for the users who got in, at the moments the ramp gave them.
    offsets = [ramp * r.index / len(runs) for r in accepted]
    bound = bound_from_queue(queue_after, offsets) if queue_after else None
    causes = [c for c in map(_cause, accepted) if c]
    return LoadReport(
        users=len(runs),
        kind=kind,
        ramp_seconds=ramp,
        accepted=len(accepted),
        rejected=dict(Counter(r.reason for r in runs if not r.accepted).most_common()),
        submit_p50_ms=_ms([r.submit_seconds for r in runs if r.submit_seconds is not None], 50),
        submit_p99_ms=_ms([r.submit_seconds for r in runs if r.submit_seconds is not None], 99),
        wait_p50_s=_s(waits, 50),
        wait_p90_s=_s(waits, 90),
        wait_p99_s=_s(waits, 99),
        time_to_image_p50_s=_s(to_image, 50),
        time_to_image_p90_s=_s(to_image, 90),
        time_to_image_p99_s=_s(to_image, 99),
        makespan_s=round(makespan, 3),
        call_mean_s=_mean(calls),
        hold_p50_s=_s(holds, 50),
        succeeded=len(images),
        failures=dict(Counter(causes).most_common()),
        followed=dict(Counter(r.followed_by for r in accepted if r.followed_by)),
        bound=bound,
        efficiency=round(bound.seconds / makespan, 3) if bound and makespan else None,
    )


def render(report: LoadReport) -> Table:
    """The report as a two-column table."""
    table = Table(title=f"load test: {report.users} users, {report.kind}", show_header=False)
    ramp = f"spread over {report.ramp_seconds:g} s" if report.ramp_seconds else "all at once"
    table.add_row("arrivals", ramp)
    table.add_row("accepted", f"{report.accepted} of {report.users}")
    for reason, count in report.rejected.items():
        table.add_row("rejected", f"{count}: {reason}")
    table.add_row("submit latency", f"p50 {report.submit_p50_ms:,.1f} ms, p99 {report.submit_p99_ms:,.1f} ms")
    table.add_row(
        "wait to start",
        f"p50 {report.wait_p50_s:.2f} s, p90 {report.wait_p90_s:.2f} s, p99 {report.wait_p99_s:.2f} s",
    )
    table.add_row(
        "time to image",
        f"p50 {report.time_to_image_p50_s:.2f} s, p90 {report.time_to_image_p90_s:.2f} s, "
        f"p99 {report.time_to_image_p99_s:.2f} s",
    )
    table.add_row("makespan", f"{report.makespan_s:.2f} s (first accepted submit to last end)")
    table.add_row("images", f"{report.succeeded} of {report.accepted} accepted")
    for cause, count in report.failures.items():
        table.add_row("not an image", f"{count}: {cause}")
    table.add_row("followed by", ", ".join(f"{how} {n}" for how, n in report.followed.items()) or "none")
    if report.bound:
        b = report.bound
        table.add_row(
            "bound",
            f"{b.seconds:.2f} s for {b.slots} slots, {b.mean_latency_seconds:.2f} s a call, "
            f"{b.throughput_bound_per_second:g} tasks/s at most ({b.how})",
        )
        table.add_row(
            "efficiency", f"{report.efficiency:.3f} (bound / makespan)" if report.efficiency else "n/a"
        )
    else:
        table.add_row(
            "bound", "n/a: /v1/queue was not readable (it needs an admin token) or no pool can serve"
        )
    return table


_MAKE_SERVICE = "genqueue token create --user loadtest --role service"
# What to change when submits were refused, by the refusals' HTTP status.
_HINTS = {
    "401": "submits need a token: pass --token or set GENQUEUE_TOKEN; a service token "
    f"(`{_MAKE_SERVICE}`) submits for each simulated user under its own user_id",
    "402": "the simulated users (user-0, user-1, ...) lack credits: set [credits] default_grant "
    "(what a new user gets at its first submit) or give them credits with `genqueue credits grant`",
    "403": "this token may not submit for the simulated users (user-0, user-1, ...): use a service "
    f"token for every user (`{_MAKE_SERVICE}`) or one scoped with --users 'user-*'",
    "429": "a user token makes every simulated user one user, held to [limits] user_submit_rate and "
    f"[queue] per_user_waiting; a service token (`{_MAKE_SERVICE}`) submits for each under its own "
    "user_id at [limits] service_submit_rate",
}


def hints(report: LoadReport) -> list[str]:
    """One line for each kind of refused submit that a token or a setting would have let in."""
    statuses = {reason.split(" ", 1)[0] for reason in report.rejected}
    return [f"hint: {_HINTS[status]}" for status in sorted(statuses & _HINTS.keys())]
