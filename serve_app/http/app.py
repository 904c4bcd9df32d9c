"""The FastAPI application: middleware, problem handlers, pages and the routers, composed once."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator

from fastapi import FastAPI
from PIL import Image

from actors.config import Config, lane_weights
from serve_app.http import admin_tasks, batch, credits, ops, pages, problems, results, task_list, tasks
from serve_app.http.admission import admit
from serve_app.http.bodylimit import BodyLimit
from serve_app.http.context import Canceller, Context, Readiness
from serve_app.http.gate import BATCH_PATH, SubmitGate


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Warm the replica's clients before it takes requests."""
    ctx: Context = app.state.ctx
    await ctx.warm()
    yield


def create_app(
    config: Config, readiness: Readiness | None = None, canceller: Canceller | None = None
) -> FastAPI:
    """The FastAPI application for one genqueue namespace."""
    ctx = Context(config, readiness, canceller)
    app = FastAPI(
        title="genqueue",
        version="1",
        summary="A queue for AI image generation that absorbs bursts and never overruns upstream quotas.",
        lifespan=lifespan,
        # /docs is served from local files by `pages.install`; ReDoc would need a CDN.
        docs_url=None,
        redoc_url=None,
        # Starlette builds a trailing-slash redirect from the Host header, which a client
        # chooses: no redirect at all, a path is found as written or is a 404.
        redirect_slashes=False,
    )
    problems.install(app)
    lim = config.limits
    app.add_middleware(BodyLimit, max_bytes=lim.max_body_bytes, paths={BATCH_PATH: lim.max_batch_body_bytes})
    # Before the body limit and the app: a submit is admitted from its headers before a byte
    # of its body is read.
    app.add_middleware(
        SubmitGate,
        limit=config.server.submit_concurrency,
        admit=functools.partial(admit, ctx),
        read_seconds=config.limits.body_read_seconds,
        max_body_bytes=lim.max_body_bytes,
        batch_body_bytes=lim.max_batch_body_bytes,
        lanes=lane_weights(config),
    )
    # Pillow's own decompression-bomb limit, for anything in this process that opens images.
    Image.MAX_IMAGE_PIXELS = config.limits.max_image_pixels
    app.state.ctx = ctx
    app.state.links = results.links_of(config)
    pages.install(app)
    for router in (
        tasks.router,
        task_list.router,
        batch.router,
        credits.router,
        ops.router,
        admin_tasks.router,
        results.router,
    ):
        app.include_router(router)
    return app
