"""The routes' shared dependencies: the replica's context, the caller and its role, the task it names."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi import Path as PathParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serve_app.http.auth import ADMIN, SCRAPE_ROLES, USER, Caller, TokenCache, authenticate, token_cache
from serve_app.http.context import Context
from serve_app.http.problems import NotFound, TooManyRequests
from serve_app.http.watch import Stream
from serve_app.http.watching import renderer

bearer = HTTPBearer(auto_error=False, description="A genqueue token, from `genqueue token create`.")
TaskId = Annotated[str, PathParam(pattern=r"^[0-9a-f]{32}$", description="A task id.")]

# When a token holding all the streams it may is told to try again: streams end with their tasks.
STREAMS_RETRY_SECONDS = 10


async def get_ctx(request: Request) -> Context:
    """The replica's context (a FastAPI dependency; async, so it runs without a thread hop)."""
    ctx: Context = request.app.state.ctx
    return ctx


Ctx = Annotated[Context, Depends(get_ctx)]


def tokens(ctx: Context) -> TokenCache:
    """The replica's token cache, forgetting a token as soon as the replica's stream tailer sees
    it revoked (hooked up on first use)."""
    cache = token_cache(ctx.store)
    if not cache.hooked:
        ctx.hub.on_revoked(cache.revoke)
        cache.hooked = True
    return cache


def authorization(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str | None:
    """The Authorization header to authenticate: the bearer credentials, or what else was sent."""
    if credentials is not None:
        return f"Bearer {credentials.credentials}"
    return request.headers.get("authorization") or None  # not a bearer scheme: say so


async def get_caller(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
) -> Caller:
    """The authenticated caller, or a 401; a 403 for a metrics token."""
    admitted = request.scope.get("state", {}).get("caller")
    if isinstance(admitted, Caller):  # a submit, authenticated from its headers by the gate
        return admitted
    ctx: Context = request.app.state.ctx
    header = authorization(request, credentials)
    return await authenticate(ctx.store, header, ctx.config.auth.required, cache=tokens(ctx))


CallerDep = Annotated[Caller, Depends(get_caller)]


async def admin(caller: CallerDep) -> Caller:
    """The caller, if it is an admin; a 403 otherwise."""
    caller.require(ADMIN)
    return caller


AdminDep = Annotated[Caller, Depends(admin)]


async def scraper(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
) -> Caller:
    """The caller of `GET /metrics`: a metrics or admin token; a 401 or 403 otherwise."""
    ctx: Context = request.app.state.ctx
    header = authorization(request, credentials)
    return await authenticate(ctx.store, header, ctx.config.auth.required, SCRAPE_ROLES, tokens(ctx))


ScraperDep = Annotated[Caller, Depends(scraper)]


async def existing_task(task_id: TaskId, request: Request, caller: CallerDep) -> dict[str, str]:
    """The task view, or a 404 before any response starts (a dependency, so streams can use
    it). Another user's task is a 404 too, never a 403: a user cannot learn it exists."""
    ctx: Context = request.app.state.ctx
    view = await ctx.store.task_view(task_id)
    if view is None or not caller.may_see(view.get("user_id", "")):
        raise NotFound(f"no task {task_id}")
    return view


TaskView = Annotated[dict[str, str], Depends(existing_task)]


async def open_stream(
    task_id: TaskId, request: Request, caller: CallerDep, _exists: TaskView
) -> AsyncIterator[Stream]:
    """The hub's stream of the task for the caller's token, held until the response ends; a 429
    before the response starts when the token holds all the streams it may on this replica."""
    ctx: Context = request.app.state.ctx
    lim = ctx.config.limits
    most = lim.max_streams_per_token if caller.role == USER else lim.max_streams_per_service_token
    if most > 0 and ctx.hub.streams_of(caller.token_id) >= most:
        raise TooManyRequests(
            f"this token has {most} task streams open, the most it may; "
            f"close one or try again in {STREAMS_RETRY_SECONDS} s",
            STREAMS_RETRY_SECONDS,
            streams=most,
        )
    # No await between the count and the registration: concurrent requests cannot both pass.
    with ctx.hub.watch(task_id, caller.token_id, renderer(ctx, request.app.state.links)) as stream:
        yield stream


WatchedStream = Annotated[Stream, Depends(open_stream)]
