"""Reads a video upload's multipart body as a stream, writing the file part straight to disk.

Memory must not grow with the video's size (uploads of several GB are normal), so the body is
parsed chunk by chunk (werkzeug's `MultiPartParser`, 64 KiB at a time) and the file part goes
into a temporary file in the service's spool directory; only the small text fields are kept in
memory, with a cap. The caller removes the spooled file when done (`SpooledUpload` is a context
manager), whatever happens.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import MultiPartParser

from mlstudio.common import errors

# Also bounds the parser's internal buffer, which holds up to one 64 KiB read plus leftovers.
MAX_FORM_FIELD_BYTES = 1024 * 1024
MAX_FORM_PARTS = 32
FILE_FIELD = "file"


class SpooledUpload:
    """The text fields of the form and the video spooled to `path`."""

    def __init__(self, tmp_dir: Path):
        self.tmp_dir = Path(tmp_dir)
        self.fields: dict[str, str] = {}
        self.path: Path | None = None
        self.filename = ""
        self.content_type = ""
        self._spooled: list[Path] = []

    def _file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        """werkzeug's stream factory: every file part is written to its own temporary file."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(dir=self.tmp_dir, prefix="upload-", delete=False)
        self._spooled.append(Path(handle.name))
        return handle

    def read(self, max_bytes: int) -> SpooledUpload:
        """Parses the current request's body. 413 over `max_bytes`, 400 when malformed or when
        the `file` part is missing."""
        if request.mimetype != "multipart/form-data":
            raise errors.InvalidArgument("send the video as multipart/form-data with a part named file", code="not_multipart")
        if request.content_length is not None and request.content_length > max_bytes:
            raise errors.PayloadTooLarge(f"the upload is larger than the limit of {max_bytes} bytes")
        boundary = request.mimetype_params.get("boundary", "").encode("ascii", "replace")
        if not boundary:
            raise errors.InvalidArgument("the multipart body has no boundary", code="bad_multipart")
        parser = MultiPartParser(stream_factory=self._file_stream, max_form_memory_size=MAX_FORM_FIELD_BYTES, max_form_parts=MAX_FORM_PARTS)
        try:
            form, files = parser.parse(request.stream, boundary, request.content_length)
        except RequestEntityTooLarge:
            raise errors.PayloadTooLarge("a form field of the upload is too large, or it has too many parts") from None
        except ValueError as exc:
            raise errors.InvalidArgument(f"the multipart body is malformed: {exc}", code="bad_multipart") from None
        for storage in files.values():
            storage.stream.close()
        self.fields = {key: value for key, value in form.items()}
        upload = files.get(FILE_FIELD)
        if upload is None or not upload.filename and not _size(upload.stream.name):
            names = sorted(set(form) | set(files))
            raise errors.InvalidArgument(f"the video is missing: send it in a part named {FILE_FIELD} (received: {', '.join(names) or 'nothing'})", code="file_missing")
        self.path = Path(upload.stream.name)
        self.filename = Path(upload.filename or "").name
        self.content_type = (upload.mimetype or "").lower()
        return self

    def __enter__(self) -> SpooledUpload:
        return self

    def __exit__(self, *exc_info) -> None:
        for path in self._spooled:
            path.unlink(missing_ok=True)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
