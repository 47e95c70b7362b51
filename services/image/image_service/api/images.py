"""`/images` routes, as the original API had them, plus the signed media route.

Werkzeug matches static paths (`/images/all`, `/images/type`, `/images/predict`,
`/images/byVideo`) before `/images/<tag>`, and `/images/<int:id>` before `/images/<tag>` for
digits, whatever the order of declaration; the tag rules refuse those words as tags anyway.
"""
from flask import request
from flask_restx import Namespace, Resource, fields
from mlstudio.common import detections as detection_forms, errors, ids, media_files
from mlstudio.common.deadlines import Deadline
from mlstudio.common.http_app import body_fields, caller, json_response
from mlstudio.common.vocabulary import CLASSIFICATION

from ..core import LabelChanges, Page, Selection, sort_by_score
from ..uploads import UploadedFile

scope_params = {"user_id": "the caller's user id (must match the token)", "project_id": "the project (required)"}
page_params = {"limit": "at most this many images (default: all)", "offset": "skip this many first",
               "after_id": "only images after this id (the last id of the previous page): pages whose cost does "
                           "not grow with the depth; lists in id order only",
               "review": "true: only the images waiting for review (isTrain false: a model's label below the "
                         "project's review_threshold)",
               "sort": "score: lowest score first (images without a score first); id (default): oldest first, "
                       "a video's frames in order"}
model_param = {"in": "formData", "description": "the model (own or public, of the project's type)"}
upload_params = {"files": {"in": "formData", "type": "file", "description": "one or more images (JPEG, PNG, WebP, BMP)"}}


def declare_models(ns: Namespace):
    """The response shapes (Image, Tag, VideoImages), declared on `ns`: one namespace per app,
    so two apps (tests build several) never share routes. They document the routes; the routes
    answer `core.public_image`'s dicts as they are (`json_response`), which the tests check
    against these models (a field added to one must be added to the other)."""
    detection_model = ns.model("Detection", {
        "label": fields.String(example="bottle"),
        "score": fields.Float(example=0.91, description="the model's confidence; null for a box a person drew"),
        "box": fields.List(fields.Float, example=[12.0, 30.5, 118.0, 210.0], description="[x1, y1, x2, y2] in pixels"),
    })
    image_model = ns.model("Image", {
        "id": fields.Integer(example=81234),
        "title": fields.String(example="frame_000120.jpg", description="the uploaded file's name, or the frame's"),
        "location": fields.String(example="projects/1/images/81234.jpg", description="object-store key of the bytes (kept for compatibility)"),
        "description": fields.String(example=""),
        "url": fields.String(example="/files/images/81234?expires=1796162400&signature=3f9c2a...", description="signed, expiring URL of the bytes through the gateway; needs no token"),
        "type": fields.String(example="bottle", description="the tag"),
        "user": fields.Integer(example=1, description="owner's user id"),
        "project": fields.Integer(example=1),
        "isTrain": fields.Boolean(example=True, description="checked: a person gave or confirmed the label, or a model's score reached "
                                              "the project's review_threshold; false while waiting for review. Training "
                                              "uses checked images only (unless include_unchecked)"),
        "captions": fields.String(example=",bottle 0.91", description="Detection: ',<label> <score>' per object; else null"),
        "boxes": fields.String(example=",[12 30 118 210]", description="Detection: ',[<x1> <y1> <x2> <y2>]' per object; else null"),
        "video": fields.Integer(example=3, description="video the frame was cut from, or null"),
        "frame_index": fields.Integer(example=120),
        "timestamp_ms": fields.Integer(example=4000),
        "score": fields.Float(example=0.97, description="the model's confidence in the tag, when predicted"),
        "detections": fields.List(fields.Nested(detection_model), description="Detection projects; else null"),
        "content_type": fields.String(example="image/jpeg"),
        "width": fields.Integer(example=640),
        "height": fields.Integer(example=360),
        "create_time": fields.String(example="2026-12-01T19:46:17.618Z", description="ISO 8601 UTC"),
    })
    tag_model = ns.model("Tag", {
        "name": fields.String(example="bottle"),
        "count": fields.Integer(example=119),
        "avatarImage": fields.Nested(image_model, description="the tag's oldest image"),
    })
    video_images_model = ns.model("VideoImages", {
        "type": fields.String(example=CLASSIFICATION, description="the project's type: Classification or Detection"),
        "date": fields.List(fields.Nested(image_model), description="the original API's key"),
        "images": fields.List(fields.Nested(image_model), description="the same list"),
    })
    return image_model, tag_model, video_images_model


def declare_label_changes(ns: Namespace):
    """The body of `PUT /images/<id>` (a person's change to one image), declared on `ns`."""
    person_box_model = ns.model("PersonBox", {
        "label": fields.String(example="bottle", required=True, description="a valid tag (lower-cased like one)"),
        "box": fields.List(fields.Float, example=[12.0, 30.5, 118.0, 210.0], required=True, description="[x1, y1, x2, y2] in pixels, x1 < x2, y1 < y2, "
                                                                      "inside the image"),
    })
    label_changes_model = ns.model("LabelChanges", {
        "type": fields.String(example="bottle", description="a new tag (also accepted as a query parameter, as in the original)"),
        "detections": fields.List(fields.Nested(person_box_model), description="Detection projects: the image's boxes, "
                                  "replacing all of them (a person's boxes have no score)"),
        "checked": fields.Boolean(example=True, description="true confirms the current labels (leaves the review list); false sends "
                                              "the image back to review. Default with type or detections: true"),
    })
    return label_changes_model


def owner_param(resource: str) -> dict:
    return {"user_id": f"optional: the caller (must match the token); in legacy mode, without it the request acts "
                       f"for the {resource}'s owner"}


def flag(name: str, raw) -> bool | None:
    """A true/false parameter (JSON boolean or the words); None when absent or empty."""
    if raw is None or isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if not text:
        return None
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise errors.InvalidArgument(f"{name} must be true or false, got {raw!r}", code=f"invalid_{name}")


def selection() -> Selection:
    """A listing's `review` and `sort` query parameters."""
    return Selection(review=bool(flag("review", request.args.get("review"))), by_score=sort_by_score(request.args.get("sort")))


def label_changes() -> LabelChanges:
    """What `PUT /images/<id>` asks: `type` (query string, as the original, or body),
    `detections` (JSON body), `checked` (body or query string)."""
    body = body_fields()
    checked = body.get("checked", request.args.get("checked"))
    return LabelChanges(tag=request.args.get("type") or body.get("type") or None, detections=body.get("detections"),
                        checked=flag("checked", checked))


def page() -> Page:
    return Page(limit=ids.parse_int64("limit", request.args.get("limit"), required=False),
                offset=ids.parse_int64("offset", request.args.get("offset"), minimum=0, required=False) or 0,
                after_id=ids.parse_int64("after_id", request.args.get("after_id"), minimum=0, required=False))


def project_id() -> int:
    return ids.parse_id("project_id", request.args.get("project_id"))


def optional_project_id() -> int | None:
    return ids.parse_id("project_id", request.args.get("project_id"), required=False)


def new_tag() -> str:
    """The `type` parameter of a retag or rename (query string, as the original, or body)."""
    tag = request.args.get("type") or body_fields().get("type")
    if not tag:
        raise errors.InvalidArgument("query parameter type (the new tag) is required")
    return tag


def uploaded_files() -> list[UploadedFile]:
    """Every file part of the multipart body (`files`, `files[0]`, `files[]`, `file`, ...)."""
    return [UploadedFile(upload.filename or "", upload.stream) for _, upload in request.files.items(multi=True)]


def register_routes(api, core, settings):
    ns = Namespace("images", path="/images", description="A project's images, in tag collections")
    image_model, tag_model, video_images_model = declare_models(ns)
    label_changes_model = declare_label_changes(ns)

    def who(owner_of=None) -> int:
        """The caller; routes naming one image or video pass the look-up of its owner, for whom
        legacy mode's requests without a user act."""
        return caller(settings.auth_required, owner_of)

    @ns.route("/all")
    @ns.doc(params=scope_params)
    class AllImages(Resource):
        @ns.doc(params=page_params)
        @ns.response(200, "Success", [image_model])
        def get(self):
            """List all the project's images."""
            return json_response(core.list_images(who(), project_id(), page=page(), selection=selection()))

        def delete(self):
            """Delete all the project's images and their files."""
            core.delete_all(who(), project_id())
            return {"message": "success"}

    @ns.route("/type")
    @ns.doc(params=scope_params)
    class Tags(Resource):
        @ns.response(200, "Success", [tag_model])
        def get(self):
            """Each tag with its image count and an avatar image."""
            return json_response(core.tag_summary(who(), project_id()))

    @ns.route("/predict")
    @ns.doc(params={**scope_params, **upload_params, "model_id": model_param,
                    "threshold": {"in": "formData", "description": detection_forms.THRESHOLD_HELP}})
    class Predict(Resource):
        @ns.response(201, "Created", [image_model])
        def post(self):
            """Store images under the tags a model predicts, with scores (or detections)."""
            user, project = who(), project_id()
            model_id = ids.parse_id("model_id", request.form.get("model_id") or request.args.get("model_id"), where="parameter")
            threshold = detection_forms.threshold(request.form.get("threshold", request.args.get("threshold")))
            deadline = Deadline.of_wsgi(request.environ, settings.predict_deadline_s)
            return json_response(core.predict(user, project, model_id, uploaded_files(), threshold, deadline=deadline), 201)

    @ns.route("/byVideo", doc={"params": {"video_id": "the video"}})
    @ns.route("/byVideo/<int:video_id>")
    @ns.doc(params=owner_param("video"))
    class VideoImages(Resource):
        @ns.doc(params={**page_params, "after_id": "not for a video's images, which are in frame order"})
        @ns.response(200, "Success", video_images_model)
        def get(self, video_id=None):
            """The images made from a video, and the type of its project."""
            video_id = video_id or ids.parse_id("video_id", request.args.get("video_id"))
            return json_response(core.by_video(who(lambda: core.video_owner(video_id)), video_id, page=page(), selection=selection()))

    @ns.route("/<int:image_id>")
    @ns.doc(params={"project_id": "optional; when given, the image must belong to it", **owner_param("image")})
    class OneImage(Resource):
        @ns.response(200, "Success", image_model)
        def get(self, image_id):
            """Get one image."""
            return json_response(core.get(who(lambda: core.image_owner(image_id)), image_id, optional_project_id()))

        @ns.doc(params={"type": "the new tag", "checked": "true or false (see the body's checked)"})
        @ns.expect(label_changes_model)
        @ns.response(200, "Success", image_model)
        def put(self, image_id):
            """Change one image's labels: move it to another tag, replace its boxes, or confirm them (checked)."""
            return json_response(core.change_labels(who(lambda: core.image_owner(image_id)), image_id, label_changes(),
                                                    optional_project_id()))

        def delete(self, image_id):
            """Delete one image and its file."""
            core.delete_image(who(lambda: core.image_owner(image_id)), image_id, optional_project_id())
            return {"message": "success"}

    @ns.route("/<int:image_id>/file")
    @ns.doc(params={"expires": "from the signed URL", "signature": "from the signed URL"}, security=[])
    class ImageFile(Resource):
        def get(self, image_id):
            """The image's bytes, for a signed URL (no token needed)."""
            media = core.media(image_id, request.args.get("expires"), request.args.get("signature"))
            return media_files.media_response(media, lambda start, length: core.read_media(media, start, length))

    @ns.route("/<string:tag>")
    @ns.doc(params={**scope_params, "tag": "the tag (case-insensitive)"})
    class TagImages(Resource):
        @ns.doc(params=page_params)
        @ns.response(200, "Success", [image_model])
        def get(self, tag):
            """List the images of one tag."""
            return json_response(core.list_images(who(), project_id(), tag=tag, page=page(), selection=selection()))

        @ns.doc(params=upload_params)
        @ns.response(201, "Created", [image_model])
        def post(self, tag):
            """Upload images into a tag; all are checked before any is stored."""
            return json_response(core.upload(who(), project_id(), tag, uploaded_files()), 201)

        @ns.doc(params={"type": "the new tag (merged into when it exists)", **page_params})
        @ns.response(200, "Success", [image_model])
        def put(self, tag):
            """Rename a tag, or merge it into another; answers the images now under the new tag."""
            return json_response(core.rename_tag(who(), project_id(), tag, new_tag(), page=page()))

        def delete(self, tag):
            """Delete the images of one tag and their files."""
            core.delete_tag(who(), project_id(), tag)
            return {"message": "success"}

    api.add_namespace(ns)
