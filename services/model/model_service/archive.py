"""Safe archive handling: unzip uploaded SavedModels, pack and unpack served SavedModels.

Uploaded zips are untrusted: every member must stay inside the target directory (no absolute
paths, no `..`, no links), and the member count and unpacked size are capped (the size counted
while unpacking, never read from the headers) so a zip bomb cannot fill the disk. SavedModels are kept in object storage as `.tar.gz` (our own files, still
unpacked with the `data` filter).
"""
from __future__ import annotations

import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from mlstudio.common import errors

MAX_MEMBERS = 10_000
_CHUNK = 1 << 20


def _bad_zip(why: str) -> errors.Unprocessable:
    return errors.Unprocessable(f"the model zip cannot be used: {why}", code="bad_model_file")


def _too_big(max_bytes: int) -> errors.Unprocessable:
    return _bad_zip(f"it unpacks to more than {max_bytes} bytes")


def _member_path(name: str) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or any(part in ("..", "") for part in path.parts) or (path.parts and ":" in path.parts[0]):
        raise _bad_zip(f"member {name[:200]!r} points outside the archive")
    return path


def unzip(source: Path, target: Path, max_bytes: int, max_members: int = MAX_MEMBERS) -> None:
    """Unpacks the zip `source` into the new directory `target`, refusing unsafe or huge archives.

    Sizes are counted as bytes come out of the decompressor (a zip's headers may lie), and
    extraction stops at the first byte past `max_bytes` in all, so a zip bomb costs at most
    `max_bytes` of disk, briefly: on any refusal `target` is removed again."""
    target.mkdir()
    try:
        _extract(source, target, max_bytes, max_members)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise


def _extract(source: Path, target: Path, max_bytes: int, max_members: int) -> None:
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError):
        raise _bad_zip("it is not a readable zip file") from None
    with archive:
        members = archive.infolist()
        if len(members) > max_members:
            raise _bad_zip(f"it has more than {max_members} members")
        remaining = max_bytes
        for member in members:
            if stat.S_ISLNK(member.external_attr >> 16):
                raise _bad_zip(f"member {member.filename[:200]!r} is a link")
            relative = _member_path(member.filename.rstrip("/")) if member.filename.rstrip("/") else None
            if relative is None:
                continue
            destination = target.joinpath(*relative.parts)
            if member.is_dir():
                destination.mkdir(parents=True, exist_ok=True)
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            try:
                with archive.open(member) as stream, open(destination, "xb") as out:
                    # Read at most one byte more than may still be written: the first byte
                    # over the limit stops extraction before it reaches the disk.
                    while chunk := stream.read(min(_CHUNK, remaining + 1)):
                        if len(chunk) > remaining:
                            raise _too_big(max_bytes)
                        remaining -= len(chunk)
                        out.write(chunk)
            except FileExistsError:
                raise _bad_zip(f"member {member.filename[:200]!r} appears twice") from None
            except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
                # The exception's text may hold a server path: say what failed, not where.
                raise _bad_zip(f"member {member.filename[:200]!r} cannot be unpacked ({type(exc).__name__})") from None


def zip_names(source: Path) -> list[str]:
    """Member names of the zip `source` ([] when it is not a readable zip)."""
    try:
        with zipfile.ZipFile(source) as archive:
            return archive.namelist()[:MAX_MEMBERS]
    except (zipfile.BadZipFile, OSError):
        return []


def find_saved_model(root: Path) -> Path:
    """The directory under `root` (itself or up to two levels down) holding `saved_model.pb`."""
    for depth in range(3):
        found = sorted(p.parent for p in root.glob("/".join(["*"] * depth + ["saved_model.pb"])))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise _bad_zip("it holds more than one SavedModel")
    raise _bad_zip("it holds no saved_model.pb")


def pack_tree(directory: Path, destination: Path, compresslevel: int = 9) -> None:
    """`directory`'s contents as the `.tar.gz` `destination` (paths relative to `directory`);
    `compresslevel` 0 stores without compressing (still gzip), many times faster."""
    with tarfile.open(destination, "w:gz", compresslevel=compresslevel) as archive:
        for path in sorted(directory.rglob("*")):
            archive.add(path, arcname=path.relative_to(directory).as_posix(), recursive=False)


def unpack_tree(source: Path, directory: Path) -> None:
    """Unpacks a `.tar.gz` made by `pack_tree` into `directory` (created, replaced if present)."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    with tarfile.open(source, "r:gz") as archive:
        archive.extractall(directory, filter="data")
