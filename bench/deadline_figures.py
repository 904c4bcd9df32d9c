"""What a burst's event log says about its deadlines: the tasks that expired made no upstream
call and got exactly their charge back, those that started did so before their deadline, and
how efficiently the tasks that ran used the upstream budget."""

from __future__ import annotations

from collections.abc import Sequence

from events.catalogue import (
    CreditsCharged,
    CreditsRefunded,
    StoredEvent,
    TaskExpired,
    TaskStarted,
    TaskSubmitted,
    TaskSucceeded,
)


def deadline_figures(
    log: Sequence[StoredEvent],
    slots: int,
    latency: float,
    rpm_total: float,
    upstream_calls: int | None = None,
) -> dict[str, object]:
    """The deadline figures of the run in `log`; `upstream_calls`: what upstream itself counted
    (the emulator), to compare with the calls the log says started."""
    events = [s.event for s in log]
    deadline = {e.task_id: e.deadline for e in events if isinstance(e, TaskSubmitted) and e.deadline}
    first_submit = min((e.at for e in events if isinstance(e, TaskSubmitted)), default=0.0)
    started: dict[str, list[float]] = {}
    for e in events:
        if isinstance(e, TaskStarted):
            started.setdefault(e.task_id, []).append(e.at)
    expired = {e.task_id: e for e in events if isinstance(e, TaskExpired)}
    charged: dict[str, int] = {}
    refunded: dict[str, int] = {}
    for e in events:
        if isinstance(e, CreditsCharged):
            charged[e.task_id] = charged.get(e.task_id, 0) + e.amount
        elif isinstance(e, CreditsRefunded):
            refunded[e.task_id] = refunded.get(e.task_id, 0) + e.amount
    # How long before its deadline each call of a deadline task started (negative: after it).
    slack = sorted(deadline[t] - at for t, times in started.items() if t in deadline for at in times[:1])
    succeeded = [e for e in events if isinstance(e, TaskSucceeded)]
    last_end = max((e.at for e in succeeded), default=first_submit)
    makespan = last_end - first_submit
    ran = len(succeeded)
    # The ran tasks' bound: the faster of the slots and the pools' rate could not do better.
    bound = ran / min(slots / latency, rpm_total / 60) + latency if ran else 0.0
    calls = sum(len(times) for times in started.values())
    return {
        "deadline_tasks": len(deadline),
        "expired": len(expired),
        "expired_in_line": sum(e.attempt == 0 for e in expired.values()),
        "expired_at_worker": sum(e.attempt > 0 for e in expired.values()),
        "expired_with_a_call": sum(t in started for t in expired),
        "expired_refunded_exactly": sum(refunded.get(t, 0) == charged.get(t, 0) for t in expired),
        "expired_credits_charged": sum(charged.get(t, 0) for t in expired),
        "expired_credits_refunded": sum(refunded.get(t, 0) for t in expired),
        "deadline_tasks_started": len(slack),
        "started_after_deadline": sum(s <= 0 for s in slack),
        "start_slack_min_s": round(slack[0], 3) if slack else None,
        "ran": ran,
        "ran_makespan_s": round(makespan, 3),
        "ran_bound_s": round(bound, 3),
        "ran_efficiency": round(bound / makespan, 3) if makespan > 0 else None,
        "calls_started": calls,
        "upstream_calls": upstream_calls,
    }
