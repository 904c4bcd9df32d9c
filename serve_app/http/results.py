"""Result links: a signed, expiring URL of a task's image that works without a token (in an
`<img>`), the route that serves it, and the key that signs it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response

from actors.blobs import BlobNotFoundError
from actors.config import Config, ConfigError, Secret
from events.catalogue import SUCCEEDED
from events.public_view import iso
from serve_app.http.deps import Ctx, TaskId
from serve_app.http.models import TaskViewOut
from serve_app.http.problem_docs import responses
from serve_app.http.problems import Gone, LinkRefused, NotFound

KEY_FILE = "result-links.key"
PATH = "/v1/results/"
# The longest `sig` looked at: a link's is 43 characters; a longer one is refused unread.
SIG_CHARS = 128

router = APIRouter()


@dataclass(frozen=True, slots=True)
class Links:
    """Signs result links with `key` for `seconds`, and checks them.

    A link is `/v1/results/<task>?expires=<epoch s>&sig=<HMAC-SHA256 of task and expiry>`. Its
    expiry is rounded down to a quarter of `seconds`, so that a page reading the task again
    within that quarter gets the same link (and its browser the cached image): a link lasts
    between three quarters of `seconds` and all of it.
    """

    key: Secret
    seconds: int

    def signature(self, task_id: str, expires: int) -> str:
        """The link's signature: HMAC-SHA256 over the task id and the expiry, base64url."""
        mac = hmac.new(self.key.reveal().encode(), f"result:{task_id}:{expires}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()

    def link(self, task_id: str, now: float) -> tuple[str, int]:
        """(the link, its expiry in epoch seconds) for the result of `task_id`, made at `now`."""
        step = max(1, self.seconds // 4)
        expires = int((now + self.seconds) // step * step)
        return f"{PATH}{task_id}?expires={expires}&sig={self.signature(task_id, expires)}", expires

    def check(self, task_id: str, expires: int, sig: str, now: float) -> None:
        """Nothing if the link is this server's and unexpired at `now`; LinkRefused otherwise."""
        expected = self.signature(task_id, expires).encode()
        if not hmac.compare_digest(expected, sig.encode()):
            raise LinkRefused("this result link's signature does not match; read the task again for a link")
        if expires <= now:
            raise LinkRefused(
                f"this result link expired {now - expires:.0f} s ago; read the task again for a fresh one"
            )

    def attach(self, task_id: str, view: dict[str, str], out: TaskViewOut, now: float) -> TaskViewOut:
        """The task view with its result link while the result is stored, with none otherwise."""
        url: str | None = None
        expires: int | None = None
        if out.status == SUCCEEDED and view.get("result") and not view.get("blobs_expired_at"):
            url, expires = self.link(task_id, now)
        times = {"result_url_expires_at": expires, "result_url_expires_at_iso": iso(expires)}
        return out.model_copy(update={"result_url": url, **times})


def link_key(config: Config) -> Secret:
    """`[storage] link_secret`, or the key kept in `<data_dir>/result-links.key`, made on first use
    (owner-only); every process with that data directory signs alike."""
    configured = config.storage.link_secret
    if configured.reveal():
        return configured
    folder = Path(config.server.data_dir)
    path = folder / KEY_FILE
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        draft = folder / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        try:
            os.link(draft, path)  # whole or not at all; the first process to get there wins
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    if path.stat().st_mode & 0o077:
        raise ConfigError(f"{path} may be read by others; chmod 600 it, or set [storage] link_secret")
    key = path.read_text().strip()
    if len(key) < 32:
        raise ConfigError(f"{path} holds too short a key; delete it to have a new one made")
    return Secret(key)


def links_of(config: Config) -> Links:
    """The replica's result links, from the configuration."""
    return Links(link_key(config), config.storage.link_seconds)


async def get_links(request: Request) -> Links:
    """The app's result links (a FastAPI dependency)."""
    links: Links = request.app.state.links
    return links


LinksDep = Annotated[Links, Depends(get_links)]


def etag(ref: str) -> str:
    """The result's entity tag: a result blob is written once, so its reference names its bytes."""
    return '"' + hashlib.sha256(ref.encode()).hexdigest()[:32] + '"'


@router.get(
    PATH + "{task_id}",
    tags=["tasks"],
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}, "description": "The image."},
        304: {"description": "The image the client holds (`If-None-Match`) is still current."},
        **responses(
            LinkRefused,
            Gone,
            why={403: "The link is altered or expired.", 410: "The result is past its retention."},
        ),
    },
)
async def result(
    task_id: TaskId,
    expires: Annotated[int, Query(ge=0, le=2**40, description="The link's expiry (epoch s).")],
    sig: Annotated[str, Query(min_length=1, max_length=SIG_CHARS, description="The link's signature.")],
    c: Ctx,
    links: LinksDep,
    if_none_match: Annotated[str | None, Header(max_length=1024)] = None,
) -> Response:
    """The generated image, from the `result_url` of `GET /v1/tasks/{id}`: no token needed, so an
    `<img src>` can show it. Cached privately until the link expires; `ETag` and `If-None-Match`
    spare a second download."""
    now = time.time()
    links.check(task_id, expires, sig, now)
    view = await c.store.task_view(task_id)
    if view is None or view.get("status") != SUCCEEDED or not view.get("result"):
        raise NotFound(f"no result for task {task_id}")
    if view.get("blobs_expired_at"):
        raise Gone(f"the result of task {task_id} is no longer stored")
    left = max(0, int(expires - now))
    headers = {"Cache-Control": f"private, max-age={left}", "ETag": etag(view["result"])}
    if if_none_match is not None and headers["ETag"] in {t.strip() for t in if_none_match.split(",")}:
        return Response(status_code=304, headers=headers)
    try:
        data = await c.blobs.read(view["result"])
    except BlobNotFoundError as exc:
        raise Gone(f"the result of task {task_id} is no longer stored") from exc
    return Response(data, media_type=view.get("mime_type", "application/octet-stream"), headers=headers)
