"""Blob storage for input images and results: files under one root, written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class BlobNotFoundError(LookupError):
    """No blob under that reference."""


class FileBlobStore:
    """Blobs as files under `root`; a reference is a relative path like `tasks/<id>/person`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def _path(self, ref: str) -> Path:
        # A syntactic check (no filesystem calls): refs are relative and never climb.
        if not ref or ref.startswith("/") or ".." in ref.split("/"):
            raise BlobNotFoundError(ref)
        return self.root / ref

    def put_many(self, blobs: dict[str, bytes]) -> None:
        """Store several blobs (one thread hop for a whole submit)."""
        for ref, data in blobs.items():
            self.put(ref, data)

    def delete_many(self, refs: list[str]) -> None:
        """Remove blobs (missing ones are fine)."""
        for ref in refs:
            self._path(ref).unlink(missing_ok=True)

    def put(self, ref: str, data: bytes) -> str:
        """Store `data` under `ref` (write to a temp file, then rename) and return `ref`."""
        path = self._path(ref)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return ref

    def get(self, ref: str) -> bytes:
        """The bytes stored under `ref`."""
        try:
            return self._path(ref).read_bytes()
        except FileNotFoundError as exc:
            raise BlobNotFoundError(ref) from exc


def task_blob(task_id: str, name: str) -> str:
    """The reference of one blob of a task."""
    return f"tasks/{task_id}/{name}"
