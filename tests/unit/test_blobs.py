"""The fsspec blob store on a local directory and in memory, and the retention rule."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from actors.blobs import BlobNotFoundError, BlobStore, blob_url, task_blob
from actors.config import Config, StorageConfig
from actors.janitor.actor import due


@pytest.fixture(params=["file", "memory"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    """A fresh blob store of each kind."""
    if request.param == "file":
        return BlobStore(f"file://{tmp_path}/blobs")
    return BlobStore(f"memory://genqueue-test-{uuid.uuid4().hex[:8]}")


def test_put_get_and_delete_round_trip(blobs: BlobStore) -> None:
    """A blob reads back as written, replaces an older one, and is gone after delete."""
    ref = task_blob("t1", "person.png")
    assert blobs.put(ref, b"one") == ref
    blobs.put(ref, b"two")
    assert blobs.get(ref) == b"two"
    blobs.delete_many([ref, task_blob("t1", "missing.png")])
    with pytest.raises(BlobNotFoundError):
        blobs.get(ref)


@pytest.mark.parametrize("ref", ["", "/etc/passwd", "tasks/../../x", "../x"])
def test_refs_never_leave_the_root(blobs: BlobStore, ref: str) -> None:
    """Absolute or climbing references are not found, whatever lies there."""
    with pytest.raises(BlobNotFoundError):
        blobs.get(ref)


def test_tasks_are_listed_and_deleted_whole(blobs: BlobStore) -> None:
    """A task's blobs are listed by id and removed together; other tasks keep theirs."""
    assert blobs.task_ids() == []
    blobs.put_many({task_blob("a", "person.png"): b"p", task_blob("a", "result.png"): b"r"})
    blobs.put(task_blob("b", "person.png"), b"q")
    assert blobs.task_ids() == ["a", "b"]
    assert blobs.task_refs("a") == [task_blob("a", "person.png"), task_blob("a", "result.png")]
    blobs.delete_task("a")
    assert blobs.task_ids() == ["b"] and blobs.task_refs("a") == []
    assert blobs.get(task_blob("b", "person.png")) == b"q"


def test_the_default_url_is_the_data_dir(tmp_path: Path) -> None:
    """No [storage] url means file://<data_dir>/blobs; a configured URL is used as given."""
    config = Config()
    local = Config(server=type(config.server)(data_dir=str(tmp_path)))
    assert blob_url(local) == f"file://{tmp_path.resolve()}/blobs"
    remote = Config(storage=StorageConfig(url="s3://bucket/genqueue"))
    assert blob_url(remote) == "s3://bucket/genqueue"


def test_only_ended_tasks_past_their_retention_are_due() -> None:
    """Waiting, running and fresh tasks keep their blobs; announced ones are only deleted again."""
    views = {
        "old": {"status": "succeeded", "finished_at": "100"},
        "fresh": {"status": "failed", "finished_at": "150"},
        "running": {"status": "running"},
        "orphan": {},
        "done": {"status": "cancelled", "finished_at": "10", "blobs_expired_at": "70"},
    }
    assert due(views, now=161.0, retention=60.0) == (["old"], ["done"])
    assert due(views, now=210.0, retention=60.0) == (["fresh", "old"], ["done"])
