"""`genqueue token …` and `genqueue credits grant` against a real store."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from typer.testing import CliRunner

from events.catalogue import ROLES
from events.redis_store import RedisEventStore
from serve_app.cli.main import app
from serve_app.http.auth import authenticate, digest
from serve_app.http.problems import Unauthorized

runner = CliRunner()


def test_a_token_is_printed_once_stored_as_a_digest_and_revocable(store_url: str) -> None:
    ns = f"t{uuid.uuid4().hex[:10]}"
    made = runner.invoke(
        app,
        [
            "token",
            "create",
            "--user",
            "shop",
            "--role",
            "service",
            "--redis-url",
            store_url,
            "--namespace",
            ns,
        ],
    )
    assert made.exit_code == 0, made.output
    token = made.stdout.strip().splitlines()[-1]
    assert token.startswith("gq_") and len(token) > 40

    async def check() -> tuple[str, str, str, bool]:
        store = RedisEventStore.from_url(store_url, ns)
        try:
            caller = await authenticate(store, f"Bearer {token}", required=True)
            raw = str(await store.read_raw())
            return caller.user_id, caller.role, raw, digest(token) in raw
        finally:
            await store.close()

    user, role, raw, has_digest = asyncio.run(check())
    assert (user, role) == ("shop", "service")
    assert token not in raw and has_digest  # only the digest reaches the stream
    listed = runner.invoke(app, ["token", "list", "--redis-url", store_url, "--namespace", ns])
    assert "shop" in listed.stdout and "service" in listed.stdout and token not in listed.stdout
    token_id = digest(token)[:12]
    assert (
        runner.invoke(
            app, ["token", "revoke", token_id, "--redis-url", store_url, "--namespace", ns]
        ).exit_code
        == 0
    )

    async def revoked() -> bool:
        store = RedisEventStore.from_url(store_url, ns)
        try:
            await authenticate(store, f"Bearer {token}", required=True)
        except Unauthorized:
            return True
        finally:
            await store.close()
        return False

    assert asyncio.run(revoked())
    again = runner.invoke(app, ["token", "revoke", token_id, "--redis-url", store_url, "--namespace", ns])
    assert again.exit_code == 1 and "no live token" in again.output


def test_a_metrics_token_and_a_scoped_service_token_are_made_and_listed(store_url: str) -> None:
    """`--role metrics` makes a scrape token; `--users` scopes a service token, comma-separated
    or repeated, and the scope is what the API sees and what `token list` shows."""
    ns = f"t{uuid.uuid4().hex[:10]}"
    where = ["--redis-url", store_url, "--namespace", ns]
    made = {
        role: runner.invoke(app, ["token", "create", "--user", "u", "--role", role, *extra, *where])
        for role, extra in (
            ("metrics", []),
            ("service", ["--users", "app1:*,vip", "--users", "bob"]),
        )
    }
    for result in made.values():
        assert result.exit_code == 0, result.output
    assert "for users app1:*, vip, bob" in made["service"].stderr

    async def callers() -> list[tuple[str, tuple[str, ...]]]:
        store = RedisEventStore.from_url(store_url, ns)
        try:
            found = []
            for result in made.values():
                header = f"Bearer {result.stdout.strip().splitlines()[-1]}"
                caller = await authenticate(store, header, required=True, roles=ROLES)
                found.append((caller.role, caller.users))
            return found
        finally:
            await store.close()

    assert asyncio.run(callers()) == [("metrics", ()), ("service", ("app1:*", "vip", "bob"))]
    listed = runner.invoke(app, ["token", "list", *where], env={"COLUMNS": "200"})
    assert "metrics" in listed.stdout and "app1:*, vip, bob" in listed.stdout


def test_bad_arguments_are_clear_errors_without_a_traceback(store_url: str) -> None:
    for args in (
        ["token", "create", "--user", "x", "--role", "root"],
        ["token", "create", "--user", "bad user!"],
        ["token", "create", "--user", "x", "--role", "service", "--users", "bad user!"],
        ["token", "create", "--user", "x", "--role", "service", "--users", "*"],
        ["token", "create", "--user", "x", "--role", "user", "--users", "app1:*"],
        ["credits", "grant", "x", "0"],
    ):
        result = runner.invoke(app, [*args, "--redis-url", store_url])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output


def test_credits_grant_adds_to_the_balance(store_url: str) -> None:
    ns = f"t{uuid.uuid4().hex[:10]}"
    for expected in (5, 12):
        result = runner.invoke(
            app,
            [
                "credits",
                "grant",
                "alice",
                str(5 if expected == 5 else 7),
                "--reason",
                "promo",
                "--redis-url",
                store_url,
                "--namespace",
                ns,
            ],
        )
        assert result.exit_code == 0 and f"balance {expected}" in result.stdout, result.output

    async def ledger() -> list[dict[str, object]]:
        store = RedisEventStore.from_url(store_url, ns)
        try:
            return (await store.user("alice"))[1]
        finally:
            await store.close()

    assert [(e["amount"], e["reason"]) for e in asyncio.run(ledger())] == [(7, "promo"), (5, "promo")]


def test_a_token_made_with_a_lane_rides_it_and_an_unknown_lane_is_one_line(
    store_url: str, tmp_path: Path
) -> None:
    """`--lane paid` with a config that has lanes paid and free: the API's caller carries the
    lane and the confirmation names it; a lane the config lacks is exit 2 in one line naming
    the lanes there are."""
    config = tmp_path / "genqueue.toml"
    config.write_text('[[lanes]]\nname = "paid"\nweight = 9\n[[lanes]]\nname = "free"\n')
    ns = f"t{uuid.uuid4().hex[:10]}"
    where = ["--redis-url", store_url, "--namespace", ns, "--config", str(config)]
    made = runner.invoke(app, ["token", "create", "--user", "vip", "--lane", "paid", *where])
    assert made.exit_code == 0, made.output
    assert "lane paid" in made.stderr
    wrong = runner.invoke(app, ["token", "create", "--user", "vip", "--lane", "gold", *where])
    assert wrong.exit_code == 2 and "Traceback" not in wrong.output
    assert wrong.stderr.strip() == "--lane: 'gold' is not a configured lane (paid, free)"

    async def lane() -> str:
        store = RedisEventStore.from_url(store_url, ns)
        try:
            header = f"Bearer {made.stdout.strip().splitlines()[-1]}"
            return (await authenticate(store, header, required=True, roles=ROLES)).lane
        finally:
            await store.close()

    assert asyncio.run(lane()) == "paid"
