"""Image rules: ownership, tags, uploads, predictions, frames, deletes; no HTTP or gRPC here.

Writes are ordered so nothing is half-written: an upload checks every file, allocates ids,
writes the bytes under immutable keys (`images/<project>/<image id>.<ext>`), then inserts all
metadata with one `insert_many`; if anything fails, what was written is removed. Uploaded bytes
are stored once per project: a file whose SHA-256 the project already holds is answered as the
stored image (a unique index settles races between concurrent uploads). Labels are checked
(`is_train`, the API's `isTrain`) when a person gave them and, when a model did, only if its score
reaches the project's review threshold (`mlstudio.common.review`); a person's retag, confirmation
or corrected boxes change the labels and the checked state in one update. A delete first
hides the documents (`deleting`), then removes their bytes, then the documents; if it stops
half-way, the hidden documents tell a retry (or the periodic sweep) what is left to do.
"""
from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from mlstudio.common import detections as detection_forms
from mlstudio.common import errors, mongo, review
from mlstudio.common.deadlines import NONE, Deadline
from mlstudio.common.image_hash import PerceptualHash
from mlstudio.common.media_files import MediaFile
from mlstudio.common.tags import normalize_tag, tag_from_label
from mlstudio.common.vocabulary import DETECTION

from . import detections as detections_mod
from . import near_duplicates
from .uploads import CheckedImage, UploadedFile, UploadLimits, check_all, check_bytes, check_frame

log = logging.getLogger(__name__)

MIB = 1024 * 1024


@dataclass(frozen=True)
class Page:
    """Optional `limit`/`offset` of a listing; no limit means the whole list. `after_id` starts
    a list in id order after that image (keyset pagination: pass the last id of the previous
    page; unlike `offset`, its cost does not grow with the depth)."""

    limit: int | None = None
    offset: int = 0
    after_id: int | None = None


@dataclass(frozen=True)
class Selection:
    """Which of the listed images a listing shows, in what order (besides its `Page`): with
    `review` only those waiting for review (`is_train` false); with `by_score` lowest score
    first (images without a score first), else in id (a video's: frame) order."""

    review: bool = False
    by_score: bool = False


SORTS = ("id", "score")


def sort_by_score(sort: str | None) -> bool:
    """Whether a listing's `sort` asks for lowest score first: `score`; `id` (or nothing) is
    id order. InvalidArgument for anything else."""
    text = (sort or "id").strip().lower()
    if text not in SORTS:
        raise errors.InvalidArgument(f"sort must be one of {', '.join(SORTS)}, got {sort!r}", code="invalid_sort")
    return text == "score"


@dataclass(frozen=True)
class LabelChanges:
    """A person's change to one image: a new tag, new boxes (`[{label, box}]` as sent, checked
    by `detections.person_boxes`), and the checked state (`None`: checked, since a person looked)."""

    tag: str | None = None
    detections: list | None = None
    checked: bool | None = None


@dataclass
class NewFrame:
    """An image another service creates (a video frame, usually), with what its model said."""

    content: bytes
    tag: str = ""
    title: str = ""
    video_id: int = 0
    frame_index: int = 0
    timestamp_ms: int = 0
    score: float | None = None
    detections: list[dict] = field(default_factory=list)
    # None: a tag without a score is a person's (checked); else the label is the model's, checked
    # when its score reaches the project's review threshold (see `_frame_facts`).
    is_train: bool | None = None


def public_image(doc: dict, url: str) -> dict:
    """The API's Image: the original fields, then the added ones."""
    detections = doc.get("detections")
    return {
        "id": doc["_id"],
        "title": doc.get("title", ""),
        "location": doc["key"],
        "description": doc.get("description", ""),
        "url": url,
        "type": doc["tag"],
        "user": doc["user"],
        "project": doc["project"],
        "isTrain": doc.get("is_train", True),
        "captions": detection_forms.captions(detections),
        "boxes": detection_forms.boxes(detections),
        "video": doc.get("video"),
        "frame_index": doc.get("frame_index"),
        "timestamp_ms": doc.get("timestamp_ms"),
        "score": doc.get("score"),
        "detections": detections,
        "content_type": doc["content_type"],
        "width": doc.get("width"),
        "height": doc.get("height"),
        "create_time": mongo.iso(doc["create_time"]),
    }


def media_path(image_id: int) -> str:
    return f"/images/{image_id}/file"


def project_prefix(project_id: int) -> str:
    """Where a project's image bytes live in the object store."""
    return f"images/{project_id}/"


class ImageCore:
    def __init__(self, repository, store, projects, signer, limits: UploadLimits, *, models=None, videos=None,
                 predict_batch_bytes: int = 16 * MIB, detection_filing: str = detections_mod.DETECTED,
                 clock: Callable[[], float] = time.time):
        self.repository = repository
        self.store = store
        self.projects = projects
        self.signer = signer
        self.limits = limits
        self.models = models
        self.videos = videos
        self.predict_batch_bytes = predict_batch_bytes
        self.detection_filing = detections_mod.check_filing(detection_filing)
        self.clock = clock
        # Called with a project's id when its data is deleted, before its images go (the
        # dataset jobs stop theirs).
        self.on_project_delete: list[Callable[[int], None]] = []

    # ---- reading ---------------------------------------------------------------------------

    def present(self, doc: dict) -> dict:
        return self.present_all([doc])[0]

    def present_all(self, docs: list[dict]) -> list[dict]:
        """The API's Images of `docs`, their URLs signed with one expiry."""
        urls = self.signer.batch(now=self.clock())
        return [public_image(doc, urls.url(media_path(doc["_id"]))) for doc in docs]

    def _project(self, project_id: int, user_id: int):
        """The caller's project (NotFound when missing or someone else's)."""
        return self.projects.get_project(project_id, user_id)

    def project(self, project_id: int, user_id: int):
        """The caller's project, for the dataset routes' cores (NotFound as `_project`)."""
        return self._project(project_id, user_id)

    def _owned(self, image_id: int, user_id: int, project_id: int | None, *, deleting_too: bool = False) -> dict:
        doc = self.repository.get(image_id, include_deleting=deleting_too)
        if doc is None or doc["user"] != user_id or (project_id is not None and doc["project"] != project_id):
            raise errors.NotFound(f"image {image_id} not found")
        return doc

    def image_owner(self, image_id: int) -> int:
        """Who owns the image (legacy mode's id-only requests act for them); NotFound if none.
        An image hidden by a delete that stopped half-way counts, so that delete can be retried."""
        doc = self.repository.get(image_id, include_deleting=True)
        if doc is None:
            raise errors.NotFound(f"image {image_id} not found")
        return doc["user"]

    def video_owner(self, video_id: int) -> int:
        """Who owns the video (legacy mode's id-only requests act for them); NotFound if none.
        The video service knows, when deployed; otherwise the video's frames say."""
        if self.videos is not None:
            return self.videos.video_owner(video_id)
        frames = self.repository.list_by_video(video_id)
        if not frames:
            raise errors.NotFound(f"video {video_id} not found")
        return frames[0]["user"]

    def list_images(self, user_id: int, project_id: int, *, tag: str | None = None, video_id: int | None = None,
                    page: Page = Page(), selection: Selection = Selection()) -> list[dict]:
        """A project's images, or one tag's, or one video's (see `Selection`)."""
        tag = normalize_tag(tag) if tag is not None else None
        self._project(project_id, user_id)
        return self.present_all(self._page(page, selection, project_id=project_id, tag=tag, video_id=video_id))

    def _page(self, page: Page, selection: Selection, **selector) -> list[dict]:
        if page.after_id is not None and (selector.get("video_id") is not None or selection.by_score):
            order = "a video's images are in frame order" if selector.get("video_id") is not None else "sort=score lists in score order"
            raise errors.InvalidArgument(f"after_id pages lists in id order; {order}: use limit and offset", code="invalid_page")
        return self.repository.list(**selector, limit=page.limit, offset=page.offset, after_id=page.after_id,
                                    review=selection.review, by_score=selection.by_score)

    def get(self, user_id: int, image_id: int, project_id: int | None = None) -> dict:
        return self.present(self._owned(image_id, user_id, project_id))

    def tag_summary(self, user_id: int, project_id: int) -> list[dict]:
        """`[{name, count, avatarImage}]`, one per tag, by name; the avatar is the tag's oldest image."""
        self._project(project_id, user_id)
        rows = self.repository.tag_summary(project_id)
        avatars = self.present_all([row["first"] for row in rows])
        return [{"name": row["tag"], "count": row["count"], "avatarImage": avatar} for row, avatar in zip(rows, avatars)]

    def by_video(self, user_id: int, video_id: int, page: Page = Page(), selection: Selection = Selection()) -> dict:
        """`{type, date, images}`: the video's frames and its project's type. The video service,
        when deployed, says whose video it is; otherwise its frames do."""
        if self.videos is not None:
            video = self.videos.get_video(video_id, user_id)
            project = self._project(video.project_id, user_id)
        else:
            frames = self.repository.list_by_video(video_id)
            if not frames:
                return {"type": None, "date": [], "images": []}
            if any(doc["user"] != user_id for doc in frames):
                raise errors.NotFound(f"video {video_id} not found")
            project = self._project(frames[0]["project"], user_id)
        images = self.present_all(self._page(page, selection, project_id=project.id, video_id=video_id))
        return {"type": project.type, "date": images, "images": images}

    def media(self, image_id: int, expires: str | None, signature: str | None) -> MediaFile:
        """The stored image behind a signed URL; PermissionDenied when the signature is bad or old."""
        now = self.clock()
        self.signer.verify(media_path(image_id), expires, signature, now=now)
        doc = self.repository.get(image_id)
        if doc is None:
            raise errors.NotFound(f"image {image_id} not found")
        max_age = max(0, int(expires) - int(now))
        return MediaFile(doc["key"], doc["content_type"], doc["size"], doc["sha256"][:32], max_age)

    def read_media(self, media: MediaFile, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        return self.store.read_range(media.key, start, length)

    def dataset(self, user_id: int, project_id: int, *, include_unchecked: bool = False) -> Iterator[tuple[dict, bytes]]:
        """The project's checked images (with `include_unchecked`, every image) with their bytes,
        for training. An image whose bytes are gone (deleted meanwhile) is skipped."""
        self._project(project_id, user_id)
        for doc in self.repository.iterate(project_id, checked_only=not include_unchecked):
            try:
                content = self.store.get_bytes(doc["key"])
            except errors.NotFound:
                log.warning("image %s: object %s is missing; left out of the dataset", doc["_id"], doc["key"])
                continue
            yield doc, content

    def near_duplicates(self, user_id: int, project_id: int) -> list[dict]:
        """`[{images: [Image, ...]}]`: the project's groups of near-duplicate images (see
        `near_duplicates`), by their oldest image. Images stored before perceptual hashes were
        kept get theirs now."""
        self._project(project_id, user_id)
        hashes = []
        for doc in self.repository.iterate(project_id, 1000, fields=["phash", "key"]):
            encoded = doc.get("phash") or self._backfill_phash(doc)
            if encoded:
                hashes.append((doc["_id"], PerceptualHash.decode(encoded)))
        found = near_duplicates.groups(hashes)
        docs = {doc["_id"]: doc for doc in self.repository.get_many([i for group in found for i in group])}
        listed = (self.present_all([docs[i] for i in group if i in docs]) for group in found)
        return [{"images": images} for images in listed if len(images) > 1]

    def _backfill_phash(self, doc: dict) -> str | None:
        try:
            content = self.store.get_bytes(doc["key"])
            encoded = check_bytes(content, "image", self.limits).phash
        except errors.DomainError as exc:
            log.warning("image %s: no perceptual hash (%s)", doc["_id"], exc.message)
            return None
        self.repository.set_phash(doc["_id"], encoded)
        return encoded

    # ---- creating --------------------------------------------------------------------------

    def upload(self, user_id: int, project_id: int, tag: str, files: list[UploadedFile]) -> list[dict]:
        """Stores the files under `tag`; one bad file stores nothing."""
        tag = normalize_tag(tag)
        project = self._project(project_id, user_id)
        checked = check_all(files, self.limits)
        docs, _ = self._create_uploads(project, checked, lambda new: [{"tag": tag} for _ in new])
        return self.present_all(docs)

    def predict(self, user_id: int, project_id: int, model_id: int, files: list[UploadedFile], threshold: float = 0.0,
                deadline: Deadline = NONE) -> list[dict]:
        """Stores the files under the tags a model predicts (with scores, or detections for a
        Detection project: those scoring `threshold` or more, 0 meaning the project's threshold).
        The model must be readable by the caller and of the project's type.

        Nothing is stored once the caller stopped waiting (`deadline` passed or its client hung
        up): nobody would see the answer, and a client that retries would file the images twice."""
        project = self._project(project_id, user_id)
        self.check_model(model_id, user_id, project)
        checked = check_all(files, self.limits)
        log.info("project %s: predicting %d images with model %s", project_id, len(checked), model_id)
        threshold = detection_forms.chosen_threshold(threshold, project)
        facts = functools.partial(self._predictions, project, model_id, user_id, threshold=threshold, deadline=deadline)
        docs, _ = self._create_uploads(project, checked, facts, deadline=deadline)
        return self.present_all(docs)

    def check_model(self, model_id: int, user_id: int, project) -> None:
        """The model may label the project's images: readable by the caller, of the project's type."""
        if self.models is None:
            raise errors.NotImplementedYet("prediction needs the model service, which this deployment does not run",
                                           code="no_model_service")
        model = self.models.get_model(model_id, user_id)
        if model.type != project.type:
            raise errors.InvalidArgument(
                f"model {model_id} is a {model.type} model but project {project.id} is a {project.type} project",
                code="model_type_mismatch")

    def model_facts(self, project_type: str, result) -> dict:
        """Tag, score (and boxes) of one of the model service's answers, filed as predictions are."""
        return _detected(result, self.detection_filing) if project_type == DETECTION else _classified(result)

    def _predictions(self, project, model_id: int, user_id: int, checked: list[CheckedImage], *,
                     threshold: float = 0.0, deadline: Deadline = NONE) -> list[dict]:
        project_type, review_threshold = project.type, review.project_threshold(project)
        facts = []
        for batch in self._batches(checked):
            deadline.check("asking the model service")
            contents = [image.read() for image in batch]
            if project_type == DETECTION:
                results = self.models.detect(model_id, user_id, contents, threshold, deadline=deadline)
            else:
                results = self.models.classify(model_id, user_id, contents, deadline=deadline)
            if len(results) != len(batch):
                raise errors.Unavailable(f"the model service answered {len(results)} results for {len(batch)} images")
            for result in results:
                fact = self.model_facts(project_type, result)
                facts.append({**fact, "model_label": True, "is_train": review.model_label_checked(fact["score"], review_threshold)})
        return facts

    def _batches(self, checked: list[CheckedImage]) -> Iterator[list[CheckedImage]]:
        """Consecutive images of at most `predict_batch_bytes` together (at least one each), so a
        prediction request stays under gRPC's message limit."""
        batch, size = [], 0
        for image in checked:
            if batch and size + image.size > self.predict_batch_bytes:
                yield batch
                batch, size = [], 0
            batch.append(image)
            size += image.size
        if batch:
            yield batch

    def create_frames(self, user_id: int, project_id: int, frames: list[NewFrame]) -> list[dict]:
        """Stores images sent by another service, in order. Idempotent on (video id, frame index):
        frames stored before (a retried batch) are returned, not stored again."""
        project = self._project(project_id, user_id)
        wanted = [_frame_key(frame) for frame in frames]
        existing = self._existing_frames(frames)
        todo, seen = [], set(existing)
        for position, (frame, key) in enumerate(zip(frames, wanted), 1):
            if key is None or key not in seen:
                todo.append((position, frame))
                if key is not None:
                    seen.add(key)
        review_threshold = review.project_threshold(project)
        facts = [_frame_facts(project.type, frame, position, self.detection_filing, review_threshold) for position, frame in todo]
        # Frames come from the video worker, an internal peer: checked cheaply (`check_frame`).
        checked = [check_frame(frame.content, frame.title or _frame_title(frame), self.limits, position) for position, frame in todo]
        created, _ = self._create(project, checked, facts, frames=True)
        by_key = {**existing, **{(doc["video"], doc["frame_index"]): doc for doc in created if doc.get("video")}}
        uploads = iter(doc for doc in created if not doc.get("video"))
        docs = [next(uploads) if key is None else by_key.get(key) for key in wanted]
        return self.present_all([doc for doc in docs if doc is not None])

    def _existing_frames(self, frames: list[NewFrame]) -> dict[tuple[int, int], dict]:
        by_video: dict[int, list[int]] = {}
        for frame in frames:
            if frame.video_id:
                by_video.setdefault(frame.video_id, []).append(frame.frame_index)
        found = {}
        for video_id, indexes in by_video.items():
            for doc in self.repository.find_frames(video_id, indexes):
                found[(doc["video"], doc["frame_index"])] = doc
        return found

    def import_images(self, project, checked: list[CheckedImage], facts: list[dict]) -> tuple[list[dict], int]:
        """Stores images of a dataset import (`facts`: tag, detections, is_train of each), with
        the rules of uploads; returns their documents and how many were new to the project."""
        by_image = {id(image): fact for image, fact in zip(checked, facts)}
        return self._create_uploads(project, checked, lambda new: [by_image[id(image)] for image in new])

    def _create_uploads(self, project, checked: list[CheckedImage],
                        facts_of: Callable[[list[CheckedImage]], list[dict]], *,
                        deadline: Deadline = NONE) -> tuple[list[dict], int]:
        """The documents of uploaded files, in order, and how many were stored now: an image
        whose bytes the project already holds (or that came earlier in the same request) is
        answered as the stored image, not stored again and not predicted again; `facts_of` gives
        the tags of the new ones."""
        known = self.repository.find_by_sha256(project.id, sorted({image.sha256 for image in checked}))
        new: dict[str, CheckedImage] = {}
        for image in checked:
            if image.sha256 not in known:
                new.setdefault(image.sha256, image)
        fresh = list(new.values())
        created, stored = self._create(project, fresh, facts_of(fresh) if fresh else [], deadline=deadline)
        by_digest = {**known, **{doc["sha256"]: doc for doc in created}}
        return [by_digest[image.sha256] for image in checked], stored

    def _create(self, project, checked: list[CheckedImage], facts: list[dict], *,
                frames: bool = False, deadline: Deadline = NONE) -> tuple[list[dict], int]:
        """Allocates ids, writes bytes, inserts the metadata; on failure removes what it wrote.
        Documents whose (video, frame) (with `frames`) or whose bytes (uploads) a concurrent
        request stored first are dropped with their objects, and the stored ones returned instead.
        Returns the documents and how many of them this call stored. Once the caller stopped
        waiting (`deadline`), stores nothing: checked before the first write and again before the
        metadata, which is what makes the images exist."""
        if not checked:
            return [], 0
        self._still_wanted(project, len(checked), deadline)
        ids = self.repository.reserve_ids(len(checked))
        now = mongo.utc_now()
        docs = [_new_doc(image_id, project, image, fact, now, distinct_bytes=not frames)
                for image_id, image, fact in zip(ids, checked, facts)]
        written: list[str] = []
        try:
            for doc, image in zip(docs, checked):
                image.stream.seek(0)
                self._put(doc, image)
                written.append(doc["key"])
            self._still_wanted(project, len(checked), deadline)
            insert = self.repository.insert_frames if frames else self.repository.insert_uploads
            duplicates = insert(docs)
        except BaseException:
            self._undo([doc["_id"] for doc in docs], written)
            raise
        if not duplicates:
            return docs, len(docs)
        lost = [doc for doc in docs if doc["_id"] in duplicates]
        self._remove_objects([doc["key"] for doc in lost])
        kept = [doc for doc in docs if doc["_id"] not in duplicates]
        if frames:
            return kept + list(self._existing_frames_of(lost).values()), len(kept)
        return kept + list(self.repository.find_by_sha256(project.id, [doc["sha256"] for doc in lost]).values()), len(kept)

    @staticmethod
    def _still_wanted(project, count: int, deadline: Deadline) -> None:
        why = deadline.left()
        if why:
            log.warning("project %s: not storing %d images: %s", project.id, count, why)
            raise errors.DeadlineExceeded(f"the images were not stored: {why}")

    def _existing_frames_of(self, docs: list[dict]) -> dict:
        frames = [NewFrame(b"", video_id=doc["video"], frame_index=doc["frame_index"]) for doc in docs]
        return self._existing_frames(frames)

    def _put(self, doc: dict, image: CheckedImage) -> None:
        self.store.put_stream(doc["key"], image.stream, doc["content_type"])

    def _undo(self, ids: list[int], keys: list[str]) -> None:
        """Best effort: removes the documents and objects of a failed create."""
        try:
            self.repository.delete_ids(ids)
        except Exception:  # noqa: BLE001 - the original failure is the one to report
            log.exception("could not remove the documents of a failed upload: %s", ids)
        self._remove_objects(keys)

    def _remove_objects(self, keys: list[str]) -> None:
        for key in keys:
            try:
                self.store.delete(key)
            except Exception:  # noqa: BLE001 - an orphan object is logged, the request goes on
                log.exception("could not remove object %s", key)

    # ---- changing tags ---------------------------------------------------------------------

    def retag(self, user_id: int, image_id: int, new_tag: str, project_id: int | None = None) -> dict:
        """Moves one image to another tag; a person chose it, so it is checked."""
        return self.change_labels(user_id, image_id, LabelChanges(tag=new_tag), project_id)

    def change_labels(self, user_id: int, image_id: int, changes: LabelChanges, project_id: int | None = None) -> dict:
        """A person's tag, boxes or checked state for one image, written in one update; a new
        tag or new boxes check the image unless `changes.checked` says otherwise. New boxes
        replace the old ones (without scores: a person drew them, so the image's own score
        goes too); a bad box (named in the message) changes nothing. The tag stays unless a
        new one is given."""
        if changes.tag is None and changes.detections is None and changes.checked is None:
            raise errors.InvalidArgument("nothing to change: give type (a new tag), detections or checked", code="no_changes")
        update: dict = {"is_train": True if changes.checked is None else changes.checked}
        if update["is_train"] or changes.tag is not None or changes.detections is not None:
            update["model_label"] = False  # a person's now: re-labelling leaves it alone
        if changes.tag is not None:
            update["tag"] = normalize_tag(changes.tag)
        doc = self._owned(image_id, user_id, project_id)
        if changes.detections is not None:
            project = self._project(doc["project"], user_id)
            if project.type != DETECTION:
                raise errors.InvalidArgument(f"image {image_id} is in a {project.type} project, which has no boxes",
                                             code="not_a_detection_project")
            width, height = self._size(doc)
            update["detections"] = detections_mod.person_boxes(changes.detections, width, height)
            update["score"] = None
        changed = self.repository.change_labels(image_id, update)
        if changed is None:
            raise errors.NotFound(f"image {image_id} not found")
        return self.present(changed)

    def _size(self, doc: dict) -> tuple[int, int]:
        """An image's pixels; read from its bytes for images stored before sizes were kept."""
        if doc.get("width") and doc.get("height"):
            return doc["width"], doc["height"]
        image = check_bytes(self.store.get_bytes(doc["key"]), doc.get("title") or "image", self.limits)
        return image.width, image.height

    def rename_tag(self, user_id: int, project_id: int, old_tag: str, new_tag: str, page: Page = Page()) -> list[dict]:
        """Moves every image of `old_tag` to `new_tag` (merging when it exists) with one metadata
        update; answers the images now tagged `new_tag`."""
        old, new = normalize_tag(old_tag), normalize_tag(new_tag)
        if old == new:
            raise errors.NotAcceptable(f"the tag is already {new!r}", code="same_tag")
        self._project(project_id, user_id)
        if self.repository.rename_tag(project_id, old, new) == 0:
            raise errors.NotFound(f"no images tagged {old!r} in project {project_id}")
        return self.list_images(user_id, project_id, tag=new, page=page)

    # ---- deleting --------------------------------------------------------------------------

    def delete_image(self, user_id: int, image_id: int, project_id: int | None = None) -> None:
        # A delete that stopped half-way left the image hidden; its retry finishes the job.
        self._owned(image_id, user_id, project_id, deleting_too=True)
        self._delete(image_id=image_id)

    def delete_tag(self, user_id: int, project_id: int, tag: str) -> int:
        tag = normalize_tag(tag)
        self._project(project_id, user_id)
        return self._delete(project_id=project_id, tag=tag)

    def delete_all(self, user_id: int, project_id: int) -> int:
        self._project(project_id, user_id)
        return self._delete(project_id=project_id)

    def delete_by_video(self, video_id: int, project_id: int | None = None) -> int:
        """A video's frames (in `project_id` when given), for the video service. Idempotent."""
        _require_id("video_id", video_id)
        return self._delete(video_id=video_id, project_id=project_id or None)

    def delete_project_data(self, project_id: int) -> int:
        """Every image of a project being deleted, and any object left under its prefix by an
        upload that crashed between writing bytes and metadata. Idempotent."""
        _require_id("project_id", project_id)
        for hook in self.on_project_delete:
            hook(project_id)
        deleted = self._delete(project_id=project_id)
        leftovers = self.store.delete_prefix(project_prefix(project_id))
        # The project's dataset zips (their records expire and are swept on their own).
        self.store.delete_prefix(f"exports/{project_id}/")
        self.store.delete_prefix(f"imports/{project_id}/")
        if leftovers:
            log.info("project %s: removed %s objects without metadata", project_id, leftovers)
        return deleted

    def finish_pending_deletes(self) -> int:
        """Completes deletes that stopped half-way; returns how many images it removed."""
        return self._finish(self.repository.pending_deletes())

    def _delete(self, **criteria) -> int:
        return self._finish(self.repository.mark_deleting(**criteria))

    def _finish(self, doomed: list[dict]) -> int:
        for doc in doomed:
            self.store.delete(doc["key"])
        self.repository.delete_ids([doc["_id"] for doc in doomed])
        return len(doomed)


def _require_id(name: str, value) -> None:
    if not isinstance(value, int) or value <= 0:
        raise errors.InvalidArgument(f"{name} must be a positive integer, got {value!r}")


def _frame_key(frame: NewFrame) -> tuple[int, int] | None:
    return (frame.video_id, frame.frame_index) if frame.video_id else None


def _frame_title(frame: NewFrame) -> str:
    return f"video {frame.video_id} frame {frame.frame_index}" if frame.video_id else "image"


def _frame_facts(project_type: str, frame: NewFrame, position: int, filing: str, review_threshold: float) -> dict:
    """Tag, score, detections and checked state of a frame; a Detection frame without a tag is
    filed as `filing` says (see `detections.filed_under`). Unless its sender says whether it is
    checked: a tag without a score is a person's (checked, as the proto's `score` says); else the
    label is the model's, checked when its score reaches `review_threshold`."""
    facts = {"video": frame.video_id or None, "frame_index": frame.frame_index if frame.video_id else None,
             "timestamp_ms": frame.timestamp_ms if frame.video_id else None,
             "score": None if frame.score is None else detection_forms.as_score(frame.score)}
    if project_type == DETECTION:
        facts["detections"] = list(frame.detections)
    if frame.tag.strip():
        facts["tag"] = tag_from_label(frame.tag)
    elif project_type == DETECTION:
        facts["tag"], best_score = detections_mod.filed_under(facts["detections"], filing)
        if facts["score"] is None:
            facts["score"] = best_score
    else:
        raise errors.InvalidArgument(f"image {position} has no tag", code="invalid_tag")
    if frame.is_train is not None:
        facts["is_train"] = frame.is_train
    elif frame.tag.strip() and frame.score is None:
        facts["is_train"] = True
    else:
        facts["is_train"] = review.model_label_checked(facts["score"], review_threshold)
        facts["model_label"] = True
    return facts


def _classified(result) -> dict:
    return {"tag": tag_from_label(result.label), "score": detection_forms.as_score(result.score)}


def _detected(result, filing: str) -> dict:
    found = detection_forms.from_boxes(result.boxes)
    tag, score = detections_mod.filed_under(found, filing)
    return {"tag": tag, "score": score, "detections": found}


def _new_doc(image_id: int, project, image: CheckedImage, facts: dict, now, *, distinct_bytes: bool = False) -> dict:
    detections = facts.get("detections")
    if project.type == DETECTION and detections is None:
        detections = []
    doc = {
        "_id": image_id,
        "project": project.id,
        "user": project.user_id,
        "tag": facts["tag"],
        "title": image.title,
        "description": "",
        "key": f"{project_prefix(project.id)}{image_id}.{image.extension}",
        "content_type": image.content_type,
        "size": image.size,
        "sha256": image.sha256,
        "phash": image.phash,
        "width": image.width,
        "height": image.height,
        "video": facts.get("video"),
        "frame_index": facts.get("frame_index"),
        "timestamp_ms": facts.get("timestamp_ms"),
        "score": facts.get("score"),
        "detections": detections if project.type == DETECTION else None,
        "is_train": facts.get("is_train", True),
        "create_time": now,
    }
    if facts.get("model_label"):
        doc["model_label"] = True  # the label is a model's (re-labelling may replace it)
    if distinct_bytes:
        doc["distinct_bytes"] = True
    return doc
