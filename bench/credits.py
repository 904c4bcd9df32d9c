"""Credits and fairness, measured end to end through HTTP.

1. Race: a user whose balance pays for 10 tasks sends 50 submits at once, through two
   ingress replicas; counts 202s, 402s and the final balance, `--rounds` times.
2. Fairness: user A submits `--heavy` tasks, then user B submits one; B's wait to start
   against A's last task's wait (per-user running cap off, so A fills every slot).
3. Refunds: a burst of `--refund-burst` tasks through google-genai to the Gemini emulator,
   which answers `--empty-rate` of calls without an image (a permanent failure); refunds
   against failed tasks, and what `genqueue audit` says.

    python bench/credits.py --rounds 20 --heavy 500 --refund-burst 200
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

from actors.config import Config, CreditsConfig, PoolConfig, ProviderConfig, Secret
from bench.common import own_serve_ports
from emulator.server import running as emulator
from emulator.wire import EmulatorConfig, PoolSpec
from events.catalogue import TERMINAL, CreditsGranted, Event
from events.redis_store import RedisEventStore
from serve_app.cli.burst import payload
from serve_app.http.auth import new_token
from serve_app.runtime import running
from tests.conftest import free_port
from tests.helpers import make_config

BODY = payload(0, "photography")


async def append(config: Config, events: list[Event]) -> None:
    store = RedisEventStore.from_url(config.redis.url, config.redis.namespace)
    try:
        await store.append(events)
    finally:
        await store.close()


async def service_headers(config: Config) -> dict[str, str]:
    secret, event = new_token("bench-app", "service")
    await append(config, [event])
    return {"Authorization": f"Bearer {secret}"}


async def race(url: str, config: Config, rounds: int) -> list[dict[str, int]]:
    headers = await service_headers(config)
    out = []
    async with aiohttp.ClientSession(url, headers=headers, connector=aiohttp.TCPConnector(limit=100)) as http:
        for r in range(rounds):
            user = f"payer-{r}-{time.time_ns()}"
            await append(config, [CreditsGranted(user_id=user, amount=10, by="bench", at=time.time())])

            async def one(user: str = user) -> int:
                async with http.post("/v1/tasks", json={**BODY, "user_id": user}) as resp:
                    return resp.status

            codes = await asyncio.gather(*(one() for _ in range(50)))
            async with http.get("/v1/me", params={"user_id": user}) as resp:
                balance = (await resp.json())["balance"]
            out.append({"accepted": codes.count(202), "402": codes.count(402), "balance": balance})
    return out


async def wait_all(http: aiohttp.ClientSession, ids: list[str], deadline: float) -> dict[str, dict[str, Any]]:
    views: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        pending = [t for t in ids if views.get(t, {}).get("status") not in TERMINAL]
        if not pending:
            break
        for t in pending:
            async with http.get(f"/v1/tasks/{t}") as resp:
                views[t] = await resp.json()
        await asyncio.sleep(0.5)
    return views


async def fairness(url: str, config: Config, heavy: int) -> dict[str, float]:
    headers = await service_headers(config)
    await append(
        config, [CreditsGranted(user_id=u, amount=heavy + 10, by="bench", at=time.time()) for u in ("A", "B")]
    )
    async with aiohttp.ClientSession(url, headers=headers, connector=aiohttp.TCPConnector(limit=50)) as http:

        async def one(user: str) -> dict[str, Any]:
            async with http.post("/v1/tasks", json={**BODY, "user_id": user}) as resp:
                answer: dict[str, Any] = await resp.json()
                return answer

        a_answers = await asyncio.gather(*(one("A") for _ in range(heavy)))
        a_ids = [a["task_id"] for a in a_answers]
        b = await one("B")
        views = await wait_all(http, [*a_ids, b["task_id"]], time.monotonic() + 600)
    wait = {t: v["dispatched_at"] - v["submitted_at"] for t, v in views.items() if v.get("dispatched_at")}
    return {
        "B_position_at_submit": b["position"],
        "A_deepest_position_at_submit": max(a["position"] for a in a_answers),
        "B_wait_s": round(wait[b["task_id"]], 2),
        "A_last_wait_s": round(max(wait[t] for t in a_ids), 2),
        "A_tasks": heavy,
    }


def refunds(burst: int, empty_rate: float) -> dict[str, Any]:
    keys = ("bench-key-refund-000000000001",)
    spec = PoolSpec("proj", 600, keys)
    with emulator(
        EmulatorConfig(pools=(spec,), window_seconds=1.0, latency=0.2, jitter=0.05, empty_rate=empty_rate)
    ) as up:
        config = make_config(
            "",
            tempfile.mkdtemp(prefix="genqueue-bench-"),
            slots=20,
            port=free_port(),
            credits=CreditsConfig(photography=1, fitting=2, default_grant=10),
            provider=ProviderConfig(name="gemini", base_url=up, timeout_seconds=30, image_size="512"),
            pool_configs=(PoolConfig(name="proj", rpm=600, keys=(Secret(keys[0]),), window_seconds=1.0),),
        )
        with running(config, dashboard=False) as live:

            async def main() -> dict[str, dict[str, Any]]:
                async with aiohttp.ClientSession(
                    live.api_url, connector=aiohttp.TCPConnector(limit=burst)
                ) as http:

                    async def one(i: int) -> str:
                        async with http.post("/v1/tasks", json=payload(i, "photography")) as resp:
                            answer = await resp.json()
                            if resp.status != 202:
                                raise SystemExit(f"submit {i}: {resp.status} {answer}")
                            return str(answer["task_id"])

                    ids = await asyncio.gather(*(one(i) for i in range(burst)))
                    return await wait_all(http, list(ids), time.monotonic() + 600)

            views = asyncio.run(main())
            audit = subprocess.run(
                [
                    str(Path(sys.executable).parent / "genqueue"),
                    "audit",
                    "--redis-url",
                    live.config.redis.url,
                    "--namespace",
                    live.config.redis.namespace,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
    failed = [t for t, v in views.items() if v["status"] == "failed"]
    refunded = [t for t, v in views.items() if int(v.get("refunded") or 0)]
    credits_line = next((line for line in audit.stdout.splitlines() if "credits" in line), "")
    return {
        "tasks": burst,
        "failed": len(failed),
        "refunded_tasks": len(refunded),
        "refunded_equals_failed": sorted(failed) == sorted(refunded),
        "audit_exit": audit.returncode,
        "audit_credits": " ".join(credits_line.split()),
        "audit_violations": [line for line in audit.stdout.splitlines() if "violation" in line][:5],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--heavy", type=int, default=500)
    parser.add_argument("--refund-burst", type=int, default=200)
    parser.add_argument("--empty-rate", type=float, default=0.3)
    parser.add_argument("--only-refunds", action="store_true")
    args = parser.parse_args()
    if args.only_refunds:
        own_serve_ports()
        print("refunds:", refunds(args.refund_burst, args.empty_rate))
        return
    own_serve_ports()
    base = make_config(
        "",
        tempfile.mkdtemp(prefix="genqueue-bench-"),
        slots=20,
        latency=0.5,
        jitter=0.1,
        pools=(("p1", 600, 1.0), ("p2", 600, 1.0), ("p3", 600, 1.0)),
        port=free_port(),
        auth=True,
        credits=CreditsConfig(),
        per_user_waiting=1000,
    )
    config = replace(base, server=replace(base.server, replicas=2))
    with running(config, dashboard=False) as live:
        results = asyncio.run(race(live.api_url, live.config, args.rounds))
        ok = sum(1 for r in results if r == {"accepted": 10, "402": 40, "balance": 0})
        print(f"race: {ok}/{len(results)} rounds gave exactly 10 accepted, 40 x 402, balance 0")
        for i, r in enumerate(results):
            print(f"  round {i + 1}: {r}")
        print("fairness:", asyncio.run(fairness(live.api_url, live.config, args.heavy)))
    print("refunds:", refunds(args.refund_burst, args.empty_rate))


if __name__ == "__main__":
    main()
