"""`mlstudio`: the command line of the ML Studio API, on `Client`. Results are printed as JSON on
stdout (for people and for `jq`); progress and messages go to stderr. An error answer of the API
exits 1 with the API's own message and code; a video, training, evaluation or job that fails while
followed exits 1 with its `error`."""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click
import requests

from . import config
from .client import Client, NotLoggedIn, image_files
from .errors import ApiError, Unauthorized
from .progress import ProgressView


class Cli(click.Group):
    """Turns the client's exceptions into one line on stderr and exit status 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Unauthorized as error:
            raise click.ClickException(f"{error.message} ({error.code}); log in with `mlstudio login`") from None
        except NotLoggedIn:
            raise click.ClickException("not logged in: run `mlstudio login` (or set MLSTUDIO_TOKEN)") from None
        except ApiError as error:
            raise click.ClickException(f"{error.message} ({error.code})") from None
        except requests.ConnectionError:
            raise click.ClickException(f"cannot reach the API at {ctx.obj.url}: is it running? (--url or MLSTUDIO_URL)") from None
        except (ValueError, TimeoutError, OSError) as error:
            raise click.ClickException(str(error)) from None


class Session:
    """The profile (saved, or overridden) and the client made from it, on first use."""

    def __init__(self, url: str | None):
        self.profile = config.load()
        self.url = (url or self.profile.url).rstrip("/")
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.url, self.profile.token, self.profile.user_id)
        return self._client


def show(value) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


pass_client = click.make_pass_decorator(Session)


def with_client(command):
    """Hands the command the session's `Client` as its first argument."""
    @pass_client
    @functools.wraps(command)
    def wrapper(session: Session, *args, **kwargs):
        return command(session.client, *args, **kwargs)
    return wrapper


project_option = click.option("--project", "-p", "project_id", type=int, required=True, help="the project's id")
threshold_option = click.option("--threshold", type=float, help="Detection: the score (0, 1] a detection needs (default 0.4)")
review_threshold_option = click.option("--review-threshold", type=float,
                                       help="a model's label scoring at least this (0 to 1) is checked; below, it waits for review "
                                            "(default 0.8)")


@click.group(cls=Cli)
@click.option("--url", help="the gateway (default: the saved one, MLSTUDIO_URL, or http://127.0.0.1:8000)")
@click.version_option(package_name="mlstudio-client", message="%(version)s")
@click.pass_context
def cli(ctx, url):
    """ML Studio from the command line. Start with `mlstudio login`."""
    ctx.obj = Session(url)


# -- users ----------------------------------------------------------------------------------

@cli.command()
@click.option("--username", prompt=True)
@click.option("--email", prompt=True)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@with_client
def register(client: Client, username, email, password):
    """Create an account."""
    show(client.register(username, password, email))


@cli.command()
@click.option("--username", prompt=True)
@click.option("--password", prompt=True, hide_input=True)
@pass_client
def login(session: Session, username, password):
    """Log in and keep the token in the config file (never printed)."""
    answer = session.client.login(username, password)
    path = config.save(config.Profile(url=session.url, token=answer["token"], user_id=int(answer["user_id"]), username=answer["username"]))
    click.echo(f"logged in as {answer['username']} (user {answer['user_id']}) at {session.url}; token kept in {path}", err=True)


@cli.command()
def logout():
    """Forget the saved token."""
    config.clear()
    click.echo("logged out", err=True)


@cli.command()
@pass_client
def whoami(session: Session):
    """The gateway and the user of the saved token."""
    show({"url": session.url, "user_id": session.client.user_id, "username": session.profile.username,
          "logged_in": bool(session.profile.token)})


# -- projects -------------------------------------------------------------------------------

@cli.group(invoke_without_command=True)
@click.pass_context
def projects(ctx):
    """Your projects (without a subcommand: list them)."""
    if ctx.invoked_subcommand is None:
        show(ctx.obj.client.list_projects())


@projects.command("list")
@with_client
def projects_list(client: Client):
    """List your projects."""
    show(client.list_projects())


@projects.command("create")
@click.argument("title")
@click.option("--type", "type_", type=click.Choice(["Classification", "Detection"]), default="Classification", show_default=True)
@click.option("--description", default="")
@threshold_option
@review_threshold_option
@with_client
def projects_create(client: Client, title, type_, description, threshold, review_threshold):
    """Create a project."""
    show(client.create_project(title, type=type_, description=description, threshold=threshold, review_threshold=review_threshold))


@projects.command("show")
@click.argument("project_id", type=int)
@with_client
def projects_show(client: Client, project_id):
    """One project."""
    show(client.get_project(project_id))


@projects.command("update")
@click.argument("project_id", type=int)
@click.option("--description")
@click.option("--title")
@threshold_option
@review_threshold_option
@with_client
def projects_update(client: Client, project_id, description, title, threshold, review_threshold):
    """Change a project's description, title or settings (a new review threshold applies to labels filed afterwards)."""
    show(client.update_project(project_id, description, title=title, threshold=threshold, review_threshold=review_threshold))


@projects.command("delete")
@click.argument("project_id", type=int)
@with_client
def projects_delete(client: Client, project_id):
    """Delete a project with its videos, images and models."""
    show(client.delete_project(project_id))


# -- images ---------------------------------------------------------------------------------

@cli.group()
def images():
    """Images and their tags."""


def _upload_bar(name: str, unit: str):
    view = ProgressView(name, unit)
    return view, lambda done, total: view.update("uploading", done, total)


@images.command("upload")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--tag", "-t", required=True, help="the tag the images go under")
@project_option
@click.option("--batch", default=20, show_default=True, help="images per request")
@with_client
def images_upload(client: Client, paths, tag, project_id, batch):
    """Upload a folder's images (or image files) under a tag."""
    files = [f for path in paths for f in image_files(path)]
    view, on_progress = _upload_bar(f"images -> {tag}", "images")
    with view:
        show(client.upload_images(project_id, tag, files, batch_size=batch, on_progress=on_progress))


@images.command("list")
@project_option
@click.option("--tag", "-t", help="only this tag's images")
@click.option("--limit", type=int)
@click.option("--offset", type=int)
@click.option("--after-id", type=int, help="the page after this id (the last of the previous page)")
@click.option("--review", is_flag=True, default=None, help="only images waiting for review")
@click.option("--sort", type=click.Choice(["score", "id"]), help="score: lowest first; id: oldest first (the default)")
@with_client
def images_list(client: Client, project_id, tag, limit, offset, after_id, review, sort):
    """List the project's images (or a tag's)."""
    show(client.list_images(project_id, tag, limit=limit, offset=offset, after_id=after_id, review=review, sort=sort))


@images.command("review")
@project_option
@click.option("--tag", "-t", help="only this tag's images")
@click.option("--limit", type=int, default=20, show_default=True)
@with_client
def images_review(client: Client, project_id, tag, limit):
    """The images waiting for review (a model's label under the project's review threshold), least sure first."""
    show(client.review_list(project_id, tag, limit=limit))


@images.command("confirm")
@click.argument("image_ids", nargs=-1, type=int, required=True)
@click.option("--uncheck", is_flag=True, help="send the images back to review instead")
@with_client
def images_confirm(client: Client, image_ids, uncheck):
    """Confirm images' current labels: checked, off the review list, into the training set."""
    show([client.confirm_image(image_id, checked=not uncheck) for image_id in image_ids])


@images.command("boxes")
@click.argument("image_id", type=int)
@click.option("--box", "boxes", multiple=True, type=(str, float, float, float, float), metavar="LABEL X1 Y1 X2 Y2",
              help="a box in pixels (repeatable); the boxes given replace all the image's boxes")
@click.option("--clear", is_flag=True, help="remove every box")
@with_client
def images_boxes(client: Client, image_id, boxes, clear):
    """Replace a Detection image's boxes (the image becomes checked)."""
    if bool(boxes) == clear:
        raise click.UsageError("give --box LABEL X1 Y1 X2 Y2 (one or more), or --clear")
    show(client.set_detections(image_id, [{"label": label, "box": list(box)} for label, *box in boxes]))


@images.command("tags")
@project_option
@with_client
def images_tags(client: Client, project_id):
    """The project's tags with their counts."""
    show(client.tags(project_id))


@images.command("show")
@click.argument("image_id", type=int)
@with_client
def images_show(client: Client, image_id):
    """One image."""
    show(client.get_image(image_id))


@images.command("retag")
@click.argument("image_id", type=int)
@click.argument("tag")
@with_client
def images_retag(client: Client, image_id, tag):
    """Move one image to another tag."""
    show(client.retag_image(image_id, tag))


@images.command("rename-tag")
@project_option
@click.argument("tag")
@click.argument("new_tag")
@with_client
def images_rename_tag(client: Client, project_id, tag, new_tag):
    """Move every image of a tag to another (merging)."""
    show(client.rename_tag(project_id, tag, new_tag))


@images.command("delete-tag")
@project_option
@click.argument("tag")
@with_client
def images_delete_tag(client: Client, project_id, tag):
    """Delete a tag's images."""
    show(client.delete_tag(project_id, tag))


@images.command("delete")
@click.argument("image_id", type=int)
@with_client
def images_delete(client: Client, image_id):
    """Delete one image."""
    show(client.delete_image(image_id))


@images.command("delete-all")
@project_option
@click.confirmation_option(prompt="Delete every image of the project?")
@with_client
def images_delete_all(client: Client, project_id):
    """Delete every image of the project."""
    show(client.delete_all_images(project_id))


@images.command("by-video")
@click.argument("video_id", type=int)
@click.option("--review", is_flag=True, default=None, help="only frames waiting for review")
@click.option("--sort", type=click.Choice(["score", "id"]), help="score: lowest first; id: frame order (the default)")
@with_client
def images_by_video(client: Client, video_id, review, sort):
    """The images made from a video."""
    show(client.images_by_video(video_id, review=review, sort=sort))


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@project_option
@click.option("--model", "-m", "model_id", type=int, required=True)
@with_client
def predict(client: Client, paths, project_id, model_id):
    """File images (files or folders) under the tags a model predicts."""
    files = [f for path in paths for f in image_files(path)]
    view, on_progress = _upload_bar("predict", "images")
    with view:
        show(client.predict(project_id, model_id, files, on_progress=on_progress))


# -- videos ---------------------------------------------------------------------------------

@cli.group()
def videos():
    """Videos, split into labelled frames."""


def follow_video(client: Client, video: dict) -> dict:
    with ProgressView(f"video {video['id']}", "frames") as view:
        for video in _states(video, client.follow_video(video["id"])):
            progress = video.get("progress") or {}
            view.update(video["status"], progress.get("done", 0), progress.get("total"))
    if video["status"] == "failed":
        raise click.ClickException(f"video {video['id']} failed: {video.get('error')}")
    return video


def _states(first: dict, following):
    """The state the upload answered, then each one the API reports."""
    yield first
    yield from following


@videos.command("upload")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@project_option
@click.option("--model", "-m", "model_id", type=int, required=True, help="the model that labels the frames")
@click.option("--interval", type=int, help="label every N-th frame")
@click.option("--interval-ms", type=int, help="label one frame every N milliseconds instead")
@click.option("--follow", "-f", is_flag=True, help="show the splitting's progress until it ends")
@click.option("--wait", is_flag=True, help="answer only once every frame is done (the original's behaviour)")
@with_client
def videos_upload(client: Client, file, project_id, model_id, interval, interval_ms, follow, wait):
    """Upload a video; its frames are labelled in the background."""
    answer = client.upload_video(project_id, file, model_id, interval=interval, interval_ms=interval_ms, wait=wait)
    if follow:
        follow_video(client, answer["video"])
        answer = client.get_video(answer["video"]["id"])
    show(answer)


@videos.command("follow")
@click.argument("video_id", type=int)
@with_client
def videos_follow(client: Client, video_id):
    """Show a video's progress until it is done."""
    follow_video(client, client.get_video(video_id)["video"])
    show(client.get_video(video_id))


@videos.command("list")
@project_option
@with_client
def videos_list(client: Client, project_id):
    """The project's videos."""
    show(client.list_videos(project_id))


@videos.command("show")
@click.argument("video_id", type=int)
@with_client
def videos_show(client: Client, video_id):
    """A video and its images so far."""
    show(client.get_video(video_id))


@videos.command("delete")
@click.argument("video_id", type=int)
@with_client
def videos_delete(client: Client, video_id):
    """Delete a video and its images (stopping its processing)."""
    show(client.delete_video(video_id))


# -- models ---------------------------------------------------------------------------------

@cli.group()
def models():
    """Uploaded and trained models."""


def follow_model(client: Client, model: dict) -> dict:
    with ProgressView(f"model {model['id']}", "epochs") as view:
        for model in _states(model, client.follow_model(model["id"])):
            progress = model.get("progress") or {}
            metrics = progress.get("metrics") or {}
            detail = " ".join(f"{key}={value:.3g}" for key, value in metrics.items() if isinstance(value, (int, float)))
            epochs = progress.get("epochs")
            done = epochs if model["status"] == "Trained" and epochs else progress.get("epoch", 0)
            view.update(model["status"], done, epochs, detail)
    if model["status"] == "Failed":
        raise click.ClickException(f"model {model['id']} failed: {model.get('error')}")
    return model


@models.command("upload")
@click.argument("model_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("label_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@project_option
@click.option("--title", required=True)
@click.option("--type", "type_", type=click.Choice(["Classification", "Detection"]), default="Classification", show_default=True)
@click.option("--description", default="")
@click.option("--preprocessing", type=click.Choice(["raw", "unit", "symmetric"]))
@click.option("--public", is_flag=True, help="readable by every user")
@with_client
def models_upload(client: Client, model_file, label_file, project_id, title, type_, description, preprocessing, public):
    """Upload a model (.h5, .keras, zipped SavedModel) and its label file; answers once served."""
    show(client.upload_model(project_id, model_file, label_file, title=title, type=type_, description=description,
                             preprocessing=preprocessing, is_public=public))


def _params(pairs: tuple[str, ...]) -> dict[str, str]:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--param")
        params[key] = value
    return params


@models.command("train")
@project_option
@click.option("--title", required=True)
@click.option("--script", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="a Python file defining train(data_dir, output_dir, params); without it the built-in recipe trains")
@click.option("--epochs", type=int)
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="another training parameter (repeatable)")
@click.option("--description", default="")
@click.option("--follow", "-f", is_flag=True, help="show the training's progress until it ends")
@with_client
def models_train(client: Client, project_id, title, script, epochs, params, description, follow):
    """Train a model on the project's tagged images."""
    extra = _params(params)
    if epochs is not None:
        extra["epochs"] = epochs
    model = client.train_model(project_id, title=title, script=script, description=description, **extra)
    if follow:
        model = follow_model(client, model)
    show(model)


@models.command("follow")
@click.argument("model_id", type=int)
@with_client
def models_follow(client: Client, model_id):
    """Show a training's progress until it ends."""
    show(follow_model(client, client.get_model(model_id)))


@models.command("list")
@project_option
@with_client
def models_list(client: Client, project_id):
    """The project's models, yours and public ones."""
    show(client.list_models(project_id))


@models.command("show")
@click.argument("model_id", type=int)
@with_client
def models_show(client: Client, model_id):
    """One model."""
    show(client.get_model(model_id))


@models.command("logs")
@click.argument("model_id", type=int)
@with_client
def models_logs(client: Client, model_id):
    """What the training printed."""
    click.echo(client.training_log(model_id), nl=False)


@models.command("cancel")
@click.argument("model_id", type=int)
@with_client
def models_cancel(client: Client, model_id):
    """Stop a training."""
    show(client.cancel_training(model_id))


@models.command("delete")
@click.argument("model_id", type=int)
@with_client
def models_delete(client: Client, model_id):
    """Delete a model (it stops being served)."""
    show(client.delete_model(model_id))


chart_option = click.option("--chart", type=click.Path(dir_okay=False, path_type=Path),
                            help="save the evaluation's chart (PNG) here")


def follow_evaluation(client: Client, evaluation: dict, model_id: int, project_id: int | None) -> dict:
    states = _states(evaluation, client.follow_evaluation(model_id, project_id))
    return follow_job(f"evaluation of model {model_id}", "images", states, failed="Failed")


def save_chart(client: Client, evaluation: dict, chart: Path | None) -> None:
    if chart is None:
        return
    if not evaluation.get("chart_url"):
        raise click.ClickException(f"the evaluation is {evaluation.get('status')}: it has a chart once Done (use --follow)")
    client.download(evaluation["chart_url"], chart)
    click.echo(f"saved {chart}", err=True)


@models.command("evaluation")
@click.argument("model_id", type=int)
@click.option("--project", "-p", "project_id", type=int, help="its evaluation on this project (default: the held-out images of its training)")
@chart_option
@with_client
def models_evaluation(client: Client, model_id, project_id, chart):
    """A model's evaluation: metrics per class, confusion matrix or AP, and a chart."""
    evaluation = client.model_evaluation(model_id, project_id)
    save_chart(client, evaluation, chart)
    show(evaluation)


@models.command("evaluate")
@click.argument("model_id", type=int)
@project_option
@click.option("--follow", "-f", is_flag=True, help="show its progress until it ends")
@chart_option
@with_client
def models_evaluate(client: Client, model_id, project_id, follow, chart):
    """Evaluate a model on a project's checked images (in the background)."""
    evaluation = client.evaluate_model(model_id, project_id)
    if follow or chart:
        evaluation = follow_evaluation(client, evaluation, model_id, project_id)
    save_chart(client, evaluation, chart)
    show(evaluation)


# -- exports and imports --------------------------------------------------------------------

def follow_job(name: str, unit: str, states, failed: str = "failed") -> dict:
    """Draws the `progress` {done, total} of each state until the last; a `failed` one exits 1."""
    with ProgressView(name, unit) as view:
        for job in states:
            progress = job.get("progress") or {}
            view.update(job.get("status", "?"), progress.get("done", 0), progress.get("total"))
    if job.get("status") == failed:
        raise click.ClickException(f"{name} failed: {job.get('error')}")
    return job


@cli.command("export")
@project_option
@click.option("--format", "format_", type=click.Choice(["imagenet", "coco", "yolo", "voc", "csv"]), required=True)
@click.option("--follow", "-f", is_flag=True, help="show its progress until the zip is ready")
@click.option("--download", type=click.Path(dir_okay=False, path_type=Path), help="save the zip here (implies --follow)")
@with_client
def export(client: Client, project_id, format_, follow, download):
    """Export the project's dataset as a zip."""
    job = client.start_export(project_id, format_)
    if follow or download:
        job = follow_job(f"export {job['id']}", "images", _states(job, client.follow_export(project_id, job["id"])))
    if download:
        client.download(job["url"], download)
        click.echo(f"saved {download}", err=True)
    show(job)


@cli.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@project_option
@click.option("--follow", "-f", is_flag=True, help="show its progress until it ends")
@with_client
def import_(client: Client, file, project_id, follow):
    """Import a dataset zip into the project."""
    job = client.start_import(project_id, file)
    if follow:
        job = follow_job(f"import {job['id']}", "files", _states(job, client.follow_import(project_id, job["id"])))
    show(job)


# -- re-labelling --------------------------------------------------------------------------

@cli.group()
def relabels():
    """Re-label a project's images with a (better) model; a person's labels are never changed."""


def follow_relabel(client: Client, project_id: int, run: dict) -> dict:
    return follow_job(f"relabel {run['id']}", "images", _states(run, client.follow_relabel(project_id, run["id"])))


@relabels.command("start")
@project_option
@click.option("--model", "-m", "model_id", type=int, required=True, help="a model of the project's type")
@click.option("--scope", type=click.Choice(["review", "all"]), default="review", show_default=True,
              help="review: the images waiting for review; all: every image whose label is a model's")
@click.option("--tag", "-t", help="only this tag's images")
@click.option("--video", "video_id", type=int, help="only this video's frames")
@threshold_option
@click.option("--follow", "-f", is_flag=True, help="show its progress until it ends")
@with_client
def relabels_start(client: Client, project_id, model_id, scope, tag, video_id, threshold, follow):
    """Start re-labelling (in the background)."""
    run = client.start_relabel(project_id, model_id, scope=scope, tag=tag, video_id=video_id, threshold=threshold)
    show(follow_relabel(client, project_id, run) if follow else run)


@relabels.command("list")
@project_option
@with_client
def relabels_list(client: Client, project_id):
    """The project's runs, newest first."""
    show(client.list_relabels(project_id))


@relabels.command("show")
@click.argument("relabel_id", type=int)
@project_option
@with_client
def relabels_show(client: Client, relabel_id, project_id):
    """One run: status, progress, images changed."""
    show(client.get_relabel(project_id, relabel_id))


@relabels.command("follow")
@click.argument("relabel_id", type=int)
@project_option
@with_client
def relabels_follow(client: Client, relabel_id, project_id):
    """Show a run's progress until it ends."""
    show(follow_relabel(client, project_id, client.get_relabel(project_id, relabel_id)))


@relabels.command("cancel")
@click.argument("relabel_id", type=int)
@project_option
@with_client
def relabels_cancel(client: Client, relabel_id, project_id):
    """Stop a run at its next batch (what it wrote stays)."""
    show(client.cancel_relabel(project_id, relabel_id))


def main() -> None:
    cli(prog_name="mlstudio")


if __name__ == "__main__":
    sys.exit(main())
