"""Object storage for media and model artifacts, behind one small interface.

Two backends: a local directory (the embedded default) and S3/MinIO (through the `minio`
client). Keys are immutable, slash-separated names chosen by the owning service (for example
`images/632.jpg`); they are checked here so no user input can reach a filesystem path.
"""
from __future__ import annotations

import abc
import contextlib
import errno
import os
import re
import shutil
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG
from typing import BinaryIO

from . import errors

CHUNK = 1024 * 1024
# How often a local write retries when a concurrent delete removes its just-made folder.
_FOLDER_RACE_ATTEMPTS = 5
_KEY = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")


def check_key(key: str) -> str:
    """Returns `key` if it is a safe object name, else raises InvalidArgument."""
    if not _KEY.match(key) or any(part in (".", "..") for part in key.split("/")):
        raise errors.InvalidArgument(f"invalid object key {key!r}")
    return key


def check_range(start: int, length: int | None) -> None:
    """Refuses negative offsets and lengths (InvalidArgument)."""
    if start < 0 or (length is not None and length < 0):
        raise errors.InvalidArgument(f"invalid byte range: start {start}, length {length}")


@contextlib.contextmanager
def backend_failures(backend: str, *failures: type[BaseException]):
    """Turns a backend's own failures (disk, network, server errors) into Unavailable (503), so
    callers handle one kind of error; domain errors (NotFound, ...) pass through."""
    try:
        yield
    except errors.DomainError:
        raise
    except failures as exc:
        raise errors.Unavailable(f"object storage ({backend}) is unavailable: {exc}") from exc


class ObjectStream:
    """The chunks of an opened object. `close()` releases the file or connection even when the
    chunks were never read (a HEAD request, a client that went away); iteration ends with it."""

    def __init__(self, chunks: Iterator[bytes], release: Callable[[], None]):
        self._chunks = chunks
        self._release = release
        self._open = True

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._chunks)
        except StopIteration:
            self.close()
            raise

    def close(self) -> None:
        if self._open:
            self._open = False
            self._release()


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str


class ObjectStore(abc.ABC):
    """Where bytes live. Every method is safe to call again (deletes of missing keys succeed)."""

    @abc.abstractmethod
    def put_stream(self, key: str, stream: BinaryIO, content_type: str = "application/octet-stream") -> ObjectInfo:
        """Stores everything `stream` yields under `key`, without holding it all in memory."""

    def put_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> ObjectInfo:
        """Stores the file at `path` under `key` and takes it: once this returns, `path` may be
        gone (the local store moves it into place rather than copying it). On failure nothing
        is stored under `key`; `path` is left for its owner to remove."""
        with open(path, "rb") as stream:
            return self.put_stream(key, stream, content_type)

    @contextlib.contextmanager
    def local_path(self, key: str, tmp_dir: Path) -> Iterator[Path]:
        """A path on this machine that holds `key`'s bytes while the block runs: a copy
        downloaded into `tmp_dir` (removed afterwards), or the object itself where the backend
        keeps it as a file (read it, never write it). NotFound when `key` is missing."""
        tmp_dir = Path(tmp_dir)
        tmp_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=tmp_dir, prefix="object-", suffix=Path(key).suffix) as handle:
            self.download_to(key, Path(handle.name))
            yield Path(handle.name)

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> ObjectInfo:
        import io

        return self.put_stream(key, io.BytesIO(data), content_type)

    @abc.abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Size and ETag of `key`; NotFound when missing."""

    @abc.abstractmethod
    def read_range(self, key: str, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        """The bytes of `key` from `start`, `length` of them (all when None), in chunks.

        NotFound when `key` is missing (raised by the call, not by the first iteration); a range
        that starts at or past the end yields nothing; negative values are InvalidArgument."""

    def get_bytes(self, key: str) -> bytes:
        return b"".join(self.read_range(key))

    def download_to(self, key: str, path: Path) -> None:
        with open(path, "wb") as out:
            for chunk in self.read_range(key):
                out.write(chunk)

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Removes `key`; missing keys are not an error."""

    @abc.abstractmethod
    def list_keys(self, prefix: str) -> list[str]:
        """Keys that start with `prefix`."""

    def delete_prefix(self, prefix: str) -> int:
        """Removes every key under `prefix`; returns how many."""
        keys = self.list_keys(prefix)
        for key in keys:
            self.delete(key)
        return len(keys)

    @abc.abstractmethod
    def ping(self) -> bool:
        """True when the backend answers (used by /readyz)."""


class LocalObjectStore(ObjectStore):
    """A directory on this machine; writes go to a temporary file renamed into place."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put_stream(self, key, stream, content_type="application/octet-stream"):
        with backend_failures("local", OSError):
            return self._put_stream(key, stream)

    def _put_stream(self, key, stream):
        with self._written_beside(key) as (fd, _tmp):
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(stream, out, CHUNK)
        return self.stat(key)

    def put_file(self, key, path, content_type="application/octet-stream"):
        with backend_failures("local", OSError):
            return self._put_file(key, Path(path))

    def _put_file(self, key, source: Path):
        """Renames `source` into place when it is on the store's filesystem (no byte is copied:
        a multi-GB upload spooled by the HTTP layer is written once), else copies it. The
        rename goes through a temporary file beside the object, as a stream's write does, so
        that the object appears whole or not at all and a concurrent delete cannot remove its
        folder in between."""
        with self._written_beside(key) as (fd, tmp):
            os.close(fd)
            try:
                os.replace(source, tmp)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                with open(source, "rb") as stream, open(tmp, "wb") as out:  # another filesystem
                    shutil.copyfileobj(stream, out, CHUNK)
        return self.stat(key)

    @contextlib.contextmanager
    def local_path(self, key, tmp_dir):
        # The object is already a file here: read where it lies, no download.
        path = self._path(key)
        self.stat(key)  # NotFound, as a download would say
        yield path

    @contextlib.contextmanager
    def _written_beside(self, key: str):
        """Yields a new temporary file (fd, path) beside the object of `key` for the caller to
        fill; then moves it into place, so that the object appears whole or not at all, or
        removes it if the block failed."""
        path = self._path(key)
        fd, tmp = self._temporary_file_beside(key, path)
        try:
            yield fd, tmp
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _temporary_file_beside(self, key: str, path: Path) -> tuple[int, str]:
        """A new temporary file in `path`'s folder, made with the folders above it. A delete
        removes folders it empties; one may go between the mkdir and the file's creation, so
        that is tried again (the temporary file then keeps the folder from being removed)."""
        for _ in range(_FOLDER_RACE_ATTEMPTS):
            # A directory cannot also be a file: `a` and `a/b` cannot both exist here (they can in S3).
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                if path.is_dir():
                    raise errors.AlreadyExists(f"object key {key} conflicts with existing keys under {key}/")
                return tempfile.mkstemp(dir=path.parent, prefix=".upload-")
            except FileNotFoundError:
                continue  # a folder on the way was removed under us
            except (FileExistsError, NotADirectoryError):
                if any(folder.is_file() for folder in path.parents if self.root in folder.parents):
                    raise errors.AlreadyExists(f"object key {key} conflicts with an existing key (a prefix of it is an object)") from None
                continue  # mkdir saw a folder that was removed before it could check it
        raise errors.Unavailable(f"object storage (local) is unavailable: the folder of {key} kept disappearing")

    def stat(self, key):
        path = self._path(key)
        with backend_failures("local", OSError):
            try:
                st = path.stat()
            except (FileNotFoundError, NotADirectoryError):
                raise errors.NotFound(f"object {key} not found") from None
        if not S_ISREG(st.st_mode):  # a "directory" is a prefix, not an object
            raise errors.NotFound(f"object {key} not found")
        return ObjectInfo(key, st.st_size, f"{st.st_mtime_ns:x}-{st.st_size:x}")

    def read_range(self, key, start=0, length=None):
        path = self._path(key)
        check_range(start, length)
        try:
            handle = open(path, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise errors.NotFound(f"object {key} not found") from None
        except OSError as exc:
            raise errors.Unavailable(f"object storage (local) is unavailable: {exc}") from exc

        def chunks():
            with backend_failures("local", OSError):
                handle.seek(start)
                remaining = length
                while remaining is None or remaining > 0:
                    chunk = handle.read(CHUNK if remaining is None else min(CHUNK, remaining))
                    if not chunk:
                        return
                    if remaining is not None:
                        remaining -= len(chunk)
                    yield chunk

        return ObjectStream(chunks(), handle.close)

    def delete(self, key):
        path = self._path(key)
        with backend_failures("local", OSError):
            try:
                path.unlink(missing_ok=True)
            except (NotADirectoryError, IsADirectoryError):
                return  # no object by that name (only keys under it): nothing to delete, as in S3
        self._remove_empty_folders(path.parent)

    def _remove_empty_folders(self, folder: Path) -> None:
        """Removes `folder` and the folders above it while they are empty, never the root, so a
        deleted project leaves no `models/<id>/v1` behind. rmdir only removes an empty folder, so
        a concurrent write (whose temporary file is already inside) stops it; a folder another
        delete removed first is passed over."""
        while folder != self.root and self.root in folder.parents:
            try:
                folder.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                return  # not empty (ENOTEMPTY, EEXIST), or not ours to remove: leave it
            folder = folder.parent

    def list_keys(self, prefix):
        # Only the folder the prefix names is walked, not the whole store.
        folder = prefix.rpartition("/")[0]
        top = self.root / check_key(folder) if folder else self.root
        found = []
        with backend_failures("local", OSError):
            if not top.is_dir():
                return []
            for path in top.rglob("*"):
                if path.is_file() and not path.name.startswith(".upload-"):
                    key = path.relative_to(self.root).as_posix()
                    if key.startswith(prefix):
                        found.append(key)
        return sorted(found)

    def ping(self):
        return self.root.is_dir() and os.access(self.root, os.W_OK)


class S3ObjectStore(ObjectStore):
    """An S3 bucket (MinIO or any S3 server). Uploads are multipart, 8 MiB parts, one at a time.

    For a stream of unknown length the minio client holds about three parts in memory (the part,
    its one-byte look-ahead copy and the next read), plus one per extra parallel upload; its
    defaults (3 parallel parts of 16 MiB here) peaked at 80 MiB per upload. 8 MiB parts uploaded
    one at a time keep each upload near 24 MiB, whatever the object's size, and allow objects up
    to 80 GB (10,000 parts). Nothing here relies on the ETag of a completed multipart upload
    (radosgw answers an empty one): `put_stream` returns what `stat` reads back.
    """

    PART = 8 * 1024 * 1024
    PARALLEL_PARTS = 1

    def __init__(self, endpoint: str, access_key: str, secret_key: str, bucket: str, *, secure: bool = False, region: str | None = None):
        from minio import Minio

        self.client = Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region)
        self.bucket = bucket
        if not self.client.bucket_exists(bucket):
            from minio.error import S3Error

            try:
                self.client.make_bucket(bucket)
            except S3Error as exc:  # another service created it meanwhile: that is fine
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    def _failures(self):
        from minio.error import MinioException
        from urllib3.exceptions import HTTPError

        return backend_failures("s3", MinioException, HTTPError, OSError)

    def put_stream(self, key, stream, content_type="application/octet-stream"):
        check_key(key)
        with self._failures():
            self.client.put_object(
                self.bucket,
                key,
                stream,
                length=-1,
                part_size=self.PART,
                num_parallel_uploads=self.PARALLEL_PARTS,
                content_type=content_type,
            )
        return self.stat(key)

    def stat(self, key):
        from minio.error import S3Error

        check_key(key)
        with self._failures():
            try:
                st = self.client.stat_object(self.bucket, key)
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                    raise errors.NotFound(f"object {key} not found") from None
                raise
        return ObjectInfo(key, st.size, (st.etag or "").strip('"') or f"{st.size:x}")

    def read_range(self, key, start=0, length=None):
        from minio.error import S3Error

        check_key(key)
        check_range(start, length)
        if length == 0:  # minio reads length 0 as "to the end"; an empty range is empty
            self.stat(key)
            return iter(())
        with self._failures():
            try:
                response = self.client.get_object(self.bucket, key, offset=start, length=length or 0)
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                    raise errors.NotFound(f"object {key} not found") from None
                if exc.code == "InvalidRange":  # starts at or past the end (416)
                    self.stat(key)
                    return iter(())
                raise

        def chunks():
            with self._failures():
                yield from response.stream(CHUNK)

        def release():
            response.close()
            response.release_conn()

        return ObjectStream(chunks(), release)

    def delete(self, key):
        check_key(key)
        with self._failures():
            self.client.remove_object(self.bucket, key)

    def list_keys(self, prefix):
        with self._failures():
            return sorted(obj.object_name for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True))

    def ping(self):
        try:
            return self.client.bucket_exists(self.bucket)
        except Exception:
            return False


def open_store(url: str) -> ObjectStore:
    """The backend a `STORAGE_URL` names: `file:///dir` or `s3[s]://key:secret@host:port/bucket`."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        return LocalObjectStore(Path(urllib.parse.unquote(parsed.path)))
    if parsed.scheme in ("s3", "s3s", "https"):
        bucket = parsed.path.strip("/")
        if not bucket or not parsed.hostname:
            raise ValueError(f"STORAGE_URL {url!r} needs a host and a bucket: s3://key:secret@host:port/bucket")
        endpoint = parsed.hostname + (f":{parsed.port}" if parsed.port else "")
        query = urllib.parse.parse_qs(parsed.query)
        return S3ObjectStore(
            endpoint,
            urllib.parse.unquote(parsed.username or ""),
            urllib.parse.unquote(parsed.password or ""),
            bucket,
            secure=parsed.scheme in ("s3s", "https"),
            region=(query.get("region") or [None])[0],
        )
    raise ValueError(f"STORAGE_URL {url!r}: scheme must be file, s3 or s3s")
