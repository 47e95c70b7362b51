"""The ObjectStore contract, run against every backend.

`local` is the directory backend (always). `s3` is the S3 backend against a real S3 server: a
throwaway single-node Ceph radosgw (deploy/s3/radosgw.py), started once per session by the
`s3_server` fixture. Those tests carry the `s3` marker; they are skipped, with the reason, only
where Ceph cannot be installed or started (and fail instead when MLSTUDIO_REQUIRE_S3=1).
"""
from __future__ import annotations

import hashlib
import io
import os
import random
import threading
import tracemalloc
import uuid

import pytest

from mlstudio.common import errors
from mlstudio.common.settings import ServiceSettings, load
from mlstudio.common.storage import LocalObjectStore, ObjectStore, S3ObjectStore, open_store

MiB = 1024 * 1024


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def backend(request, tmp_path):
    """(store, ns): a store of each kind and a key prefix of this test's own."""
    if request.param == "local":
        store = open_store(f"file://{tmp_path / 'objects'}")
        assert isinstance(store, LocalObjectStore)
    else:
        server = request.getfixturevalue("s3_server")
        store = open_store(load(ServiceSettings, {"MONGO_URI": "m", "STORAGE_URL": server.url}).object_storage_url)
        assert isinstance(store, S3ObjectStore)
    # the S3 bucket is shared by the whole session: every test writes under its own prefix
    return store, f"t-{uuid.uuid4().hex[:12]}/"


class GeneratedStream(io.RawIOBase):
    """`size` pseudo-random bytes produced on demand (never all in memory), hashed as they go."""

    def __init__(self, size: int, seed: int = 7, max_read: int | None = None):
        self.left = size
        self.rng = random.Random(seed)
        self.sha256 = hashlib.sha256()
        self.max_read = max_read

    def readable(self):
        return True

    def read(self, n=-1):
        if n is None or n < 0:
            n = self.left
        n = min(n, self.left, self.max_read or n)
        data = self.rng.randbytes(n)
        self.left -= n
        self.sha256.update(data)
        return data

    def readinto(self, buffer):
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def data_of(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


# --- put, get, stat ------------------------------------------------------------------------------


def test_put_bytes_then_get_and_stat(backend):
    store, ns = backend
    data = data_of(1000)
    info = store.put_bytes(ns + "images/1.jpg", data, "image/jpeg")
    assert (info.key, info.size) == (ns + "images/1.jpg", 1000)
    assert info.etag
    assert store.get_bytes(ns + "images/1.jpg") == data
    stat = store.stat(ns + "images/1.jpg")
    assert (stat.key, stat.size) == (ns + "images/1.jpg", 1000)
    assert stat.etag


def test_put_stream_then_read(backend, tmp_path):
    store, ns = backend
    data = data_of(3 * MiB + 5)
    info = store.put_stream(ns + "videos/1.mp4", io.BytesIO(data), "video/mp4")
    assert info.size == len(data) == store.stat(ns + "videos/1.mp4").size
    assert b"".join(store.read_range(ns + "videos/1.mp4")) == data
    store.download_to(ns + "videos/1.mp4", tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == data


def test_put_file_stores_the_file_and_local_path_reads_it(backend, tmp_path):
    store, ns = backend
    data = data_of(2 * MiB + 3)
    spooled = tmp_path / "spool" / "upload-1"
    spooled.parent.mkdir()
    spooled.write_bytes(data)
    info = store.put_file(ns + "videos/2.mp4", spooled, "video/mp4")
    assert info.size == len(data) == store.stat(ns + "videos/2.mp4").size
    assert store.get_bytes(ns + "videos/2.mp4") == data
    downloads = tmp_path / "downloads"
    with store.local_path(ns + "videos/2.mp4", downloads) as path:
        assert path.read_bytes() == data
    assert not downloads.exists() or not list(downloads.iterdir())  # a download, where there is one, is removed after
    with pytest.raises(errors.NotFound):
        with store.local_path(ns + "videos/missing.mp4", downloads):
            pass


def test_the_local_store_takes_a_file_by_rename(tmp_path):
    """No copy: the spooled file becomes the object (same inode) and no spool file is left."""
    store = LocalObjectStore(tmp_path / "objects")
    spooled = tmp_path / "spool"
    spooled.write_bytes(b"video bytes")
    inode = spooled.stat().st_ino
    store.put_file("videos/1.mp4", spooled)
    assert not spooled.exists()
    assert (tmp_path / "objects" / "videos" / "1.mp4").stat().st_ino == inode
    assert store.get_bytes("videos/1.mp4") == b"video bytes"
    assert sorted(p.name for p in (tmp_path / "objects" / "videos").iterdir()) == ["1.mp4"]  # no temporary file
    with store.local_path("videos/1.mp4", tmp_path / "downloads") as path:
        assert path.stat().st_ino == inode  # read where it lies
    assert not (tmp_path / "downloads").exists()


def test_a_failed_put_file_stores_nothing_and_leaves_nothing_behind(tmp_path, monkeypatch):
    store = LocalObjectStore(tmp_path / "objects")
    store.put_bytes("videos/1.mp4", b"the old object")
    spooled = tmp_path / "spool"
    spooled.write_bytes(b"new bytes")
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith("1.mp4"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(errors.Unavailable):
        store.put_file("videos/1.mp4", spooled)
    monkeypatch.undo()
    assert store.get_bytes("videos/1.mp4") == b"the old object"
    assert sorted(p.name for p in (tmp_path / "objects" / "videos").iterdir()) == ["1.mp4"]
    with pytest.raises(errors.Unavailable):
        store.put_file("videos/2.mp4", tmp_path / "never-spooled")
    assert sorted(p.name for p in (tmp_path / "objects" / "videos").iterdir()) == ["1.mp4"]


def test_put_file_copies_across_filesystems(tmp_path, monkeypatch):
    store = LocalObjectStore(tmp_path / "objects")
    spooled = tmp_path / "spool"
    spooled.write_bytes(b"elsewhere")
    real_replace = os.replace

    def cross_device(src, dst):
        if str(src) == str(spooled):
            raise OSError(18, "Invalid cross-device link")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", cross_device)
    store.put_file("videos/3.mp4", spooled)
    monkeypatch.undo()
    assert store.get_bytes("videos/3.mp4") == b"elsewhere"
    assert sorted(p.name for p in (tmp_path / "objects" / "videos").iterdir()) == ["3.mp4"]


def test_empty_object(backend):
    store, ns = backend
    assert store.put_bytes(ns + "empty", b"").size == 0
    assert store.stat(ns + "empty").size == 0
    assert store.get_bytes(ns + "empty") == b""


def test_put_again_replaces_the_object(backend):
    store, ns = backend
    store.put_bytes(ns + "k", b"first version")
    store.put_bytes(ns + "k", b"second")
    assert store.get_bytes(ns + "k") == b"second"
    assert store.stat(ns + "k").size == 6
    assert store.list_keys(ns) == [ns + "k"]


SIZE = 2 * MiB + 123  # crosses the 1 MiB read chunks


@pytest.mark.parametrize(
    "start, length",
    [
        (0, 10),  # start
        (0, None),  # everything
        (0, SIZE),
        (MiB - 5, 10),  # middle, across a chunk boundary
        (MiB - 5, None),  # middle to the end
        (SIZE // 2, MiB + 7),
        (SIZE - 10, 10),  # end
        (SIZE - 10, None),
        (SIZE - 10, 100),  # runs past the end: truncated
        (SIZE - 1, 1),
        (SIZE, None),  # at the end: nothing
        (SIZE + 100, 5),  # past the end: nothing
        (5, 0),  # empty range
    ],
)
def test_read_range(backend, start, length):
    store, ns = backend
    data = data_of(SIZE, seed=3)
    store.put_bytes(ns + "blob", data)
    got = b"".join(store.read_range(ns + "blob", start, length))
    expected = data[start:] if length is None else data[start : start + length]
    assert len(got) == len(expected) and got == expected


def test_negative_range_is_invalid(backend):
    store, ns = backend
    store.put_bytes(ns + "blob", b"0123456789")
    with pytest.raises(errors.InvalidArgument):
        store.read_range(ns + "blob", -1)
    with pytest.raises(errors.InvalidArgument):
        store.read_range(ns + "blob", 0, -5)


def test_large_streamed_object_round_trips_with_flat_memory(backend):
    """40 MiB, generated on the fly (multipart on S3): byte-identical back, and neither the
    upload nor the download ever holds the object in memory."""
    store, ns = backend
    size = 40 * MiB
    source = GeneratedStream(size, max_read=256 * 1024)  # reads return short, like a socket

    tracemalloc.start()
    try:
        info = store.put_stream(ns + "models/big.bin", source)
        _, put_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        digest, received = hashlib.sha256(), 0
        for chunk in store.read_range(ns + "models/big.bin"):
            digest.update(chunk)
            received += len(chunk)
        _, get_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert source.left == 0
    assert info.size == size == store.stat(ns + "models/big.bin").size == received
    assert digest.hexdigest() == source.sha256.hexdigest()
    assert info.etag  # radosgw's multipart-complete answer has none: the store must not need it
    if isinstance(store, S3ObjectStore):
        assert info.etag.endswith(f"-{-(-size // store.PART)}"), f"not a multipart upload: ETag {info.etag}"
        # a bound that does not depend on the object's size: minio keeps up to 3 parts
        assert put_peak < 3 * store.PART + 4 * MiB, f"upload peaked at {put_peak / MiB:.1f} MiB"
    assert put_peak < size * 3 // 4, f"upload peaked at {put_peak / MiB:.1f} MiB for a {size // MiB} MiB object"
    assert get_peak < 8 * MiB, f"download peaked at {get_peak / MiB:.1f} MiB"


# --- listing and deleting ------------------------------------------------------------------------


def test_list_keys_by_prefix(backend):
    store, ns = backend
    for key in ("a/2", "a/1", "ab/3", "b/1", "a/deep/er/4"):
        store.put_bytes(ns + key, key.encode())
    assert store.list_keys(ns + "a/") == [ns + "a/1", ns + "a/2", ns + "a/deep/er/4"]
    assert store.list_keys(ns + "a") == [ns + "a/1", ns + "a/2", ns + "a/deep/er/4", ns + "ab/3"]
    assert store.list_keys(ns + "a/deep/") == [ns + "a/deep/er/4"]
    assert store.list_keys(ns) == sorted(ns + k for k in ("a/2", "a/1", "ab/3", "b/1", "a/deep/er/4"))
    assert store.list_keys(ns + "zzz/") == []
    assert store.list_keys(f"t-none-{uuid.uuid4().hex}/") == []


def test_delete_is_idempotent(backend):
    store, ns = backend
    store.put_bytes(ns + "x/1", b"one")
    store.put_bytes(ns + "x/2", b"two")
    store.delete(ns + "x/1")
    with pytest.raises(errors.NotFound):
        store.stat(ns + "x/1")
    with pytest.raises(errors.NotFound):
        store.get_bytes(ns + "x/1")
    store.delete(ns + "x/1")  # again: fine
    store.delete(ns + "never/was")  # missing: fine
    assert store.list_keys(ns) == [ns + "x/2"]
    assert store.get_bytes(ns + "x/2") == b"two"


def test_delete_prefix(backend):
    store, ns = backend
    for key in ("v/1/f0", "v/1/f1", "v/1/sub/f2", "v/10/f0", "v/2/f0"):
        store.put_bytes(ns + key, b"x")
    assert store.delete_prefix(ns + "v/1/") == 3
    assert store.list_keys(ns) == [ns + "v/10/f0", ns + "v/2/f0"]
    assert store.delete_prefix(ns + "v/1/") == 0  # again: nothing left, fine
    assert store.delete_prefix(ns + "nothing/") == 0
    assert store.delete_prefix(ns) == 2
    assert store.list_keys(ns) == []


def test_a_prefix_is_not_an_object(backend):
    """`a/b` existing does not make `a` an object (the directory backend once said it did)."""
    store, ns = backend
    store.put_bytes(ns + "dir/obj", b"data")
    with pytest.raises(errors.NotFound):
        store.stat(ns + "dir")
    with pytest.raises(errors.NotFound):
        store.read_range(ns + "dir")
    with pytest.raises(errors.NotFound):
        store.stat(ns + "dir/obj/below")
    with pytest.raises(errors.NotFound):
        store.read_range(ns + "dir/obj/below")
    store.delete(ns + "dir")  # no such object: fine, and the key below stays
    store.delete(ns + "dir/obj/below")
    assert store.get_bytes(ns + "dir/obj") == b"data"


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["stat", "read_range", "get_bytes"])
def test_missing_key_is_not_found(backend, method):
    store, ns = backend
    with pytest.raises(errors.NotFound):
        getattr(store, method)(ns + "missing/key")
    if method == "read_range":
        with pytest.raises(errors.NotFound):
            store.read_range(ns + "missing/key", 10, 0)
        with pytest.raises(errors.NotFound):
            store.read_range(ns + "missing/key", 10, 5)


INVALID_KEYS = ["../x", "a/../../x", "/abs", "/etc/passwd", "a//b", "", "a/", "/", ".", "..", "a/./b", "a b", "a\\b", "a\x00b", "é"]


@pytest.mark.parametrize("key", INVALID_KEYS, ids=repr)
def test_invalid_keys_are_refused(backend, key):
    store, ns = backend
    calls = [
        lambda: store.put_bytes(key, b"x"),
        lambda: store.put_stream(key, io.BytesIO(b"x")),
        lambda: store.stat(key),
        lambda: store.read_range(key),
        lambda: store.get_bytes(key),
        lambda: store.delete(key),
    ]
    for call in calls:
        with pytest.raises(errors.InvalidArgument):
            call()
    if not key.startswith("/") and key:
        with pytest.raises(errors.InvalidArgument):
            store.put_bytes(ns + key, b"x")
    assert store.list_keys(ns) == []


def test_ping(backend):
    store, _ = backend
    assert store.ping() is True


# --- backend specifics ---------------------------------------------------------------------------


def test_local_store_cannot_hold_a_key_and_keys_below_it(tmp_path):
    """A directory cannot be a file: the local backend says so (409), instead of an OSError."""
    store = LocalObjectStore(tmp_path)
    store.put_bytes("a/b", b"1")
    with pytest.raises(errors.AlreadyExists):
        store.put_bytes("a", b"2")
    with pytest.raises(errors.AlreadyExists):
        store.put_bytes("a/b/c", b"3")
    assert store.list_keys("") == ["a/b"]
    assert store.ping() is True
    assert LocalObjectStore(tmp_path / "elsewhere").ping() is True


@pytest.mark.s3
def test_s3_open_store_is_idempotent_and_creates_its_bucket(s3_server, monkeypatch):
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    url = s3_server.url.rsplit("/", 1)[0] + "/" + bucket
    first = open_store(url)
    assert isinstance(first, S3ObjectStore) and first.bucket == bucket
    assert first.client.bucket_exists(bucket)
    first.put_bytes("k", b"v")
    # a second service starting at the same time also finds the bucket missing, then creates it
    from minio import Minio

    monkeypatch.setattr(Minio, "bucket_exists", lambda self, name: False)
    second = open_store(url)
    monkeypatch.undo()
    assert second.get_bytes("k") == b"v"


@pytest.mark.s3
def test_s3_wrong_credentials_are_not_silently_accepted(s3_server):
    store: ObjectStore = open_store(s3_server.url)
    assert store.ping() is True
    bad = s3_server.url.replace(s3_server.secret_key, "not-the-secret")
    with pytest.raises(Exception) as info:
        open_store(bad).put_bytes("k", b"v")
    assert "SignatureDoesNotMatch" in str(info.value) or "AccessDenied" in str(info.value)



def test_an_unread_stream_releases_its_object_when_closed(backend):
    store, ns = backend
    store.put_bytes(f"{ns}held", b"x" * 1000)
    released = []
    stream = store.read_range(f"{ns}held")
    inner = stream._release
    stream._release = lambda: (released.append(True), inner())
    stream.close()  # a HEAD request or a client that went away: never iterated
    stream.close()
    assert released == [True]


def _open_files_under(path) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(path)):
            found.append(target)
    return found


def test_the_local_backend_closes_an_unread_file(tmp_path):
    store = open_store(f"file://{tmp_path / 'objects'}")
    store.put_bytes("a/b", b"bytes")
    stream = store.read_range("a/b")
    assert _open_files_under(tmp_path / "objects") != []
    stream.close()
    assert _open_files_under(tmp_path / "objects") == []


def test_an_unreachable_s3_server_is_unavailable():
    import urllib3
    from minio import Minio

    store = S3ObjectStore.__new__(S3ObjectStore)  # skip the bucket check: nothing listens there
    store.client = Minio("127.0.0.1:9", access_key="a", secret_key="b", secure=False, http_client=urllib3.PoolManager(retries=False))
    store.bucket = "media"
    for call in (lambda: store.stat("x"), lambda: store.read_range("x"), lambda: store.delete("x"),
                 lambda: store.list_keys("x/"), lambda: store.put_bytes("x", b"1")):
        with pytest.raises(errors.Unavailable):
            call()


# --- deletes leave no empty folders (local backend), and race no writer ------------------------------


def test_deleting_the_last_keys_leaves_no_empty_folders(backend):
    """S3 has no folders; the local backend must not keep the ones a delete emptied (a deleted
    project once left `models/<id>/v1` behind), up to the store's root and never the root."""
    store, ns = backend
    for key in ("models/7/v1/model.keras", "models/7/v1/labels.txt", "models/8/v1/model.keras"):
        store.put_bytes(ns + key, b"x")
    assert store.delete_prefix(ns + "models/7/") == 2
    assert store.list_keys(ns) == [ns + "models/8/v1/model.keras"]
    if isinstance(store, LocalObjectStore):
        assert not (store.root / ns / "models" / "7").exists()
        assert (store.root / ns / "models" / "8" / "v1").is_dir()
    store.delete(ns + "models/8/v1/model.keras")
    assert store.list_keys(ns) == []
    if isinstance(store, LocalObjectStore):
        assert not (store.root / ns.rstrip("/")).exists()
        assert store.root.is_dir() and store.ping()
    store.put_bytes(ns + "models/8/v1/model.keras", b"again")  # the folders come back on the next write
    assert store.get_bytes(ns + "models/8/v1/model.keras") == b"again"


def test_a_missing_key_delete_tidies_folders_left_empty_before(tmp_path):
    store = LocalObjectStore(tmp_path / "objects")
    (store.root / "models" / "9" / "v1").mkdir(parents=True)
    store.delete("models/9/v1/model.keras")
    assert list(store.root.iterdir()) == []


def test_writes_racing_deletes_in_the_same_folder_never_fail(backend):
    """A delete may empty and remove a folder while a write is about to create its file there:
    the write still lands, and every folder left behind holds an object."""
    store, ns = backend
    rounds = 40 if isinstance(store, LocalObjectStore) else 8
    failures: list[BaseException] = []

    def writer(worker: int):
        try:
            for i in range(rounds):
                key = f"{ns}shared/deep/{worker}-{i}"
                store.put_bytes(key, b"x")
                assert store.get_bytes(key) == b"x"
                store.delete(key)
        except BaseException as exc:  # noqa: BLE001 (reported by the main thread)
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert store.list_keys(ns) == []
    if isinstance(store, LocalObjectStore):
        assert not (store.root / ns.rstrip("/")).exists()
