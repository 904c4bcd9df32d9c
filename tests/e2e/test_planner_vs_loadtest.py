"""The capacity planner against reality: `genqueue loadtest` runs against genqueue on the Gemini
emulator (the real google-genai client, real Ray, real Valkey), and the planner's makespan and
90th-percentile wait for the same arrivals, slots, windows, margin and call time are within 10%.

Time is scaled down so that the three scenarios run in seconds: windows and call latencies
are shortened, budgets per window kept. The planner is given the arrivals the server stamped
(a burst of submits takes a moment to arrive) and the mean call time the run measured,
which is what an operator reads off `/v1/queue` to plan with. Each step between a call's
end and the next call's start (outcome, dispatch, token) costs tens of milliseconds that the
planner leaves out, so the scenarios keep calls long next to them; and the planner takes
every call as long as the mean, so the slowest call of the last wave ends a little after
the planned makespan. Measured runs come out 2-8% slower than planned, more with other load
on the machine.

The key pool's margin is 0.5 s in the scenarios with windows of several seconds, for the
planner too (at a 60 s window that costs under 1%), and the default 0.02 s in the 600-user
burst at 1 s windows. A 429 there (rare, now that a grant counts from when its call went out
on the wire) widens the margin by 2% of the window, which the planner does not know of.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest

from actors.config import KeyPoolConfig, PoolConfig, ProviderConfig, Secret
from actors.planner import PoolPlan, simulate
from emulator.server import running as emulator
from emulator.wire import EmulatorConfig, PoolSpec
from serve_app.cli.burst import percentile
from serve_app.cli.loadreport import LoadReport, arrival_offsets
from serve_app.cli.loadtest import LoadTest
from serve_app.runtime import running
from tests.conftest import free_port
from tests.helpers import make_config

TOLERANCE = 0.10
MARGIN = 0.5


@dataclass(frozen=True, slots=True)
class Scenario:
    """A load shape, time-scaled: `capacity` calls per pool per `window` seconds."""

    name: str
    users: int
    pools: int
    capacity: int
    window: float
    slots: int
    latency: float
    # Every user following its own SSE stream costs the ingress a read per watcher per queue
    # move; past ~100 users that slows submits down, so the larger runs poll every 5 s.
    follow: str = "sse"
    margin: float = MARGIN

    @property
    def rpm(self) -> int:
        """The pools' rate in genqueue's terms (calls per minute at this window)."""
        rpm = self.capacity * 60 / self.window
        assert rpm == int(rpm), f"{self.name}: {self.capacity} calls per {self.window} s is no whole RPM"
        return int(rpm)


SCENARIOS = [
    # The origin story at 6x speed: 60 users, 3 projects of 15 calls a window, 40 slots, 20 s calls.
    Scenario("burst-60", users=60, pools=3, capacity=15, window=10.0, slots=40, latency=10 / 3),
    # 600 users at 3 x 600 RPM with 20 slots, at 60x speed: 10 calls per project per 1 s window,
    # 0.5 s calls; token-bound (30 calls a second against 40 the slots allow). The key pool's
    # default margin: at 1 s windows a 0.5 s one would cost a third of the budget.
    Scenario(
        "burst-600",
        users=600,
        pools=3,
        capacity=10,
        window=1.0,
        slots=20,
        latency=0.5,
        follow="poll",
        margin=KeyPoolConfig().margin_seconds,
    ),
    # Token-bound with longer windows: 3 projects of 20 calls per 8 s window, 30 slots of 1.5 s
    # calls (20 calls a second against a budget of 7.5); 90 users need a window and a half.
    Scenario("token-bound", users=90, pools=3, capacity=20, window=8.0, slots=30, latency=1.5, follow="poll"),
    # Slot-bound: budget to spare, 10 slots of 3 s calls; 30 users need 3 waves.
    Scenario("slot-bound", users=30, pools=1, capacity=300, window=2.0, slots=10, latency=3.0, follow="poll"),
]


@dataclass(frozen=True, slots=True)
class Outcome:
    """One scenario's measured and planned figures."""

    scenario: Scenario
    report: LoadReport
    planned_makespan: float
    planned_p90: float


def run_scenario(s: Scenario, store_url: str, data_dir: str) -> Outcome:
    """Start the emulator and genqueue for `s`, run the load test, and plan the same arrivals."""
    keys = {f"{s.name}-{i}": f"test-key-Plan{i}-{s.name}-00000000000000" for i in range(s.pools)}
    specs = tuple(PoolSpec(name, s.rpm, (key,)) for name, key in keys.items())
    upstream = EmulatorConfig(pools=specs, window_seconds=s.window, latency=s.latency, jitter=0.05, seed=7)
    with emulator(upstream) as url:
        config = make_config(
            store_url,
            data_dir,
            slots=s.slots,
            port=free_port(),
            provider=ProviderConfig(name="gemini", base_url=url, timeout_seconds=10, image_size="512"),
            pool_configs=tuple(
                PoolConfig(name=n, rpm=s.rpm, keys=(Secret(k),), window_seconds=s.window)
                for n, k in keys.items()
            ),
            keypool=KeyPoolConfig(margin_seconds=s.margin),
        )
        with running(config, dashboard=False) as live:
            test = LoadTest(live.api_url, s.users, "photography", follow=s.follow, poll_seconds=5.0)
            report = asyncio.run(test.run())
    pools = tuple(PoolPlan(name, s.rpm) for name in keys)
    plan = simulate(arrival_offsets(test.runs), s.slots, report.call_mean_s, pools, s.window, s.margin)
    return Outcome(s, report, plan.makespan, percentile(plan.waits, 90))


@pytest.mark.parametrize("name", [s.name for s in SCENARIOS])
def test_the_planner_predicts_the_makespan_and_p90_wait_within_ten_percent(
    ray_session: None, store_url: str, tmp_path: Path, name: str
) -> None:
    """Every user gets an image, and planned makespan and p90 wait lie within 10% of the run's."""
    o = run_scenario(next(s for s in SCENARIOS if s.name == name), store_url, str(tmp_path))
    r = o.report
    figures = (
        f"{name}: makespan {r.makespan_s:.2f} s (planned {o.planned_makespan:.2f}), "
        f"p90 wait {r.wait_p90_s:.2f} s (planned {o.planned_p90:.2f}), call {r.call_mean_s:.2f} s, "
        f"submit p99 {r.submit_p99_ms:.0f} ms, rejected {r.rejected}, failures {r.failures}"
    )
    print(figures)
    assert r.accepted == r.users and r.succeeded == r.users, figures
    assert r.followed.get(o.scenario.follow) == r.users, figures
    assert r.makespan_s == pytest.approx(o.planned_makespan, rel=TOLERANCE), figures
    assert r.wait_p90_s == pytest.approx(o.planned_p90, rel=TOLERANCE), figures


# Timings and whole clusters: run alone, after the tests that run two at a time.
pytestmark = pytest.mark.serial
