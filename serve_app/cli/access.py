"""`genqueue token …` and `genqueue credits …`: API tokens and credit grants, written as events."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from actors.logs import configure
from actors.webhooks.rules import signing_secret, url_target
from events.catalogue import ROLES, CreditsGranted, Event, TokenRevoked
from events.redis_store import RedisEventStore
from serve_app.cli.options import ConfigFile, DataDir, Namespace, RedisUrl, config_or_exit, err, fail
from serve_app.cli.store import store
from serve_app.http.auth import SERVICE, new_token, parse_scope
from serve_app.http.models import USER_ID_PATTERN

token_app = typer.Typer(
    help="API tokens: create, list, revoke, webhook secret.", no_args_is_help=True, rich_markup_mode=None
)
credits_app = typer.Typer(help="The credit ledger: grant, show.", no_args_is_help=True, rich_markup_mode=None)
console = Console(highlight=False)


def _check_user(user: str) -> None:
    import re

    if not re.fullmatch(USER_ID_PATTERN, user) or len(user) > 128:
        fail(f"user id {user!r}: 1-128 characters of letters, digits and . _ @ : -", 2)


async def _append(url: str, namespace: str, events: list[Event]) -> None:
    store = RedisEventStore.from_url(url, namespace)
    try:
        await store.append(events)
    finally:
        await store.close()


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Option("--user", help="The user the token acts as.")],
    role: Annotated[
        str, typer.Option(help="user, service (an app backend), admin, or metrics (GET /metrics only).")
    ] = "user",
    webhook_url: Annotated[
        str, typer.Option("--webhook-url", help="A service token's default completion webhook.")
    ] = "",
    users: Annotated[
        list[str] | None,
        typer.Option(
            "--users",
            help="Scope a service token to these users: ids or prefixes ending in *, "
            "comma-separated or repeated ('app1:*,vip-7'). Default: every user.",
        ),
    ] = None,
    lane: Annotated[
        str,
        typer.Option(
            "--lane", help="The priority lane its submits ride, one of [[lanes]] (default: the default lane)."
        ),
    ] = "",
    config_file: ConfigFile = None,
    data_dir: DataDir = None,
    redis_url: RedisUrl = None,
    namespace: Namespace = None,
) -> None:
    """Make a token and print it once; only its SHA-256 digest is stored. A service token's
    webhook signing secret is printed too (on stderr) when the config has [webhooks] secret.
    A metrics token reaches GET /metrics and nothing else: give it to the scraper."""
    configure("WARNING")
    _check_user(user)
    if role not in ROLES:
        fail(f"--role must be one of {', '.join(ROLES)}", 2)
    if webhook_url and (role != SERVICE or isinstance(url_target(webhook_url), str)):
        fail("--webhook-url: an http(s) URL, for a service token", 2)
    try:
        scope = parse_scope(users or [])
    except ValueError as exc:
        fail(f"--users: {exc}", 2)
    if scope and role != SERVICE:
        fail("--users: only a service token is scoped to users", 2)
    config = config_or_exit(config_file)
    lanes = [each.name for each in config.lanes]
    if lane and lane not in lanes:
        fail(
            f"--lane: {lane!r} is not a configured lane "
            f"({', '.join(lanes) or 'the config has no [[lanes]]'})",
            2,
        )
    hooks = config.webhooks if role == SERVICE else None
    token, event = new_token(user, role, webhook_url, scope, lane)
    with store(config_file, data_dir, redis_url, namespace) as where:
        asyncio.run(_append(where.url, where.namespace, [event]))
    within = (f", for users {', '.join(scope)}" if scope else "") + (f", lane {lane}" if lane else "")
    err.print(f"token {event.token_id} for {user} ({role}{within}); it is shown only now:", markup=False)
    print(token)
    if hooks is not None and hooks.enabled:
        err.print(f"webhook signing secret (again: genqueue token secret {event.token_id}):")
        err.print(signing_secret(hooks.secret, event.token_id), markup=False, highlight=False)


@token_app.command("secret")
def token_secret(
    token_id: Annotated[str, typer.Argument(help="The token's id, from `genqueue token list`.")],
    config_file: ConfigFile = None,
) -> None:
    """Print the whsec_ secret that signs the webhooks of a token's tasks (derived from the
    config's [webhooks] secret; nothing is stored)."""
    hooks = config_or_exit(config_file).webhooks
    if not hooks.enabled:
        fail("the config has no [webhooks] secret: webhooks are off")
    print(signing_secret(hooks.secret, token_id))


@token_app.command("list")
def token_list(
    config_file: ConfigFile = None,
    data_dir: DataDir = None,
    redis_url: RedisUrl = None,
    namespace: Namespace = None,
) -> None:
    """The live tokens: id, user, role, created, webhook, a service token's users (never the
    tokens themselves)."""

    async def read(url: str, namespace: str) -> dict[str, str]:
        events = RedisEventStore.from_url(url, namespace)
        try:
            found: dict[str, str] = await events.tokens()
            return found
        finally:
            await events.close()

    configure("WARNING")
    with store(config_file, data_dir, redis_url, namespace) as where:
        tokens = asyncio.run(read(where.url, where.namespace))
    table = Table("token id", "user", "role", "created", "webhook", "users")
    for token_id, raw in sorted(tokens.items()):
        about = json.loads(raw)
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(about["created_at"]))
        table.add_row(
            token_id,
            about["user_id"],
            about["role"],
            created + " UTC",
            Text(about.get("webhook_url", "")),
            ", ".join(about.get("users", [])) or ("all" if about["role"] == SERVICE else ""),
        )
    # Piped or captured, the table keeps whole ids and URLs instead of rich's 80 columns.
    (console if console.is_terminal else Console(width=200)).print(table)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id, from `genqueue token list`.")],
    config_file: ConfigFile = None,
    data_dir: DataDir = None,
    redis_url: RedisUrl = None,
    namespace: Namespace = None,
) -> None:
    """Stop a token from working."""

    async def revoke(url: str, namespace: str) -> bool:
        events = RedisEventStore.from_url(url, namespace)
        try:
            digest = await events.token_digest(token_id)
            if digest is None:
                return False
            await events.append([TokenRevoked(token_id=token_id, digest=digest, at=time.time())])
            return True
        finally:
            await events.close()

    configure("WARNING")
    with store(config_file, data_dir, redis_url, namespace) as where:
        revoked = asyncio.run(revoke(where.url, where.namespace))
    if not revoked:
        fail(f"no live token {token_id}")
    console.print(f"token {token_id} revoked", markup=False)


@credits_app.command("grant")
def credits_grant(
    user: Annotated[str, typer.Argument(help="The user to credit.")],
    amount: Annotated[int, typer.Argument(help="Credits to add (>= 1).")],
    reason: Annotated[str, typer.Option(help="Kept in the ledger.")] = "",
    config_file: ConfigFile = None,
    data_dir: DataDir = None,
    redis_url: RedisUrl = None,
    namespace: Namespace = None,
) -> None:
    """Add credits to a user's balance."""
    configure("WARNING")
    _check_user(user)
    if not 1 <= amount <= 1_000_000_000:
        fail("AMOUNT must be between 1 and 1,000,000,000", 2)
    event = CreditsGranted(user_id=user, amount=amount, reason=reason[:200], by="cli", at=time.time())

    async def grant(url: str, namespace: str) -> int:
        events = RedisEventStore.from_url(url, namespace)
        try:
            await events.append([event])
            totals, _ = await events.user(user, entries=0)
            return int(totals.get("balance", 0))
        finally:
            await events.close()

    with store(config_file, data_dir, redis_url, namespace) as where:
        balance = asyncio.run(grant(where.url, where.namespace))
    console.print(f"granted {amount} to {user}; balance {balance}", markup=False)


@credits_app.command("show")
def credits_show(
    user: Annotated[str, typer.Argument(help="The user whose balance to show.")],
    entries: Annotated[int, typer.Option(help="How many of the newest ledger entries to list.")] = 10,
    config_file: ConfigFile = None,
    data_dir: DataDir = None,
    redis_url: RedisUrl = None,
    namespace: Namespace = None,
) -> None:
    """A user's balance, what was granted, charged and refunded, and the newest ledger entries."""
    configure("WARNING")
    _check_user(user)
    if not 0 <= entries <= 1000:
        fail("--entries must be between 0 and 1000", 2)

    async def read(url: str, namespace: str) -> tuple[dict[str, str], list[dict[str, object]]]:
        events = RedisEventStore.from_url(url, namespace)
        try:
            return await events.user(user, entries=entries)
        finally:
            await events.close()

    with store(config_file, data_dir, redis_url, namespace) as where:
        totals, ledger = asyncio.run(read(where.url, where.namespace))
    console.print(f"{user}: balance {int(totals.get('balance', 0))}", markup=False)
    if not ledger:
        return
    table = Table("at (UTC)", "change", "entry", "task", "reason")
    for entry in ledger:
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(str(entry.get("at", 0)))))
        amount = int(str(entry.get("amount", 0)))
        table.add_row(
            at,
            f"{amount:+d}",
            str(entry.get("type", "")).removeprefix("credits."),
            str(entry.get("task_id", "")),
            Text(str(entry.get("reason", ""))),  # free text: never read as markup
        )
    (console if console.is_terminal else Console(width=200)).print(table)
