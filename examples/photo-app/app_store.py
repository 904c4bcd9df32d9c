"""The photo app's own records (a demo): its users' sessions, whose each task is, and the
completion webhooks it received, in SQLite."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sqlite3
import threading
import time
from typing import Any


class Store:
    """The app's own records in SQLite: whose each task is, and the completion webhooks received,
    one row per webhook id, so that a repeat is recognised (whichever comes first: a fast task's
    webhook may arrive before its submit's answer was recorded)."""

    SCHEMA = """
        CREATE TABLE IF NOT EXISTS tasks (
            task_id TEXT PRIMARY KEY, user TEXT NOT NULL, submitted_at REAL NOT NULL);
        CREATE TABLE IF NOT EXISTS webhooks (
            webhook_id TEXT PRIMARY KEY, task_id TEXT NOT NULL, received_at REAL NOT NULL,
            status TEXT NOT NULL, view TEXT NOT NULL);
        CREATE INDEX IF NOT EXISTS webhooks_by_task ON webhooks (task_id);
    """

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock, self._db:
            self._db.executescript(self.SCHEMA)

    def add_task(self, task_id: str, user: str) -> None:
        """Record that `user` submitted `task_id` (again, for an idempotent repeat: no change)."""
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR IGNORE INTO tasks (task_id, user, submitted_at) VALUES (?, ?, ?)",
                (task_id, user, time.time()),
            )

    def owner(self, task_id: str) -> str | None:
        """The user who submitted `task_id`, or None for a task this app does not know."""
        with self._lock:
            row = self._db.execute("SELECT user FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return None if row is None else str(row[0])

    def record_webhook(self, webhook_id: str, view: dict[str, Any]) -> bool:
        """Record a verified completion webhook (the task view it carries); False when its id
        was recorded before."""
        row = (webhook_id, str(view.get("task_id")), time.time(), str(view.get("status")), json.dumps(view))
        with self._lock, self._db:
            added = self._db.execute("INSERT OR IGNORE INTO webhooks VALUES (?, ?, ?, ?, ?)", row).rowcount
        return bool(added)

    def webhook_of(self, task_id: str) -> dict[str, Any] | None:
        """The completion webhook recorded for `task_id`: its id, when, and the status it said."""
        with self._lock:
            row = self._db.execute(
                "SELECT webhook_id, received_at, status FROM webhooks WHERE task_id = ? "
                "ORDER BY received_at LIMIT 1",
                (task_id,),
            ).fetchone()
        return None if row is None else {"webhook_id": row[0], "received_at": row[1], "status": row[2]}

    def webhooks_received(self, task_id: str) -> int:
        """How many distinct webhooks were recorded for `task_id`."""
        with self._lock:
            found = self._db.execute("SELECT count(*) FROM webhooks WHERE task_id = ?", (task_id,))
            return int(found.fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


class Sessions:
    """Demo sessions: a bearer token `<user>.<HMAC of the user>` for each configured user."""

    def __init__(self, secret: str, users: tuple[str, ...]) -> None:
        self._key, self.users = secret.encode(), users

    def _mac(self, user: str) -> str:
        digest = hmac.new(self._key, f"session:{user}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def token(self, user: str) -> str | None:
        """A session token for `user`; None for a user the demo does not have."""
        return f"{user}.{self._mac(user)}" if user in self.users else None

    def user(self, authorization: str | None) -> str | None:
        """The user of an `Authorization: Bearer <session token>` header; None for no session."""
        scheme, _, token = (authorization or "").partition(" ")
        user, _, mac = token.strip().rpartition(".")
        if scheme.lower() != "bearer" or user not in self.users:
            return None
        return user if hmac.compare_digest(mac, self._mac(user)) else None
