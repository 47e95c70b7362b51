"""`/videos` routes, as the original API had them, plus the signed media route for playback."""
from flask import request
from flask_restx import Namespace, Resource, fields

from mlstudio.common import detections as detection_forms, ids, media_files
from mlstudio.common.http_app import caller
from mlstudio.common.vocabulary import PROJECT_TYPES

from ..core import UploadedFile
from ..upload_form import upload_options
from .multipart import SpooledUpload

user_params = {"user_id": "the caller's user id (must match the token)", "project_id": "the project"}


def build_namespace(core, settings) -> Namespace:
    ns = Namespace("videos", path="/videos", description="Videos split into auto-labelled frames")
    progress = ns.model("Progress", {"done": fields.Integer(example=60, description="frames labelled and stored"),
                                     "total": fields.Integer(example=119, description="frames expected (an estimate until done)")})
    waiting = ns.model("Waiting", {
        "reason": fields.String(example="the model service is unavailable: connection refused", description="the service the processing waits for, and what it answered"),
        "since": fields.String(example="2026-12-01T19:46:17.618Z", description="ISO 8601 UTC: when the wait began (it ends with the next progress)"),
        "retry_at": fields.String(example="2026-12-01T19:46:27.618Z", description="ISO 8601 UTC: the next try"),
    })
    video = ns.model("Video", {
        "id": fields.Integer(example=3),
        "title": fields.String(example="bottle-detection.mp4"),
        "description": fields.String(example=""),
        "url": fields.String(example="/files/videos/3?expires=1796162400&signature=c07e41...", description="signed URL of the video file; plays in a browser, honours Range"),
        "type": fields.String(description="the project's type", enum=list(PROJECT_TYPES)),
        "user": fields.Integer(example=1, description="owner's user id"),
        "project": fields.Integer(example=1),
        "create_time": fields.String(example="2026-12-01T19:46:17.618Z", description="ISO 8601 UTC"),
        "submittedAt": fields.String(example="2026-12-01T19:46:17.618Z", description="the upload time, ISO 8601 UTC (the original UI's name for create_time)"),
        "status": fields.String(enum=["queued", "processing", "done", "failed"]),
        "progress": fields.Nested(progress),
        "frame_count": fields.Integer(example=1189, description="frames in the video (the container's estimate until decoded)"),
        "fps": fields.Float(example=29.97),
        "interval": fields.Integer(example=10, description="every interval-th frame is sampled (null when sampling by time)"),
        "interval_ms": fields.Integer(example=500, description="one frame per interval_ms milliseconds (null when sampling by count)"),
        "dedupe": fields.Boolean(example=False, description="sampled frames nearly identical to the last one kept are skipped"),
        "duplicates_skipped": fields.Integer(example=0, description="with dedupe: sampled frames skipped so far as near-duplicates; else null"),
        "model": fields.Integer(example=5, description="the model that labels the frames"),
        "error": fields.String(example="the video is damaged: its frames end at frame 812 of 1189", description="why processing failed, for a person"),
        "waiting": fields.Nested(waiting, allow_null=True, description="set while processing waits for a service that is down (no attempt is used up); null otherwise"),
        "content_type": fields.String(example="video/mp4"),
        "size": fields.Integer(example=2312044, description="bytes"),
        "width": fields.Integer(example=640),
        "height": fields.Integer(example=360),
    })
    video_with_images = ns.model("VideoWithImages", {
        "video": fields.Nested(video),
        "images": fields.List(fields.Raw, example=[{"id": 81234, "title": "frame_000120.jpg", "type": "bottle", "frame_index": 120}],
                              description="the Images made from the video's frames, in frame order"),
    })
    upload_parser = ns.parser()
    upload_parser.add_argument("file", location="files", type="file", required=True, help="the video")
    upload_parser.add_argument("model_id", location="form", type=int, required=True, help="model that labels the frames")
    upload_parser.add_argument("interval", location="form", type=int, help=f"sample every N-th frame (default {settings.default_interval})")
    upload_parser.add_argument("interval_ms", location="form", type=int, help="sample one frame every N ms instead")
    upload_parser.add_argument("threshold", location="form", type=float, help=detection_forms.THRESHOLD_HELP)
    upload_parser.add_argument("wait", location="form", type=bool, help="answer only when processing ends (bounded)")
    upload_parser.add_argument("dedupe", location="form", type=bool,
                               help="skip sampled frames nearly identical to the last one kept (perceptual hash)")

    def who(video_id: int | None = None) -> int:
        """The caller; on a route naming a video, legacy mode's requests without a user act for its owner."""
        return caller(settings.auth_required, None if video_id is None else lambda: core.owner(video_id))

    def project_param() -> int:
        return ids.parse_id("project_id", request.args.get("project_id"))

    @ns.route("/all")
    @ns.doc(params=user_params)
    class Videos(Resource):
        @ns.marshal_list_with(video)
        def get(self):
            """List the project's videos with their processing state."""
            return core.list(who(), project_param())

        @ns.expect(upload_parser)
        @ns.response(202, "Queued (or, with wait, finished)", video_with_images)
        def post(self):
            """Upload a video (multipart: file, model_id, interval or interval_ms, wait); its frames
            are labelled in the background."""
            user_id, project_id = who(), project_param()
            core.check_project(project_id, user_id)
            with SpooledUpload(settings.tmp_dir) as spooled:
                spooled.read(settings.max_upload_bytes)
                fields_ = {**spooled.fields, **({"wait": request.args["wait"]} if "wait" in request.args else {})}
                options = upload_options(fields_, spooled.filename, settings.default_interval)
                answer = core.upload(user_id, project_id, options, UploadedFile(spooled.path, spooled.filename, spooled.content_type))
            if options.wait:
                answer = core.wait_for(answer["video"]["id"], user_id)
            finished = answer["video"]["status"] in ("done", "failed")
            return answer, 200 if finished else 202

    @ns.route("/<int:video_id>")
    @ns.doc(params={"user_id": "optional: the caller (must match the token); in legacy mode, without it the request "
                               "acts for the video's owner"})
    class Video(Resource):
        @ns.response(200, "The video and its images", video_with_images)
        def get(self, video_id):
            """The video's current state and the images made from it so far."""
            return core.get_with_images(video_id, who(video_id))

        def delete(self, video_id):
            """Delete the video, its file and its images (stopping its processing first)."""
            core.delete(video_id, who(video_id))
            return {"message": "success"}

    @ns.route("/<int:video_id>/file")
    @ns.doc(security=[], params={"expires": "signature expiry (Unix seconds)", "signature": "HMAC of path and expiry"})
    class VideoFile(Resource):
        @ns.response(206, "Partial content (Range)")
        @ns.response(416, "Range not satisfiable")
        def get(self, video_id):
            """The video's bytes, for a signed URL; honours Range so players can seek."""
            media = core.media_file(video_id, request.args.get("expires"), request.args.get("signature"))
            return media_files.media_response(media, lambda start, length: core.read_media(media, start, length))

    return ns
