"""The uploaded model file, downloaded through a signed URL."""
from __future__ import annotations

from collections.abc import Iterator

from mlstudio.common import errors
from mlstudio.common.media_files import MediaFile

from .shared import TRAINED

class Files:
    """The model file behind a signed URL (a part of `ModelCore`)."""

    def model_file(self, model_id: int, expires: str | None, signature: str | None) -> MediaFile:
        """The uploaded model file behind a valid signed URL."""
        self.signer.verify(f"/models/{model_id}/file", expires, signature)
        doc = self.repository.get(model_id)
        if doc is None or doc["status"] != TRAINED:
            raise errors.NotFound(f"model {model_id} not found")
        key = doc["artifacts"]["model"]
        info = self.store.stat(key)
        return MediaFile(key, "application/octet-stream", info.size, info.etag, self.signer.ttl_s,
                         download_name=f"model-{model_id}.{key.rsplit('.', 1)[-1]}")

    def read_model_file(self, media: MediaFile, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        return self.store.read_range(media.key, start, length)
