"""What bench/cost.py reads off a running genqueue: CPU seconds per process group, Valkey's
command counts, and figures from the event log (dispatch latency, drain rate, makespan)."""

from __future__ import annotations

import math
import os
import re
import resource
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

# Process groups, in the order the table shows them. "client" (the load generators) and the
# bench process itself are measured apart and left out of the total.
GROUPS = (
    "ingress",
    "queue",
    "keypool",
    "workers",
    "janitor",
    "serve",
    "ray",
    "valkey",
    "haproxy",
    "yardstick",
)
CLIENT = "client"

# Ray names an actor's process `ray::<Class>` (`ray::<Class>.<method>` while it runs a call).
_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("ingress", re.compile(r"^ray::ServeReplica:genqueue:")),
    ("yardstick", re.compile(r"^ray::ServeReplica:yardstick:|bench\.cost_yardstick")),
    ("queue", re.compile(r"^ray::Queue\b")),
    ("keypool", re.compile(r"^ray::KeyPool\b")),
    ("workers", re.compile(r"^ray::Worker\b")),
    ("janitor", re.compile(r"^ray::Janitor\b")),
    ("serve", re.compile(r"^ray::(ServeController|ProxyActor|HAProxyManager)\b")),
    ("valkey", re.compile(r"valkey-server|redis-server")),
    ("haproxy", re.compile(r"(^|/)haproxy\b")),
    (CLIENT, re.compile(r"(^|/)wrk\b|bench/cost_client\.py")),
)


def group_of(cmdline: str) -> str:
    """The group of a process from its command line (Ray's own processes when nothing else
    matches: gcs_server, raylet, the dashboard and its agents, idle workers)."""
    for group, pattern in _RULES:
        if pattern.search(cmdline):
            return group
    return "ray"


@dataclass(slots=True)
class CpuSample:
    """CPU seconds (user + system) of each process below the bench process, by pid, with the
    group each was seen in; the bench process's own, its children's that have ended (the load
    clients: wrk and bench/cost_client.py run to their end), and the machine's busy seconds."""

    seconds: dict[int, float] = field(default_factory=dict)
    groups: dict[int, str] = field(default_factory=dict)
    machine_busy: float = 0.0
    bench: float = 0.0
    ended_children: float = 0.0


def _cmdline(process: Any) -> str:
    words = process.cmdline()
    return " ".join(words) if words else str(process.name())


def _psutil() -> Any:
    """psutil, which Ray vendors and puts on the path when imported."""
    import importlib

    import ray  # noqa: F401

    return importlib.import_module("psutil")


def cpu_sample(root: int | None = None) -> CpuSample:
    """CPU seconds so far of every descendant of `root` (default: this process)."""
    psutil = _psutil()
    sample = CpuSample()
    for process in psutil.Process(root or os.getpid()).children(recursive=True):
        try:
            with process.oneshot():
                times = process.cpu_times()
                cmdline = _cmdline(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        sample.seconds[process.pid] = times.user + times.system
        sample.groups[process.pid] = group_of(cmdline)
    own = resource.getrusage(resource.RUSAGE_SELF)
    ended = resource.getrusage(resource.RUSAGE_CHILDREN)
    sample.bench = own.ru_utime + own.ru_stime
    sample.ended_children = ended.ru_utime + ended.ru_stime
    machine = psutil.cpu_times()
    sample.machine_busy = machine.user + machine.nice + machine.system + getattr(machine, "irq", 0.0)
    sample.machine_busy += getattr(machine, "softirq", 0.0) + getattr(machine, "steal", 0.0)
    return sample


def cpu_delta(before: CpuSample, after: CpuSample) -> dict[str, float]:
    """CPU seconds each group used between two samples; "total" (every group of genqueue and
    the yardstick); apart from it, "client" (the load generators), "bench" (this process) and
    "others": the machine's busy time that none of these accounts for (other programs on the
    machine, and genqueue's processes that ended between the samples)."""
    used: dict[str, float] = {}
    for pid, seconds in after.seconds.items():
        # The group as last seen: an idle Ray worker that became an actor counts for the actor.
        group = after.groups[pid]
        used[group] = used.get(group, 0.0) + max(0.0, seconds - before.seconds.get(pid, 0.0))
    out = {g: used.get(g, 0.0) for g in GROUPS}
    out["total"] = sum(out.values())
    out[CLIENT] = used.get(CLIENT, 0.0) + max(0.0, after.ended_children - before.ended_children)
    out["bench"] = max(0.0, after.bench - before.bench)
    machine = after.machine_busy - before.machine_busy
    out["others"] = max(0.0, machine - out["total"] - out[CLIENT] - out["bench"])
    return out


def per_task_ms(delta: Mapping[str, float], tasks: int) -> dict[str, float]:
    """A CPU delta in milliseconds per task."""
    return {g: round(1000 * s / tasks, 3) if tasks else 0.0 for g, s in delta.items()}


@dataclass(frozen=True, slots=True)
class Commands:
    """Valkey's counters at one moment: calls and microseconds per command, reads and writes
    processed."""

    calls: Mapping[str, int]
    reads: int
    writes: int
    usec: Mapping[str, int] = field(default_factory=dict)


def valkey_commands(url: str) -> Commands:
    """Valkey's command counts now (`INFO commandstats`, `INFO stats`)."""
    with redis.Redis.from_url(url) as client:
        stats: dict[str, Any] = client.info("commandstats")
        general: dict[str, Any] = client.info("stats")
    calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}
    usec = {k.removeprefix("cmdstat_"): int(v.get("usec", 0)) for k, v in stats.items()}
    return Commands(
        calls,
        int(general.get("total_reads_processed", 0)),
        int(general.get("total_writes_processed", 0)),
        usec,
    )


# The bench's own reads of the server (INFO, and the health probes) are no part of a task.
_OWN = frozenset({"info", "ping", "hello", "client|setinfo", "client|setname", "auth"})


def commands_per_task(before: Commands, after: Commands, tasks: int) -> dict[str, Any]:
    """Commands and round trips (reads the server processed) per task between two readings,
    with the calls per task of each command that ran and the server's time in each (a script's
    time, EVALSHA's or FCALL's, includes the commands it ran, which are counted apart too)."""
    delta = {
        name: after.calls.get(name, 0) - before.calls.get(name, 0)
        for name in after.calls
        if name not in _OWN and after.calls.get(name, 0) > before.calls.get(name, 0)
    }
    total = sum(delta.values())
    reads = after.reads - before.reads
    spent = {name: after.usec.get(name, 0) - before.usec.get(name, 0) for name in delta}
    return {
        "tasks": tasks,
        "commands_per_task": round(total / tasks, 2) if tasks else 0.0,
        "round_trips_per_task": round(reads / tasks, 2) if tasks else 0.0,
        "by_command": {
            k: round(v / tasks, 2) for k, v in sorted(delta.items(), key=lambda kv: -kv[1]) if tasks
        },
        "usec_per_task": {
            k: round(v / tasks, 1)
            for k, v in sorted(spent.items(), key=lambda kv: -kv[1])
            if tasks and v / tasks >= 0.05
        },
    }


def stream_ms(stream_id: str) -> int:
    """The server time, in milliseconds, in a stream id."""
    return int(stream_id.split("-", 1)[0])


def in_range(stream_id: str, start: str, end: str) -> bool:
    """Whether a stream id lies after `start` and at or before `end` ("" for no end)."""
    key = _id_key(stream_id)
    return key > _id_key(start) and (not end or key <= _id_key(end))


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def entries_of(url: str, stream: str, start: str, end: str = "+") -> list[tuple[str, str, str]]:
    """(id, type, task id) of the stream's entries after `start` up to `end`, read raw: no
    codec, so that a change of any event's shape leaves these figures alone."""
    out: list[tuple[str, str, str]] = []
    after = f"({start}" if start not in ("-", "0-0") else "-"
    with redis.Redis.from_url(url, decode_responses=True) as client:
        while True:
            page: list[tuple[str, dict[str, str]]] = client.xrange(stream, after, end, count=10_000)
            out += [(i, f.get("type", ""), f.get("task", "")) for i, f in page]
            if len(page) < 10_000:
                return out
            after = f"({page[-1][0]}"


ENDED = ("task.succeeded", "task.failed", "task.cancelled", "task.expired")


@dataclass(frozen=True, slots=True)
class Span:
    """Tasks of one phase and when they were submitted, first dispatched and ended (ms)."""

    submitted: int
    ended: int
    first_submitted_ms: int
    first_dispatched_ms: int
    last_ended_ms: int

    def rate_from_dispatch(self) -> float:
        """Tasks ended per second from the first dispatch to the last end."""
        span = (self.last_ended_ms - self.first_dispatched_ms) / 1000
        return round(self.ended / span, 1) if span > 0 else 0.0


def span_of(entries: Iterable[tuple[str, str, str]]) -> Span:
    """The phase's tasks (those submitted within it) from its stream entries."""
    mine: set[str] = set()
    first_sub = first_disp = last_end = 0
    ended = 0
    for stream_id, kind, task in entries:
        ms = stream_ms(stream_id)
        if kind == "task.submitted":
            mine.add(task)
            first_sub = first_sub or ms
        elif kind == "task.dispatched" and task in mine:
            first_disp = first_disp or ms
        elif kind in ENDED and task in mine:
            ended += 1
            last_end = ms
    return Span(len(mine), ended, first_sub, first_disp, last_end)


def dispatch_latencies(url: str, namespace: str, ranges: Mapping[str, tuple[str, str]]) -> dict[str, Any]:
    """Dispatch latency (an outcome to the next dispatch, as `genqueue audit` measures it over the
    whole log) of the dispatches in each named range of stream ids: p50, p99, samples."""
    import asyncio

    from actors.audit import Auditor
    from events.redis_store import RedisEventStore

    async def read() -> list[Any]:
        store = RedisEventStore.from_url(url, namespace)
        try:
            return list(await store.read_range())
        finally:
            await store.close()

    auditor = Auditor()
    found: dict[str, list[float]] = {name: [] for name in ranges}
    for stored in asyncio.run(read()):
        seen = len(auditor.report.dispatch_latency_ms)
        auditor.feed(stored)
        if len(auditor.report.dispatch_latency_ms) > seen:
            for name, (start, end) in ranges.items():
                if in_range(stored.id, start, end):
                    found[name].append(float(auditor.report.dispatch_latency_ms[-1]))
    return {
        name: {
            "p50_ms": _nearest_rank(values, 50),
            "p99_ms": _nearest_rank(values, 99),
            "max_ms": max(values, default=0.0),
            "samples": len(values),
        }
        for name, values in found.items()
    }


def _nearest_rank(values: list[float], q: float) -> float:
    """The nearest-rank q-th percentile (0-100); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]
