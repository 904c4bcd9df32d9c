"""A photo app's backend, written as an app that uses genqueue would write it: a demo, not
production code (its sessions are a signed user name, with no password).

It holds one genqueue *service* token (scoped to the users `photoapp:*`) and submits for its
own users; genqueue tells it when a task ends with a completion webhook signed as Standard
Webhooks do, which it verifies with the `standardwebhooks` library and records once per
`webhook-id`. Its page follows a task with genqueue's TypeScript client, pointed at this
backend: the backend relays genqueue's task and watch routes for a user's own tasks, so the
service token never reaches a browser and no user can read another's task.

    POST /api/login                  {"user": "alice"} -> {"user", "token"} (a demo session)
    POST /api/generate               a photo upload (multipart: photo, style) -> genqueue's 202
    GET  /api/tasks/{id}             the task as genqueue shows it, and the webhook as recorded
    GET  /genqueue/v1/tasks/{id}     genqueue's task view, for the TypeScript client
    GET  /genqueue/v1/tasks/{id}/watch   genqueue's Server-Sent Events, relayed as they come
    POST /webhooks/genqueue          genqueue's signed completion webhook
    GET  /                           the page (static/index.html, static/app.js)

Run it with `uvicorn --app-dir examples/photo-app backend:create_app --factory --port 8080`;
the settings come from PHOTO_APP_* environment variables (see `Settings.from_env`).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urljoin, urlsplit

import httpx
from app_store import Sessions, Store
from fastapi import FastAPI, File, Form, Header, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.exceptions import HTTPException as StarletteHTTPException

HERE = Path(__file__).resolve().parent
PROBLEM = "application/problem+json"
MAX_UPLOAD = 10 * 1024 * 1024  # genqueue's own cap on a decoded image
MAX_WEBHOOK = 1024 * 1024
STYLES = {
    "film": "a warm film portrait, soft window light",
    "studio": "a clean studio headshot on a grey backdrop",
    "watercolour": "a loose watercolour portrait",
}
# What genqueue may refuse a user's submit for, passed on to the page as it is; any other
# refusal (a 401 or 403: the app's own token) is the app's fault, a 502 to the page.
PASSED_ON = {402, 409, 413, 422, 429, 503}
TaskId = Annotated[str, PathParam(pattern=r"^[0-9a-f]{32}$")]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", pattern=r"^[A-Za-z0-9._:-]{1,100}$")]


@dataclass(frozen=True)
class Settings:
    """The app's credentials for genqueue, where genqueue is, and the app's own settings."""

    genqueue_token: str  # a service token (genqueue token create --role service --users 'photoapp:*')
    webhook_secret: str  # its whsec_ signing secret (printed with it, or genqueue token secret ID)
    genqueue_url: str = "http://127.0.0.1:8000"  # where this backend reaches genqueue
    genqueue_public_url: str = ""  # where browsers reach genqueue's result links ("": genqueue_url)
    public_url: str = "http://127.0.0.1:8080"  # where genqueue reaches this backend's webhook
    session_secret: str = field(default_factory=lambda: secrets.token_hex(32))
    users: tuple[str, ...] = ("alice", "bob")  # the demo's users, who log in by name alone
    user_prefix: str = "photoapp:"  # a user's id at genqueue is this prefix and its name
    db_path: str = str(Path(tempfile.gettempdir()) / "photo-app.sqlite3")
    client_dir: Path = HERE.parent.parent / "clients" / "typescript" / "dist"

    @classmethod
    def from_env(cls) -> Settings:
        """The settings from PHOTO_APP_* variables (not GENQUEUE_*: genqueue refuses unknown ones)."""
        env = os.environ
        missing = [v for v in ("PHOTO_APP_GENQUEUE_TOKEN", "PHOTO_APP_WEBHOOK_SECRET") if not env.get(v)]
        if missing:
            raise SystemExit(f"set {' and '.join(missing)} (see examples/photo-app/README.md)")
        users = tuple(u.strip() for u in env.get("PHOTO_APP_USERS", "").split(",") if u.strip())
        return cls(
            genqueue_token=env["PHOTO_APP_GENQUEUE_TOKEN"],
            webhook_secret=env["PHOTO_APP_WEBHOOK_SECRET"],
            genqueue_url=env.get("PHOTO_APP_GENQUEUE_URL") or cls.genqueue_url,
            genqueue_public_url=env.get("PHOTO_APP_GENQUEUE_PUBLIC_URL", ""),
            public_url=env.get("PHOTO_APP_PUBLIC_URL") or cls.public_url,
            session_secret=env.get("PHOTO_APP_SESSION_SECRET") or secrets.token_hex(32),
            users=users or cls.users,
            db_path=env.get("PHOTO_APP_DB") or cls.db_path,
            client_dir=Path(env.get("PHOTO_APP_CLIENT_DIR") or cls.client_dir),
        )


class Problem(Exception):
    """An RFC 9457 problem answered to the page."""

    def __init__(self, status: int, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.detail, self.extra = status, detail, extra

    def response(self) -> JSONResponse:
        """The problem as its response."""
        body = {"type": "about:blank", "title": HTTPStatus(self.status).phrase, "status": self.status}
        return JSONResponse(
            {**body, "detail": self.detail, **self.extra}, status_code=self.status, media_type=PROBLEM
        )


class Login(BaseModel):
    """A demo login: the user's name."""

    user: str


def retry_after(response: httpx.Response) -> float | None:
    """An answer's Retry-After in seconds, when it has one in seconds."""
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


def passed_on(response: httpx.Response, genqueue_base: str) -> Response:
    """genqueue's refusal of a user's request as the page gets it: the problem as it is (its
    `type` made absolute) when it is about the user's request, a 502 when it is about the app's."""
    if response.status_code not in PASSED_ON:
        raise Problem(502, f"genqueue refused the app's request ({response.status_code}); see the app's logs")
    try:
        body: dict[str, Any] = response.json()
        body["type"] = urljoin(genqueue_base, str(body.get("type", "about:blank")))
    except ValueError:
        body = {"title": HTTPStatus(response.status_code).phrase, "status": response.status_code}
    headers = {"Retry-After": response.headers["Retry-After"]} if "Retry-After" in response.headers else {}
    return JSONResponse(body, response.status_code, headers, media_type=PROBLEM)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The backend for `settings` (from the environment when left out)."""
    s = settings or Settings.from_env()
    if not (s.client_dir / "genqueue-client.js").exists():
        raise SystemExit(f"no genqueue-client.js in {s.client_dir}: set PHOTO_APP_CLIENT_DIR")
    store, sessions = Store(s.db_path), Sessions(s.session_secret, s.users)
    verifier = Webhook(s.webhook_secret)
    genqueue_base = (s.genqueue_public_url or s.genqueue_url).rstrip("/") + "/"
    webhook_url = s.public_url.rstrip("/") + "/webhooks/genqueue"
    auth = {"Authorization": f"Bearer {s.genqueue_token}"}
    genqueue = httpx.AsyncClient(base_url=s.genqueue_url, headers=auth, timeout=30.0)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await genqueue.aclose()
        store.close()

    app = FastAPI(title="photo-app (a genqueue example)", lifespan=lifespan)
    app.state.store = store  # read by the example's test

    @app.exception_handler(Problem)
    async def problem(_: Request, exc: Problem) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": ".".join(map(str, e["loc"][1:])), "message": e["msg"]} for e in exc.errors()]
        return Problem(422, "the request is not what this route takes", errors=errors).response()

    @app.exception_handler(httpx.TransportError)
    async def no_answer(_: Request, exc: httpx.TransportError) -> JSONResponse:
        return Problem(502, f"genqueue did not answer ({type(exc).__name__})").response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return Problem(exc.status_code, str(exc.detail)).response()

    def session_user(authorization: str | None) -> str:
        """The session's user, or a 401."""
        user = sessions.user(authorization)
        if user is None:
            raise Problem(401, "log in first (POST /api/login), then send Authorization: Bearer <token>")
        return user

    def own(task_id: str, authorization: str | None) -> None:
        """A 401 without a session, a 404 unless its user submitted `task_id` here: another
        user's task is not found."""
        if store.owner(task_id) != session_user(authorization):
            raise Problem(404, f"no task {task_id}")

    async def view_of(task_id: str) -> dict[str, Any]:
        """genqueue's view of the task, its result link made absolute for an `<img>`."""
        answer = await genqueue.get(f"/v1/tasks/{task_id}")
        if answer.status_code != 200:
            raise Problem(502, f"genqueue answered {answer.status_code} for task {task_id}")
        view: dict[str, Any] = answer.json()
        if isinstance(view.get("result_url"), str):
            view["result_url"] = urljoin(genqueue_base, view["result_url"])
        return view

    async def submit(fields: dict[str, str], photo: tuple[str, bytes, str], key: str) -> httpx.Response:
        """POST the upload to genqueue, tried again on no answer or a 502/503/504: the same
        idempotency key on every try, so a submit that did arrive is not charged twice."""
        attempt = 0
        while True:
            try:
                answer = await genqueue.post(
                    "/v1/tasks", data=fields, files={"person": photo}, headers={"Idempotency-Key": key}
                )
            except httpx.TransportError:
                if attempt == 2:
                    raise
                wait = 0.5 * 2**attempt
            else:
                if answer.status_code not in (502, 503, 504) or attempt == 2:
                    return answer
                wait = min(retry_after(answer) or 0.5 * 2**attempt, 5.0)
            attempt += 1
            await asyncio.sleep(wait)

    @app.get("/api/users")
    async def demo_users() -> dict[str, list[str]]:
        return {"users": list(s.users)}

    @app.post("/api/login")
    async def login(body: Login) -> dict[str, str]:
        token = sessions.token(body.user)
        if token is None:
            raise Problem(404, f"no demo user {body.user!r}; try one of {', '.join(s.users)}")
        return {"user": body.user, "token": token}

    @app.post("/api/generate", status_code=202)
    async def generate(
        photo: Annotated[UploadFile, File()],
        style: Annotated[str, Form()] = "film",
        authorization: Annotated[str | None, Header()] = None,
        idempotency_key: IdempotencyKey = None,
    ) -> Response:
        user = session_user(authorization)
        if style not in STYLES:
            raise Problem(422, f"no style {style!r}", errors=[{"field": "style", "message": "unknown style"}])
        data = await photo.read(MAX_UPLOAD + 1)
        if len(data) > MAX_UPLOAD:
            raise Problem(413, f"the photo is over {MAX_UPLOAD // 2**20} MB")
        fields = {
            "kind": "photography",
            "prompt": STYLES[style],
            "user_id": s.user_prefix + user,
            "webhook_url": webhook_url,
        }
        upload = (photo.filename or "photo", data, photo.content_type or "application/octet-stream")
        answer = await submit(fields, upload, idempotency_key or uuid.uuid4().hex)
        if answer.status_code != 202:
            return passed_on(answer, genqueue_base)
        submitted: dict[str, Any] = answer.json()
        store.add_task(submitted["task_id"], user)
        submitted["replayed"] = answer.headers.get("Idempotent-Replayed") == "true"
        return JSONResponse(submitted, status_code=202)

    @app.get("/api/tasks/{task_id}")
    async def task(task_id: TaskId, authorization: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        own(task_id, authorization)
        return {"task": await view_of(task_id), "webhook": store.webhook_of(task_id)}

    @app.get("/genqueue/v1/tasks/{task_id}")
    async def relayed_task(
        task_id: TaskId, authorization: Annotated[str | None, Header()] = None
    ) -> dict[str, Any]:
        own(task_id, authorization)
        return await view_of(task_id)

    @app.get("/genqueue/v1/tasks/{task_id}/watch")
    async def relayed_watch(
        task_id: TaskId,
        authorization: Annotated[str | None, Header()] = None,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=64)] = None,
    ) -> Response:
        own(task_id, authorization)
        headers = {
            "Accept": "text/event-stream",
            **({"Last-Event-ID": last_event_id} if last_event_id else {}),
        }
        timeout = httpx.Timeout(30.0, read=None)  # genqueue writes a comment every 15 s
        request = genqueue.build_request(
            "GET", f"/v1/tasks/{task_id}/watch", headers=headers, timeout=timeout
        )
        upstream = await genqueue.send(request, stream=True)
        if upstream.status_code != 200:
            await upstream.aread()
            await upstream.aclose()
            return passed_on(upstream, genqueue_base)

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            finally:
                await upstream.aclose()

        no_buffering = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(relay(), media_type="text/event-stream", headers=no_buffering)

    @app.post("/webhooks/genqueue")
    async def completion_webhook(request: Request) -> dict[str, Any]:
        if int(request.headers.get("content-length") or 0) > MAX_WEBHOOK:
            raise Problem(413, "a webhook body is at most 1 MiB")
        body = await request.body()
        try:
            view = verifier.verify(body, dict(request.headers))
        except WebhookVerificationError as exc:
            raise Problem(401, f"the webhook's signature does not verify: {exc}") from exc
        except ValueError as exc:  # signed, but not JSON: not genqueue's
            raise Problem(400, "the webhook's body is not JSON") from exc
        if not isinstance(view, dict) or not isinstance(view.get("task_id"), str):
            raise Problem(400, "the webhook's body is not a task view")
        fresh = store.record_webhook(request.headers["webhook-id"], view)
        return {"received": True, "duplicate": not fresh}

    page_policy = (
        "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        f"img-src 'self' {origin(genqueue_base)}; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    )

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(HERE / "static" / "index.html", headers={"Content-Security-Policy": page_policy})

    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.mount("/vendor/genqueue-client", StaticFiles(directory=s.client_dir), name="genqueue-client")
    return app


def origin(url: str) -> str:
    """The scheme, host and port of `url`."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
