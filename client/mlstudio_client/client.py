"""`Client`: one typed method per public route of the ML Studio REST API (../shared/API.md),
over `requests`. Error answers raise `ApiError` subclasses carrying the API's message and code;
long operations (video splitting, training, evaluations, re-labelling, exports and imports) have
`follow_*` generators that yield each
state the API reports, which is what the command line's progress bars draw."""
from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import requests

from .errors import error_from_response
from .types import (Detection, Evaluation, Image, ImagesByVideo, Job, Login, Message, Model, Project, Relabel, Tag, User, Video,
                    VideoWithImages)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
VIDEO_DONE = ("done", "failed")
MODEL_DONE = ("Trained", "Failed")
JOB_DONE = ("done", "failed", "cancelled")  # exports, imports, re-labelling runs
EVALUATION_DONE = ("Done", "Failed")
DEFAULT_TIMEOUT_S = 60.0
# Uploads of models wait for TF Serving to load them, and `wait=true` videos for every frame.
UPLOAD_TIMEOUT_S = 600.0
DEFAULT_BATCH = 20  # images per request when uploading a folder (the API takes up to 100)


class NotLoggedIn(ValueError):
    """A call that needs the caller's user id, on a client that has neither logged in nor a token."""


def user_id_of(token: str) -> int | None:
    """The user a JWT names (`sub`), read without verifying it: the server verifies; the client
    only needs to know which `user_id` to send."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return int(claims["sub"])
    except (IndexError, ValueError, KeyError, TypeError):
        return None


class Client:
    """A session on the gateway. `token` and `user_id` come from `login`, or are given (a token
    alone is enough: the user id is read from it)."""

    def __init__(self, url: str, token: str | None = None, user_id: int | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 session: requests.Session | None = None):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = session or requests.Session()
        self.token = token
        self.user_id = user_id if user_id is not None else (user_id_of(token) if token else None)

    def __repr__(self) -> str:
        return f"Client({self.url!r}, user_id={self.user_id!r})"

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the transport --------------------------------------------------------------------

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, timeout_s: float | None = None,
                **kwargs) -> requests.Response:
        """One call; an error answer raises the matching `ApiError`."""
        headers = dict(kwargs.pop("headers", None) or {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        query = {key: value for key, value in (params or {}).items() if value is not None}
        response = self.session.request(method, self.url + path, params=query, headers=headers,
                                        timeout=timeout_s or self.timeout_s, **kwargs)
        if response.status_code >= 400:
            raise error_from_response(response)
        return response

    def _json(self, method: str, path: str, **kwargs) -> Any:
        return self.request(method, path, **kwargs).json()

    def _me(self, **extra) -> dict[str, Any]:
        if self.user_id is None:
            raise NotLoggedIn("not logged in: call login() first, or give a token")
        return {"user_id": self.user_id, **extra}

    def _in(self, project_id: int, **extra) -> dict[str, Any]:
        return self._me(project_id=project_id, **extra)

    # -- users ----------------------------------------------------------------------------

    def register(self, username: str, password: str, email: str) -> User:
        return self._json("POST", "/users/", json={"username": username, "password": password, "email": email})

    def login(self, username: str, password: str) -> Login:
        """Logs in; later calls carry the token."""
        answer: Login = self._json("POST", "/users/auth/", json={"username": username, "password": password})
        self.token, self.user_id = answer["token"], int(answer["user_id"])
        return answer

    # -- projects -------------------------------------------------------------------------

    def list_projects(self) -> list[Project]:
        return self._json("GET", "/projects/all", params=self._me())

    def create_project(self, title: str, type: str = "Classification", description: str = "", *,
                       threshold: float | None = None, review_threshold: float | None = None) -> Project:
        """`threshold`: the score (0, 1] a detection needs; `review_threshold`: the score (0 to 1) at
        which a model's label counts as checked. Omitted, the project's defaults apply."""
        body = {"title": title, "description": description, "type": type,
                **_given(threshold=threshold, review_threshold=review_threshold)}
        return self._json("POST", "/projects/all", params=self._me(), json=body)

    def get_project(self, project_id: int) -> Project:
        return self._json("GET", f"/projects/{project_id}")

    def update_project(self, project_id: int, description: str | None = None, *, title: str | None = None,
                       threshold: float | None = None, review_threshold: float | None = None) -> Project:
        """Changes what is given; a new `review_threshold` applies to labels filed afterwards."""
        changes = _given(description=description, title=title, threshold=threshold, review_threshold=review_threshold)
        if not changes:
            raise ValueError("nothing to change: give a description, title, threshold or review_threshold")
        return self._json("PUT", f"/projects/{project_id}", json=changes)

    def delete_project(self, project_id: int) -> Message:
        return self._json("DELETE", f"/projects/{project_id}")

    # -- images ---------------------------------------------------------------------------

    def list_images(self, project_id: int, tag: str | None = None, *, review: bool | None = None, sort: str | None = None,
                    limit: int | None = None, offset: int | None = None, after_id: int | None = None) -> list[Image]:
        """The project's images, or one tag's. `review`: only those waiting for review (a model's
        label under the project's `review_threshold`); `sort`: "score" (lowest first) or "id";
        `after_id`: the page after this id (the last of the previous page)."""
        return self._json("GET", f"/images/{tag or 'all'}", params=self._in(
            project_id, review=_flag(review), sort=sort, limit=limit, offset=offset, after_id=after_id))

    def review_list(self, project_id: int, tag: str | None = None, *, limit: int | None = None) -> list[Image]:
        """The images waiting for review, least sure first: what a person should look at next."""
        return self.list_images(project_id, tag, review=True, sort="score", limit=limit)

    def upload_images(self, project_id: int, tag: str, files: str | Path | Iterable[str | Path], *,
                      batch_size: int = DEFAULT_BATCH, on_progress: Callable[[int, int], None] | None = None) -> list[Image]:
        """Uploads images into a tag: a folder (its images, sorted by name, not recursing) or a list
        of files, `batch_size` per request. `on_progress(done, total)` after each batch."""
        paths = image_files(files)
        return self._post_images(f"/images/{tag}", self._in(project_id), {}, paths, batch_size, on_progress)

    def predict(self, project_id: int, model_id: int, files: str | Path | Iterable[str | Path], *,
                batch_size: int = DEFAULT_BATCH, on_progress: Callable[[int, int], None] | None = None) -> list[Image]:
        """Files images under the tags the model predicts (each with its `score`)."""
        paths = image_files(files)
        return self._post_images("/images/predict", self._in(project_id), {"model_id": str(model_id)}, paths, batch_size, on_progress)

    def _post_images(self, path, params, form, paths: list[Path], batch_size, on_progress) -> list[Image]:
        if not paths:
            raise ValueError("no images to upload (JPEG, PNG, WebP or BMP files)")
        made: list[Image] = []
        for start in range(0, len(paths), batch_size):
            with contextlib.ExitStack() as files:
                parts = [("files", (p.name, files.enter_context(p.open("rb")))) for p in paths[start:start + batch_size]]
                made += self._json("POST", path, params=params, data=form, files=parts, timeout_s=UPLOAD_TIMEOUT_S)
            if on_progress:
                on_progress(min(start + batch_size, len(paths)), len(paths))
        return made

    def delete_all_images(self, project_id: int) -> Message:
        return self._json("DELETE", "/images/all", params=self._in(project_id))

    def rename_tag(self, project_id: int, tag: str, new_tag: str) -> list[Image]:
        """Every image of `tag` moves to `new_tag` (merging into it if it exists)."""
        return self._json("PUT", f"/images/{tag}", params=self._in(project_id, type=new_tag))

    def delete_tag(self, project_id: int, tag: str) -> Message:
        return self._json("DELETE", f"/images/{tag}", params=self._in(project_id))

    def tags(self, project_id: int) -> list[Tag]:
        return self._json("GET", "/images/type", params=self._in(project_id))

    def images_by_video(self, video_id: int, *, review: bool | None = None, sort: str | None = None) -> ImagesByVideo:
        return self._json("GET", f"/images/byVideo/{video_id}", params={"review": _flag(review), "sort": sort})

    def get_image(self, image_id: int) -> Image:
        return self._json("GET", f"/images/{image_id}")

    def retag_image(self, image_id: int, tag: str) -> Image:
        return self._json("PUT", f"/images/{image_id}", params={"type": tag})

    def set_detections(self, image_id: int, detections: Iterable[Detection | Mapping[str, Any]]) -> Image:
        """Replaces a Detection image's boxes: `[{"label": ..., "box": [x1, y1, x2, y2]}]` (pixels; an
        empty list removes them); the image becomes checked."""
        return self.change_labels(image_id, detections=detections)

    def confirm_image(self, image_id: int, checked: bool = True) -> Image:
        """Confirms the image's current labels (off the review list); `checked=False` sends it back."""
        return self.change_labels(image_id, checked=checked)

    def change_labels(self, image_id: int, *, type: str | None = None, detections: Iterable[Mapping[str, Any]] | None = None,
                      checked: bool | None = None) -> Image:
        """One update of an image's labels: a new tag, new boxes and/or its checked state (a new tag or
        boxes check it unless `checked=False`)."""
        body = _given(type=type, checked=checked, detections=None if detections is None else [dict(d) for d in detections])
        if not body:
            raise ValueError("nothing to change: give a type, detections or checked")
        return self._json("PUT", f"/images/{image_id}", json=body)

    def delete_image(self, image_id: int) -> Message:
        return self._json("DELETE", f"/images/{image_id}")

    # -- videos ---------------------------------------------------------------------------

    def list_videos(self, project_id: int) -> list[Video]:
        return self._json("GET", "/videos/all", params=self._in(project_id))

    def upload_video(self, project_id: int, file: str | Path | BinaryIO, model_id: int, *, interval: int | None = None,
                     interval_ms: int | None = None, wait: bool = False) -> VideoWithImages:
        """Uploads a video whose frames the model labels; answers at once (`queued`) unless `wait`."""
        form = {"model_id": str(model_id)}
        if interval is not None:
            form["interval"] = str(interval)
        if interval_ms is not None:
            form["interval_ms"] = str(interval_ms)
        if wait:
            form["wait"] = "true"
        with _opened(file) as (name, stream):
            return self._json("POST", "/videos/all", params=self._in(project_id), data=form, files=[("file", (name, stream))],
                              timeout_s=UPLOAD_TIMEOUT_S)

    def get_video(self, video_id: int) -> VideoWithImages:
        return self._json("GET", f"/videos/{video_id}")

    def delete_video(self, video_id: int) -> Message:
        return self._json("DELETE", f"/videos/{video_id}")

    def follow_video(self, video_id: int, poll_s: float = 0.5, timeout_s: float | None = None) -> Iterator[Video]:
        """Yields the video's state (status, `progress` {done, total}) until `done` or `failed`."""
        return _follow(lambda: self.get_video(video_id)["video"], lambda v: v["status"] in VIDEO_DONE, poll_s, timeout_s)

    # -- models ---------------------------------------------------------------------------

    def list_models(self, project_id: int) -> list[Model]:
        return self._json("GET", "/models/all", params=self._in(project_id))

    def upload_model(self, project_id: int, model_file: str | Path, label_file: str | Path, *, title: str, type: str = "Classification",
                     description: str = "", preprocessing: str | None = None, is_public: bool = False) -> Model:
        """Uploads a model (`.h5`, `.keras` or a zipped SavedModel) and its labels; answers once served."""
        form = {"title": title, "description": description, "type": type, "isPublic": "true" if is_public else "false"}
        if preprocessing:
            form["preprocessing"] = preprocessing
        with _opened(model_file) as model, _opened(label_file) as labels:
            return self._json("POST", "/models/all", params=self._in(project_id, method="upload"), data=form,
                              files=[("files", model), ("files", labels)], timeout_s=UPLOAD_TIMEOUT_S)

    def train_model(self, project_id: int, *, title: str, script: str | Path | None = None, description: str = "",
                    type: str | None = None, **params: Any) -> Model:
        """Starts a training on the project's images (the built-in recipe, or `script`); `params`
        (epochs, ...) are sent as form fields. Answers at once, `Pending`."""
        form = {"title": title, "description": description, **({"type": type} if type else {}),
                **{key: str(value) for key, value in params.items()}}
        with contextlib.ExitStack() as stack:
            files = [("files", stack.enter_context(_opened(script)))] if script is not None else None
            return self._json("POST", "/models/all", params=self._in(project_id, method="create"), data=form, files=files,
                              timeout_s=UPLOAD_TIMEOUT_S)

    def get_model(self, model_id: int) -> Model:
        return self._json("GET", f"/models/{model_id}")

    def delete_model(self, model_id: int) -> Message:
        return self._json("DELETE", f"/models/{model_id}")

    def training_log(self, model_id: int) -> str:
        return self.request("GET", f"/models/{model_id}/logs").text

    def cancel_training(self, model_id: int) -> Model:
        return self._json("POST", f"/models/{model_id}/cancel")

    def follow_model(self, model_id: int, poll_s: float = 0.5, timeout_s: float | None = None) -> Iterator[Model]:
        """Yields the model's state (status, `progress` {epoch, epochs, metrics}) until Trained or Failed."""
        return _follow(lambda: self.get_model(model_id), lambda m: m["status"] in MODEL_DONE, poll_s, timeout_s)

    def model_evaluation(self, model_id: int, project_id: int | None = None) -> Evaluation:
        """The model's evaluation on a project's checked images, or without `project_id` on the images
        its training held out."""
        return self._json("GET", f"/models/{model_id}/evaluation", params={"project_id": project_id})

    def evaluate_model(self, model_id: int, project_id: int) -> Evaluation:
        """Starts evaluating a `Trained` model on a project's checked images; answers at once (`Pending`)."""
        return self._json("POST", f"/models/{model_id}/evaluate", params={"project_id": project_id})

    def follow_evaluation(self, model_id: int, project_id: int | None = None, poll_s: float = 0.5,
                          timeout_s: float | None = None) -> Iterator[Evaluation]:
        """Yields the evaluation's state (status, `progress` {done, total} images) until Done or Failed."""
        return _follow(lambda: self.model_evaluation(model_id, project_id), lambda e: e.get("status") in EVALUATION_DONE,
                       poll_s, timeout_s)

    def download_evaluation_chart(self, model_id: int, to: str | Path, project_id: int | None = None) -> Path:
        """Saves a finished evaluation's chart (PNG) to a file."""
        url = self.model_evaluation(model_id, project_id).get("chart_url")
        if not url:
            raise ValueError(f"model {model_id}'s evaluation has no chart yet (it has one once Done)")
        return self.download(url, to)

    # -- re-labelling a project's images with a model -------------------------------------

    def start_relabel(self, project_id: int, model_id: int, *, scope: str = "review", tag: str | None = None,
                      video_id: int | None = None, threshold: float | None = None) -> Relabel:
        """Runs a model over the images waiting for review (`scope="review"`), or every image whose
        label is a model's (`"all"`); a label a person gave or checked is never changed."""
        body = {"model_id": model_id, "scope": scope, **_given(tag=tag, video_id=video_id, threshold=threshold)}
        return self._json("POST", f"/projects/{project_id}/relabels", json=body)

    def list_relabels(self, project_id: int) -> list[Relabel]:
        return self._json("GET", f"/projects/{project_id}/relabels")

    def get_relabel(self, project_id: int, relabel_id: int) -> Relabel:
        return self._json("GET", f"/projects/{project_id}/relabels/{relabel_id}")

    def cancel_relabel(self, project_id: int, relabel_id: int) -> Relabel:
        """Stops a run at its next batch; what it wrote stays."""
        return self._json("POST", f"/projects/{project_id}/relabels/{relabel_id}/cancel")

    def follow_relabel(self, project_id: int, relabel_id: int, poll_s: float = 0.5, timeout_s: float | None = None) -> Iterator[Relabel]:
        return _follow(lambda: self.get_relabel(project_id, relabel_id), lambda j: j.get("status") in JOB_DONE, poll_s, timeout_s)

    # -- exports and imports of a project's dataset ---------------------------------------

    def start_export(self, project_id: int, format: str, **options: Any) -> Job:
        """Starts an export (imagenet, coco, yolo, voc, csv); follow it, then download its `url`."""
        return self._json("POST", f"/projects/{project_id}/exports", json={"format": format, **options})

    def list_exports(self, project_id: int) -> list[Job]:
        return self._json("GET", f"/projects/{project_id}/exports")

    def get_export(self, project_id: int, export_id: int) -> Job:
        return self._json("GET", f"/projects/{project_id}/exports/{export_id}")

    def follow_export(self, project_id: int, export_id: int, poll_s: float = 0.5, timeout_s: float | None = None) -> Iterator[Job]:
        return _follow(lambda: self.get_export(project_id, export_id), lambda j: j.get("status") in JOB_DONE, poll_s, timeout_s)

    def start_import(self, project_id: int, file: str | Path | BinaryIO) -> Job:
        with _opened(file) as part:
            return self._json("POST", f"/projects/{project_id}/imports", files=[("file", part)], timeout_s=UPLOAD_TIMEOUT_S)

    def list_imports(self, project_id: int) -> list[Job]:
        return self._json("GET", f"/projects/{project_id}/imports")

    def get_import(self, project_id: int, import_id: int) -> Job:
        return self._json("GET", f"/projects/{project_id}/imports/{import_id}")

    def follow_import(self, project_id: int, import_id: int, poll_s: float = 0.5, timeout_s: float | None = None) -> Iterator[Job]:
        return _follow(lambda: self.get_import(project_id, import_id), lambda j: j.get("status") in JOB_DONE, poll_s, timeout_s)

    def download(self, url: str, to: str | Path) -> Path:
        """Saves a signed `url` (an export's zip, a video, an image) to a file."""
        to = Path(to)
        with self.session.get(url, stream=True, timeout=self.timeout_s) as response:
            if response.status_code >= 400:
                raise error_from_response(response)
            with to.open("wb") as out:
                for chunk in response.iter_content(1 << 16):
                    out.write(chunk)
        return to


def image_files(files: str | Path | Iterable[str | Path]) -> list[Path]:
    """A folder's image files (sorted, not recursing), or the given files as they are."""
    if isinstance(files, (str, Path)):
        path = Path(files)
        if path.is_dir():
            return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        return [path]
    return [Path(p) for p in files]


def _given(**values: Any) -> dict[str, Any]:
    """The values that were given: an omitted option leaves the server's default or current value."""
    return {key: value for key, value in values.items() if value is not None}


def _flag(value: bool | None) -> str | None:
    return None if value is None else ("true" if value else "false")


@contextlib.contextmanager
def _opened(file: str | Path | BinaryIO):
    """A multipart part `(filename, stream)` for a path or an open binary file."""
    if isinstance(file, (str, Path)):
        with open(file, "rb") as stream:
            yield Path(file).name, stream
    else:
        yield Path(getattr(file, "name", "upload")).name, file


def _follow(fetch: Callable[[], Any], finished: Callable[[Any], bool], poll_s: float, timeout_s: float | None) -> Iterator[Any]:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        state = fetch()
        yield state
        if finished(state):
            return
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"still {state.get('status')} after {timeout_s} s")
        time.sleep(poll_s)
