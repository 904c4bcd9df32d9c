"""Blob storage for input images and results: one fsspec filesystem, addressed by a URL."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from actors.config import Config
from events.errors import GenqueueError


class BlobNotFoundError(GenqueueError, LookupError):
    """No blob under that reference."""


class BlobStore:
    """Blobs under an fsspec URL (`file:///srv/blobs`, `s3://bucket/prefix`, `memory://t`).

    A reference is a relative path like `tasks/<id>/person.png`. Every process that opens
    the same URL sees the same blobs only if the filesystem itself is shared: `file://`
    across machines needs a shared mount, and `memory://` is one process's memory.
    """

    def __init__(self, url: str, **options: Any) -> None:
        self.url = url
        self._fs, root = fsspec.core.url_to_fs(url, **options)
        self._root = str(root).rstrip("/")
        self._local = isinstance(self._fs, LocalFileSystem)

    @property
    def inline_writes(self) -> bool:
        """Whether `put`, `put_many` and `get` are cheap enough to call on an event loop: true
        for a local directory (a file written to or read from the page cache; a directory made
        only when a task has none), false for object stores, which are network calls. `write`
        and `read` choose for the caller."""
        return self._local

    def _path(self, ref: str) -> str:
        # A syntactic check (no filesystem calls): refs are relative and never climb.
        if not ref or ref.startswith("/") or ".." in ref.split("/"):
            raise BlobNotFoundError(ref)
        return f"{self._root}/{ref}"

    def put(self, ref: str, data: bytes) -> str:
        """Store `data` under `ref` (replacing what was there) and return `ref`.

        Every reference names a new file (a task's inputs under its fresh id, each attempt's
        result apart), and readers learn of a blob only from an event appended after `put`
        returned, so no reader sees half a blob without writing through a temporary file.
        """
        path = self._path(ref)
        if not self._local:
            self._fs.pipe_file(path, data)  # object stores put a whole object at once
            return ref
        try:
            fh = open(path, "wb")  # noqa: SIM115 -- closed below; opened twice at most
        except FileNotFoundError:
            # The task's folder is made once, by its first blob: no mkdir for the others.
            os.makedirs(path.rpartition("/")[0], exist_ok=True)
            fh = open(path, "wb")  # noqa: SIM115
        with fh:
            fh.write(data)
        return ref

    def put_many(self, blobs: dict[str, bytes]) -> None:
        """Store several blobs (a submit's inputs)."""
        for ref, data in blobs.items():
            self.put(ref, data)

    async def write(self, blobs: dict[str, bytes]) -> None:
        """`put_many` from an event loop: inline where `inline_writes`, else in a thread."""
        if self._local:
            self.put_many(blobs)
        else:
            await asyncio.to_thread(self.put_many, blobs)

    def get(self, ref: str) -> bytes:
        """The bytes stored under `ref`."""
        path = self._path(ref)
        try:
            if self._local:
                with open(path, "rb") as fh:
                    return fh.read()
            data: bytes = self._fs.cat_file(path)
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise BlobNotFoundError(ref) from exc
        return data

    async def read(self, ref: str) -> bytes:
        """`get` from an event loop: inline where `inline_writes`, else in a thread."""
        return self.get(ref) if self._local else await asyncio.to_thread(self.get, ref)

    def delete_many(self, refs: list[str]) -> None:
        """Remove blobs (missing ones are fine)."""
        for ref in refs:
            with contextlib.suppress(FileNotFoundError):
                self._fs.rm_file(self._path(ref))

    def task_ids(self) -> list[str]:
        """The ids of the tasks that have blobs."""
        try:
            entries = self._fs.ls(self._path("tasks"), detail=False)
        except FileNotFoundError:
            return []
        return sorted(str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def task_refs(self, task_id: str) -> list[str]:
        """The references of one task's blobs."""
        base = self._path(task_blob(task_id, ""))
        try:
            found = self._fs.find(base)
        except FileNotFoundError:
            return []
        return sorted(task_blob(task_id, str(p).rsplit("/", 1)[-1]) for p in found)

    def written_at(self, task_id: str) -> float | None:
        """When the newest of a task's blobs was written (epoch seconds); None when it has none."""
        times = []
        for ref in self.task_refs(task_id):
            with contextlib.suppress(FileNotFoundError):
                times.append(self._fs.modified(self._path(ref)).timestamp())
        return max(times, default=None)

    def delete_task(self, task_id: str) -> None:
        """Remove every blob of a task, and its folder."""
        self.delete_many(self.task_refs(task_id))
        folder = self._path(task_blob(task_id, "")).rstrip("/")
        if self._fs.exists(folder):
            self._fs.rm(folder, recursive=True)


class FileBlobStore(BlobStore):
    """Blobs as files under a local directory."""

    def __init__(self, root: str | Path) -> None:
        super().__init__(f"file://{Path(root).resolve()}")
        self.root = Path(self._root)


def blob_url(config: Config) -> str:
    """The configured blob URL: `[storage] url`, or `file://<data_dir>/blobs`."""
    return config.storage.url or f"file://{Path(config.server.data_dir).resolve()}/blobs"


def blob_store(config: Config) -> BlobStore:
    """The blob store every process of this genqueue uses."""
    return BlobStore(blob_url(config))


def task_blob(task_id: str, name: str) -> str:
    """The reference of one blob of a task."""
    return f"tasks/{task_id}/{name}"
