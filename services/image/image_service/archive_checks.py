"""Checks an uploaded dataset zip before anything of it is stored: the archive is hostile until
proven otherwise.

Refused with a 4xx that says why, before a byte is stored: a file that is not a zip (415/422),
too many entries (413), a declared uncompressed total over the limit or an entry compressed more
than `MAX_RATIO` to 1 (413: zip bombs), entry names that are absolute, climb out with `..`, use
backslashes, drive letters or control characters (400: zip slip), symbolic links and other
non-regular files (400), encrypted entries (422), and duplicate names (400). Entries are never
extracted under their names: they are read from the archive into memory, at most their declared
size (which `zipfile` enforces while decompressing), so a name never reaches a filesystem path.
"""
from __future__ import annotations

import re
import stat
import zipfile
from dataclasses import dataclass
from typing import BinaryIO

from mlstudio.common import errors

# An entry that expands more than this many times its compressed size is treated as a bomb
# (JPEG and PNG barely compress; COCO JSON compresses about 10 to 20 times).
MAX_RATIO = 200
# Ratios are only judged above this size: a tiny file can compress absurdly well and harm nobody.
RATIO_FLOOR = 1024 * 1024
_BAD_NAME = re.compile(r"[\x00-\x1f\x7f\\]|^[A-Za-z]:")


@dataclass(frozen=True)
class ArchiveLimits:
    max_entries: int
    max_total_bytes: int


def open_checked(stream: BinaryIO, limits: ArchiveLimits) -> zipfile.ZipFile:
    """The zip in `stream` (seekable), once every entry passed the checks above."""
    try:
        archive = zipfile.ZipFile(stream)
    except zipfile.BadZipFile:
        raise errors.UnsupportedMediaType("the file is not a zip archive", code="not_a_zip") from None
    except (OSError, ValueError, EOFError) as exc:
        raise errors.Unprocessable(f"the zip archive cannot be read: {exc}", code="bad_zip") from None
    try:
        check_entries(archive.infolist(), limits)
    except BaseException:
        archive.close()
        raise
    return archive


def check_entries(entries: list[zipfile.ZipInfo], limits: ArchiveLimits) -> None:
    if len(entries) > limits.max_entries:
        raise errors.PayloadTooLarge(f"the zip has {len(entries)} entries; at most {limits.max_entries} are accepted",
                                     code="too_many_entries")
    total, seen = 0, set()
    for info in entries:
        name = info.filename
        _check_name(name)
        if name in seen:
            raise errors.InvalidArgument(f"the zip holds {name!r} twice", code="duplicate_entry")
        seen.add(name)
        # Unix type bits (many writers set permissions only, which is a regular file).
        kind_bits = stat.S_IFMT(info.external_attr >> 16) if info.create_system == 3 else 0
        if kind_bits and kind_bits not in (stat.S_IFREG, stat.S_IFDIR):
            kind = "a symbolic link" if kind_bits == stat.S_IFLNK else "not a regular file"
            raise errors.InvalidArgument(f"zip entry {name!r} is {kind}", code="unsafe_entry")
        if info.flag_bits & 0x1:
            raise errors.Unprocessable(f"zip entry {name!r} is encrypted", code="encrypted_entry")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise errors.Unprocessable(f"zip entry {name!r} uses an unsupported compression method", code="bad_zip")
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(1, info.compress_size):
            raise errors.PayloadTooLarge(f"zip entry {name!r} expands {info.file_size // max(1, info.compress_size)} times; "
                                         f"at most {MAX_RATIO} times is accepted", code="zip_bomb")
        total += info.file_size
        if total > limits.max_total_bytes:
            raise errors.PayloadTooLarge(f"the zip expands to more than {limits.max_total_bytes} bytes", code="zip_too_large")


def _check_name(name: str) -> None:
    parts = name.rstrip("/").split("/")
    if not name or name.startswith("/") or _BAD_NAME.search(name) or any(part in ("", ".", "..") for part in parts):
        shown = name.encode("unicode_escape").decode()[:200]
        raise errors.InvalidArgument(f"zip entry name {shown!r} is not a safe relative path", code="unsafe_entry")


def read_entry(archive: zipfile.ZipFile, name: str, max_bytes: int) -> bytes:
    """The bytes of one entry, refusing one larger than `max_bytes` before reading it."""
    info = archive.getinfo(name)
    if info.file_size > max_bytes:
        raise errors.PayloadTooLarge(f"{name!r} is larger than the limit of {max_bytes} bytes", code="entry_too_large")
    try:
        with archive.open(info) as entry:
            return entry.read(max_bytes + 1)[:max_bytes + 1]
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise errors.Unprocessable(f"{name!r} cannot be read from the zip: {exc}", code="bad_zip") from None
