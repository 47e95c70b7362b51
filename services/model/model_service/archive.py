"""Safe archive handling: unzip uploaded SavedModels, pack and unpack served SavedModels.

Uploaded zips are untrusted: every member must stay inside the target directory (no absolute
paths, no `..`, no links), and the member count and unpacked size are capped so a zip bomb
cannot fill the disk. SavedModels are kept in object storage as `.tar.gz` (our own files, still
unpacked with the `data` filter).
"""
from __future__ import annotations

import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from mlstudio.common import errors

MAX_MEMBERS = 10_000


def _bad_zip(why: str) -> errors.Unprocessable:
    return errors.Unprocessable(f"the model zip cannot be used: {why}", code="bad_model_file")


def _member_path(name: str) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or any(part in ("..", "") for part in path.parts) or (path.parts and ":" in path.parts[0]):
        raise _bad_zip(f"member {name[:200]!r} points outside the archive")
    return path


def unzip(source: Path, target: Path, max_bytes: int) -> None:
    """Unpacks the zip `source` into the directory `target`, refusing unsafe or huge archives."""
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise _bad_zip(str(exc)) from None
    with archive:
        members = archive.infolist()
        if len(members) > MAX_MEMBERS:
            raise _bad_zip(f"it has more than {MAX_MEMBERS} members")
        if sum(member.file_size for member in members) > max_bytes:
            raise _bad_zip(f"it unpacks to more than {max_bytes} bytes")
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
            written = 0
            try:
                with archive.open(member) as stream, open(destination, "wb") as out:
                    while chunk := stream.read(1 << 20):
                        written += len(chunk)
                        if written > member.file_size:
                            raise _bad_zip(f"member {member.filename[:200]!r} is larger than it says")
                        out.write(chunk)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise _bad_zip(f"member {member.filename[:200]!r}: {exc}") from None


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


def pack_tree(directory: Path, destination: Path) -> None:
    """`directory`'s contents as the `.tar.gz` `destination` (paths relative to `directory`)."""
    with tarfile.open(destination, "w:gz") as archive:
        for path in sorted(directory.rglob("*")):
            archive.add(path, arcname=path.relative_to(directory).as_posix(), recursive=False)


def unpack_tree(source: Path, directory: Path) -> None:
    """Unpacks a `.tar.gz` made by `pack_tree` into `directory` (created, replaced if present)."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    with tarfile.open(source, "r:gz") as archive:
        archive.extractall(directory, filter="data")
