"""Storage without Ray: which errors are retried, how listing accounts for every name, and
that whole-object writes never leave a part behind."""
from __future__ import annotations

import os

import numpy as np
import pytest

from fer_ray import storage
from fer_ray.config import RetryConfig
from fer_ray.storage import StorageUnavailable

FAST = RetryConfig(storage_attempts=3, storage_backoff_s=0.01, storage_max_backoff_s=0.02)
OUTAGE = OSError("When reading information for key 'a' in bucket 'b': AWS Error NETWORK_CONNECTION during "
                 "HeadObject operation: curlCode: 7, Could not connect to server")


@pytest.mark.parametrize("error, transient", [
    (OUTAGE, True),
    (OSError("AWS Error SLOW_DOWN during PutObject operation: Please reduce your request rate."), True),
    (OSError("AWS Error UNKNOWN (HTTP status 503) during GetObject operation"), True),
    (ConnectionResetError("Connection reset by peer"), True),
    (FileNotFoundError("Path does not exist 'b/a'"), False),
    (PermissionError("denied"), False),
    (OSError("AWS Error ACCESS_DENIED during GetObject operation: Access Denied"), False),
    (ValueError("AWS Error NETWORK_CONNECTION"), False),  # not a storage error at all
])
def test_transient_errors_are_told_from_errors_about_the_object(error, transient):
    assert storage.is_transient(error) is transient


class Flaky:
    """A storage call that fails with `error` the first `failures` times."""

    def __init__(self, failures: int, error: Exception):
        self.failures, self.error, self.calls = failures, error, 0

    def __call__(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "done"


def test_transient_errors_are_retried_within_the_budget():
    call = Flaky(2, OUTAGE)
    assert storage.retrying("read x", call, FAST) == "done" and call.calls == 3


def test_an_outage_longer_than_the_budget_stops_the_run_naming_it():
    call = Flaky(5, OUTAGE)
    with pytest.raises(StorageUnavailable, match=r"read x: storage still unreachable after 3 attempts") as err:
        storage.retrying("read x", call, FAST)
    assert call.calls == 3 and not isinstance(err.value, OSError)  # never an input's read_error


def test_errors_about_the_object_are_not_retried():
    call = Flaky(1, FileNotFoundError("gone"))
    with pytest.raises(FileNotFoundError):
        storage.retrying("read x", call, FAST)
    assert call.calls == 1


def test_listing_names_every_entry_once_and_follows_no_directory_link(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "face.jpg").write_bytes(b"x")
    (tmp_path / "top.png").write_bytes(b"yy")
    (tmp_path / "a" / "loop").symlink_to(tmp_path)                 # a cycle if followed
    (tmp_path / "again").symlink_to(tmp_path / "a")                # the same files twice if followed
    (tmp_path / "linked.jpg").symlink_to(tmp_path / "top.png")     # a link to a file is read
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    os.mkfifo(tmp_path / "pipe.jpg")
    with open(os.path.join(os.fsencode(tmp_path), b"caf\xe9.jpg"), "wb") as f:
        f.write(b"z")
    entries = storage.list_tree(str(tmp_path))
    by_name = {os.path.relpath(e.uri, tmp_path): e for e in entries}
    assert len(entries) == len(by_name) == 8
    assert by_name["a/b/face.jpg"].problem == "" and by_name["top.png"].size == 2
    assert by_name["linked.jpg"].problem == "" and by_name["linked.jpg"].size == 2
    assert by_name["a/loop"].problem == by_name["again"].problem == "not_followed"
    assert by_name["gone.jpg"].problem == "dangling_link" and "nowhere.jpg" in by_name["gone.jpg"].error
    assert by_name["pipe.jpg"].problem == "not_a_file"
    assert by_name["caf\\xe9.jpg"].problem == "bad_name"  # shown with an escape, and text all the same
    assert [e.uri for e in entries] == sorted(e.uri for e in entries)


def test_the_fingerprint_changes_with_the_input(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    first = storage.fingerprint(storage.list_tree(str(tmp_path)))
    assert storage.fingerprint(storage.list_tree(str(tmp_path))) == first
    (tmp_path / "a.jpg").write_bytes(b"xy")
    assert storage.fingerprint(storage.list_tree(str(tmp_path))) != first


def test_write_bytes_replaces_whole_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "d" / "marker.json"
    storage.write_bytes(str(target), b"first")
    storage.write_bytes(str(target), b"second")
    assert target.read_bytes() == b"second" and os.listdir(tmp_path / "d") == ["marker.json"]


@pytest.mark.parametrize("a, b, overlap", [
    ("/data/in", "/data/in", True), ("/data/in", "/data/in/out", True), ("/data/in/x", "/data/in", True),
    ("/data/in", "/data/input", False), ("s3://b/in", "s3://b/in/out", True), ("s3://b/in", "s3://b/out", False),
])
def test_overlapping_uris(a, b, overlap):
    assert storage.overlaps(a, b) is overlap


def test_an_output_under_a_file_is_not_writable(tmp_path):
    (tmp_path / "f").write_bytes(b"")
    assert "is a file" in storage.check_writable(str(tmp_path / "f" / "out"))
    assert storage.check_writable(str(tmp_path / "new" / "out")) is None
    assert not (tmp_path / "new").exists()  # checking touches nothing


def test_upload_and_copy_write_whole_files_in_chunks(tmp_path):
    payload = np.random.default_rng(0).integers(0, 256, 3 * (1 << 20) + 17, dtype=np.uint8).tobytes()
    local = tmp_path / "big.bin"
    local.write_bytes(payload)
    storage.upload_file(str(local), str(tmp_path / "a" / "uploaded.bin"))
    storage.copy_file(str(tmp_path / "a" / "uploaded.bin"), str(tmp_path / "b" / "copied.bin"))
    assert (tmp_path / "b" / "copied.bin").read_bytes() == payload == (tmp_path / "a" / "uploaded.bin").read_bytes()
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]  # no temp file left beside them
    with pytest.raises(FileNotFoundError):
        storage.copy_file(str(tmp_path / "missing.bin"), str(tmp_path / "c.bin"))
    assert not (tmp_path / "c.bin").exists()
