"""`genqueue token …` and `genqueue credits …`: API tokens and credit grants, written as events."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from actors.logs import configure
from actors.webhooks.rules import signing_secret, url_target
from events.catalogue import ROLES, CreditsGranted, Event, TokenRevoked
from events.redis_store import RedisEventStore
from serve_app.cli.options import ConfigFile, DataDir, Namespace, RedisUrl, config_or_exit
from serve_app.http.auth import SERVICE, new_token, parse_scope
from serve_app.http.models import USER_ID_PATTERN

token_app = typer.Typer(help="API tokens: create, list, revoke, webhook secret.", no_args_is_help=True)
credits_app = typer.Typer(help="The credit ledger: grant, show.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)


def _check_user(user: str) -> None:
    import re

    if not re.fullmatch(USER_ID_PATTERN, user) or len(user) > 128:
        err.print(f"[red]user id {user!r}: 1-128 characters of letters, digits and . _ @ : -[/red]")
        raise typer.Exit(2)


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
    config_file: ConfigFile = None,
    redis_url: RedisUrl = None,
    namespace: Namespace = "default",
    data_dir: DataDir = Path(".genqueue"),
) -> None:
    """Make a token and print it once; only its SHA-256 digest is stored. A service token's
    webhook signing secret is printed too (on stderr) when the config has [webhooks] secret.
    A metrics token reaches GET /metrics and nothing else: give it to the scraper."""
    from serve_app.cli.ops import store_url

    configure("WARNING")
    _check_user(user)
    if role not in ROLES:
        err.print(f"[red]--role must be one of {', '.join(ROLES)}[/red]")
        raise typer.Exit(2)
    if webhook_url and (role != SERVICE or isinstance(url_target(webhook_url), str)):
        err.print("[red]--webhook-url: an http(s) URL, for a service token[/red]")
        raise typer.Exit(2)
    try:
        scope = parse_scope(users or [])
    except ValueError as exc:
        err.print(f"[red]--users: {escape(str(exc))}[/red]", highlight=False)
        raise typer.Exit(2) from exc
    if scope and role != SERVICE:
        err.print("[red]--users: only a service token is scoped to users[/red]")
        raise typer.Exit(2)
    hooks = config_or_exit(config_file).webhooks if role == SERVICE else None
    token, event = new_token(user, role, webhook_url, scope)
    with store_url(redis_url, data_dir, create=True) as url:
        asyncio.run(_append(url, namespace, [event]))
    within = f", for users {', '.join(scope)}" if scope else ""
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
        err.print("[red]the config has no [webhooks] secret: webhooks are off[/red]")
        raise typer.Exit(1)
    print(signing_secret(hooks.secret, token_id))


@token_app.command("list")
def token_list(
    redis_url: RedisUrl = None,
    namespace: Namespace = "default",
    data_dir: DataDir = Path(".genqueue"),
) -> None:
    """The live tokens: id, user, role, created, webhook, a service token's users (never the
    tokens themselves)."""
    from serve_app.cli.ops import store_url

    async def read(url: str) -> dict[str, str]:
        store = RedisEventStore.from_url(url, namespace)
        try:
            found: dict[str, str] = await store.tokens()
            return found
        finally:
            await store.close()

    configure("WARNING")
    with store_url(redis_url, data_dir) as url:
        tokens = asyncio.run(read(url))
    table = Table("token id", "user", "role", "created", "webhook", "users")
    for token_id, raw in sorted(tokens.items()):
        about = json.loads(raw)
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(about["created_at"]))
        table.add_row(
            token_id,
            about["user_id"],
            about["role"],
            created + " UTC",
            about.get("webhook_url", ""),
            ", ".join(about.get("users", [])) or ("all" if about["role"] == SERVICE else ""),
        )
    # Piped or captured, the table keeps whole ids and URLs instead of rich's 80 columns.
    (console if console.is_terminal else Console(width=200)).print(table)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id, from `genqueue token list`.")],
    redis_url: RedisUrl = None,
    namespace: Namespace = "default",
    data_dir: DataDir = Path(".genqueue"),
) -> None:
    """Stop a token from working."""
    from serve_app.cli.ops import store_url

    async def revoke(url: str) -> bool:
        store = RedisEventStore.from_url(url, namespace)
        try:
            digest = await store.token_digest(token_id)
            if digest is None:
                return False
            await store.append([TokenRevoked(token_id=token_id, digest=digest, at=time.time())])
            return True
        finally:
            await store.close()

    configure("WARNING")
    with store_url(redis_url, data_dir) as url:
        if not asyncio.run(revoke(url)):
            err.print(f"[red]no live token {token_id}[/red]")
            raise typer.Exit(1)
    console.print(f"token {token_id} revoked")


@credits_app.command("grant")
def credits_grant(
    user: Annotated[str, typer.Argument(help="The user to credit.")],
    amount: Annotated[int, typer.Argument(help="Credits to add (>= 1).")],
    reason: Annotated[str, typer.Option(help="Kept in the ledger.")] = "",
    redis_url: RedisUrl = None,
    namespace: Namespace = "default",
    data_dir: DataDir = Path(".genqueue"),
) -> None:
    """Add credits to a user's balance."""
    from serve_app.cli.ops import store_url

    configure("WARNING")
    _check_user(user)
    if not 1 <= amount <= 1_000_000_000:
        err.print("[red]AMOUNT must be between 1 and 1,000,000,000[/red]")
        raise typer.Exit(2)
    event = CreditsGranted(user_id=user, amount=amount, reason=reason[:200], by="cli", at=time.time())

    async def grant(url: str) -> int:
        store = RedisEventStore.from_url(url, namespace)
        try:
            await store.append([event])
            totals, _ = await store.user(user, entries=0)
            return int(totals.get("balance", 0))
        finally:
            await store.close()

    with store_url(redis_url, data_dir, create=True) as url:
        balance = asyncio.run(grant(url))
    console.print(f"granted {amount} to {user}; balance {balance}")
