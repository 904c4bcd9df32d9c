"""A client for genqueue's HTTP API: submit, watch, fetch the result, cancel; sync and async.

    from genqueue_client import Client

    with Client("https://genqueue.example", token) as client:
        task = client.submit("photography", {"person": "selfie.jpg"}, "warm film portrait")
        for update in task.watch():
            print(update.view.status, update.view.position)
        task.result("portrait.png")

`AsyncClient` has the same methods as coroutines and `watch` as an async iterator. Failures
are `GenqueueError`s carrying the problem genqueue answered (see `genqueue_client.errors`).
"""

from genqueue_client._wire import VERSION
from genqueue_client.aio import AsyncClient, AsyncTask
from genqueue_client.client import Client, Task
from genqueue_client.errors import (
    BadRequest,
    Conflict,
    ConnectionFailed,
    DeadlineUnreachable,
    Forbidden,
    GenqueueError,
    Gone,
    Invalid,
    NotFound,
    PaymentRequired,
    RateLimited,
    RequestTimeout,
    ServerError,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from genqueue_client.models import TERMINAL, Cancelled, Me, Submitted, TaskView, Update
from genqueue_client.retry import Retries

__version__ = VERSION

__all__ = [
    "TERMINAL",
    "AsyncClient",
    "AsyncTask",
    "BadRequest",
    "Cancelled",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "DeadlineUnreachable",
    "Forbidden",
    "GenqueueError",
    "Gone",
    "Invalid",
    "Me",
    "NotFound",
    "PaymentRequired",
    "RateLimited",
    "RequestTimeout",
    "Retries",
    "ServerError",
    "Submitted",
    "Task",
    "TaskView",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "Update",
]
