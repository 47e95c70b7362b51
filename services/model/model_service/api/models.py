"""`/models` routes, as the original API had them (API.md, section 3)."""
from flask import Response, request
from flask_restx import Namespace, Resource, fields, reqparse

from mlstudio.common import ids, media_files
from mlstudio.common.http_app import caller
from mlstudio.common.vocabulary import MODEL_STATUSES, MODEL_TYPES

from ..uploads import Upload
from . import evaluations

MODEL_FIELDS = {
    "id": fields.Integer(example=5),
    "title": fields.String(example="bottles v2"),
    "location": fields.String(example="models/5/model.zip", description="object-storage key of the uploaded model file"),
    "label_location": fields.String(example="models/5/labels.txt", description="object-storage key of the label file"),
    "description": fields.String(example="trained on the bottle frames"),
    "url": fields.String(example="/files/models/5?expires=1796162400&signature=8b1d0e...", description="signed URL of the model file (null until the model is Trained)"),
    "type": fields.String(enum=list(MODEL_TYPES)),
    "user": fields.Integer(example=1, description="owner's user id"),
    "project": fields.Integer(example=1, description="project id"),
    "isPublic": fields.Boolean(example=False),
    "create_time": fields.String(example="2026-12-01T19:46:17.618Z", description="ISO 8601 UTC"),
    "status": fields.String(enum=list(MODEL_STATUSES)),
    "labels": fields.List(fields.String, example=["bottle", "no bottle"], description="class names in index order"),
    "input_shape": fields.List(fields.Integer, example=[64, 64, 3], description="height, width, channels"),
    "preprocessing": fields.String(enum=["raw", "unit", "symmetric"]),
    "version": fields.Integer(example=1),
    "metrics": fields.Raw(example={"accuracy": 0.97, "loss": 0.09, "val_accuracy": 0.95, "val_loss": 0.14}, description="trained models: accuracy, loss, val_accuracy, val_loss (and what a script returned)"),
    "error": fields.String(example="the uploaded file is neither a SavedModel nor a Keras model"),
    "progress": fields.Raw(example={"epoch": 10, "epochs": 10, "metrics": {"accuracy": 0.97, "loss": 0.09}}, description="trained models: {epoch, epochs, metrics} of the training (null for uploads)"),
    "training": fields.Raw(example={"params": {"epochs": 10, "batch_size": 32}, "script": False}, description="trained models: {params, script}, the training's parameters and whether a script was uploaded"),
    "builtin": fields.Boolean(example=False, description="true for the studio's built-in pretrained models: public, owned by no user (user 0), never deleted"),
    "threshold": fields.Float(example=0.5, description="Detection: the score a detection needs when a Detect call names none "
                                          "(null: 0.5); /images/predict and videos use the project's threshold instead"),
}
LIST_PARAMS = {
    "user_id": "the caller's user id (must match the token)",
    "project_id": "the project whose models (plus public ones of its type) to list",
}
UPLOAD_PARAMS = {**LIST_PARAMS, "method": {"description": "upload (a trained model) or create (train one from the project's tagged images)",
                                            "in": "query", "type": "string", "enum": ["upload", "create"], "required": True}}
UPLOAD_FORM = reqparse.RequestParser()
UPLOAD_FORM.add_argument("title", location="form", required=True)
UPLOAD_FORM.add_argument("description", location="form")
UPLOAD_FORM.add_argument("type", location="form", help="Classification or Detection (default: the project's)")
UPLOAD_FORM.add_argument("preprocessing", location="form", help="raw (default), unit or symmetric")
UPLOAD_FORM.add_argument("isPublic", location="form", help="true: every user may list and use it")
UPLOAD_FORM.add_argument("files", location="files", type="file", action="append",
                         help="upload: twice, files[0] the model (.h5, .keras or zipped SavedModel), files[1] the label file; "
                              "create: optional, files[0] a Python training script (without it the built-in recipe trains)")
for _name, _help in (
    ("epochs", "create: most epochs (1-500, default 10)"),
    ("image_size", "create: the model's input height and width in pixels (16-512, default 64)"),
    ("batch_size", "create: images per training step (1-512, default 16)"),
    ("validation_split", "create: share of the images kept for validation (0-0.5, default 0.2)"),
    ("learning_rate", "create: Adam's learning rate (default 0.001)"),
    ("patience", "create: epochs without improvement before early stopping (default 3)"),
    ("seed", "create: random seed (default 1337)"),
    ("time_limit_s", "create: wall-clock limit of the training in seconds (default and maximum set by the server)"),
):
    UPLOAD_FORM.add_argument(_name, location="form", help=_help)


def uploaded_files() -> list[Upload]:
    """The multipart files in order: `files` twice (the original's form), or `files[0]`, `files[1]`."""
    items = request.files.getlist("files")
    if not items:
        items = [request.files[name] for name in ("files[0]", "files[1]") if name in request.files]
    return [Upload(item.filename or "", item.stream) for item in items]


def register_routes(api, core, settings):
    # A namespace per app: a namespace binds to the app it is added to.
    ns = Namespace("models", path="/models", description="Uploaded models, served by TensorFlow Serving")
    model_model = ns.model("Model", MODEL_FIELDS)
    created_model = ns.clone("CreatedModel", model_model,
                             {"message": fields.String(example="success", description='"success" (method=create; the original UI tests for it)')})

    def who(model_id: int | None = None) -> int:
        """The caller; on a route naming a model, legacy mode's requests without a user act for its owner."""
        return caller(settings.auth_required, None if model_id is None else lambda: core.owner(model_id))

    @ns.route("/all")
    class Models(Resource):
        @ns.doc(params=LIST_PARAMS)
        @ns.marshal_list_with(model_model)
        def get(self):
            """List the project's models of the caller, plus public models, of the project's type."""
            user = who()
            project_id = ids.parse_id("project_id", request.args.get("project_id"))
            return core.list(user, project_id)

        @ns.doc(params=UPLOAD_PARAMS)
        @ns.expect(UPLOAD_FORM)
        @ns.response(201, "Created: the model is Trained (served), or Pending (method=create: training queued, "
                          "with message \"success\")", created_model)
        def post(self):
            """Upload a model and its label file (method=upload, answered once served), or train one (method=create, answered at once, Pending)."""
            user = who()
            project_id = ids.parse_id("project_id", request.args.get("project_id"), required=False)
            method = (request.args.get("method") or "").strip().lower()
            created = ns.marshal(core.create(user, project_id, method, request.form.to_dict(), uploaded_files()), model_model)
            if method == "create":
                # The original UI shows "Failed" for a training whose answer does not say success.
                created["message"] = "success"
            return created, 201

    @ns.route("/<int:model_id>")
    @ns.doc(params={"user_id": "optional: the caller (must match the token); in legacy mode, without it the request "
                               "acts for the model's owner"})
    class Model(Resource):
        @ns.marshal_with(model_model)
        def get(self, model_id):
            """Get one model (yours, or a public one)."""
            return core.get(model_id, who(model_id))

        def delete(self, model_id):
            """Delete the model: it stops being served and its files go."""
            core.delete(model_id, who(model_id))
            return {"message": "success"}

    @ns.route("/<int:model_id>/logs")
    class ModelLogs(Resource):
        @ns.produces(["text/plain"])
        def get(self, model_id):
            """The training's output (its last part), for the model's owner."""
            text = core.training_log(model_id, who(model_id))
            return Response(text, mimetype="text/plain", headers={"Cache-Control": "no-store"})

    @ns.route("/<int:model_id>/cancel")
    class ModelCancel(Resource):
        @ns.marshal_with(model_model)
        def post(self, model_id):
            """Stop the model's training (queued: at once; running: within moments). It ends Failed, "the training was cancelled"."""
            return core.cancel_training(model_id, who(model_id))

    @ns.route("/<int:model_id>/file")
    @ns.doc(params={"expires": "from the signed URL", "signature": "from the signed URL"})
    class ModelFile(Resource):
        def get(self, model_id):
            """Download the uploaded model file (signed URL, no token needed)."""
            media = core.model_file(model_id, request.args.get("expires"), request.args.get("signature"))
            return media_files.media_response(media, lambda start, length: core.read_model_file(media, start, length))

    evaluations.add_routes(ns, core, who)
    api.add_namespace(ns)
