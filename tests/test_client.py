"""The Python client (`client/`, package `mlstudio_client`) and its `mlstudio` command line against
the real stack: the README's walk-through done with CLI commands (log in, a project, folders of
images uploaded under tags, a training and a video split followed with progress that moves,
predictions), the review loop (a model's uncertain labels listed least sure first, confirmed,
re-labelled, the model evaluated with progress and a chart), every typed call of the client, and
the API's errors shown as its own message and code with a non-zero exit status."""
from __future__ import annotations

import json
import re
import uuid

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from mlstudio_client import ApiError, BadRequest, Client, Conflict, NotFound
from mlstudio_client.cli import cli
from model_service import sample_models
from test_model_evaluation import grey_png
from test_training import BLUE, KERAS_SCRIPT, RED, colour_png

pytestmark = pytest.mark.integration

PROGRESS_LINE = re.compile(r"^(?P<what>model|video) (?P<id>\d+) (?P<status>\w+): (?P<done>\d+)(?:/(?P<total>\d+))? (?:epochs|frames)(?: \(.*\))?$")


def write_colour_video(path, colours, frames_each: int = 20):
    """An MP4 whose frames show each colour (RGB) in turn, `frames_each` frames of each."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (64, 48))
    for rgb in colours:
        for _ in range(frames_each):
            writer.write(np.full((48, 64, 3), rgb[::-1], np.uint8))  # OpenCV writes BGR
    writer.release()
    return path


def job_progress(stderr: str, name: str, unit: str) -> list[tuple[str, int, int]]:
    """The (status, done, total) lines the CLI printed for a followed job called `name`."""
    line = re.compile(rf"^{re.escape(name)} (\w+): (\d+)/(\d+) {unit}$")
    return [(m[1], int(m[2]), int(m[3])) for m in map(line.match, stderr.splitlines()) if m]


def progress_of(stderr: str, what: str) -> list[tuple[str, int, int]]:
    """The (status, done, total) lines the CLI printed for a followed video or training."""
    found = []
    for line in stderr.splitlines():
        match = PROGRESS_LINE.match(line.strip())
        if match and match["what"] == what:
            found.append((match["status"], int(match["done"]), int(match["total"] or 0)))
    return found


class Mlstudio:
    """Runs `mlstudio` commands in-process with a config directory of its own."""

    def __init__(self, url: str, config_home):
        self.runner = CliRunner()
        self.url = url
        self.env = {"XDG_CONFIG_HOME": str(config_home), "MLSTUDIO_URL": None, "MLSTUDIO_TOKEN": None, "MLSTUDIO_CONFIG": None}

    def __call__(self, *args: str, input: str | None = None, ok: bool = True):
        result = self.runner.invoke(cli, [str(a) for a in args], input=input, env=self.env, catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, f"mlstudio {' '.join(map(str, args))}: {result.output}"
        return result

    def json(self, *args: str):
        return json.loads(self(*args).stdout)


@pytest.fixture
def mlstudio(stack, tmp_path):
    return Mlstudio(stack.url, tmp_path / "config")


def test_the_walk_through_with_the_cli(stack, mlstudio, tmp_path):
    username, password = f"cli-{uuid.uuid4().hex[:8]}", "correct horse battery staple"
    registered = mlstudio("--url", stack.url, "register", "--username", username, "--email", f"{username}@example.com",
                          "--password", password)
    assert json.loads(registered.stdout)["username"] == username
    login = mlstudio("--url", stack.url, "login", "--username", username, input=f"{password}\n")
    token = json.loads((tmp_path / "config" / "mlstudio" / "config.json").read_text())["token"]
    assert token and token not in login.output

    project = mlstudio.json("projects", "create", "Colours", "--type", "Classification")
    assert [p["id"] for p in mlstudio.json("projects")] == [project["id"]]

    for tag, rgb in (("red", RED), ("blue", BLUE)):
        folder = tmp_path / tag
        folder.mkdir()
        for i in range(12):
            (folder / f"{tag}{i}.png").write_bytes(colour_png(rgb, i))
        uploaded = mlstudio("images", "upload", folder, "--tag", tag, "--project", project["id"], "--batch", "5")
        assert [image["type"] for image in json.loads(uploaded.stdout)] == [tag] * 12
        assert "uploading: 12/12 images" in uploaded.stderr
    assert {t["name"]: t["count"] for t in mlstudio.json("images", "tags", "-p", project["id"])} == {"red": 12, "blue": 12}

    script = tmp_path / "train.py"
    script.write_text(KERAS_SCRIPT)
    trained = mlstudio("models", "train", "-p", project["id"], "--title", "colours", "--script", script, "--epochs", "5",
                       "--param", "image_size=32", "--param", "pause_s=1", "--follow")
    model = json.loads(trained.stdout)
    assert model["status"] == "Trained", trained.output
    epochs = progress_of(trained.stderr, "model")
    assert epochs[0] == ("Pending", 0, 5) and epochs[-1] == ("Trained", 5, 5), trained.stderr
    assert any(status == "Training" for status, _, _ in epochs), trained.stderr  # each epoch pauses 1 s: seen while it trains
    assert [done for _, done, _ in epochs] == sorted(done for _, done, _ in epochs), trained.stderr
    assert "classes: ['blue', 'red']" in mlstudio("models", "logs", model["id"]).stdout  # what the script printed

    video_file = write_colour_video(tmp_path / "red-blue.mp4", (RED, BLUE))
    split = mlstudio("videos", "upload", video_file, "-p", project["id"], "--model", model["id"], "--interval", "2", "--follow")
    answer = json.loads(split.stdout)
    assert answer["video"]["status"] == "done", split.output
    frames = progress_of(split.stderr, "video")
    assert frames[0] == ("queued", 0, 20) and frames[-1] == ("done", 20, 20), split.stderr
    assert [done for _, done, _ in frames] == sorted(done for _, done, _ in frames)
    tags = [image["type"] for image in sorted(answer["images"], key=lambda image: image["frame_index"])]
    assert tags == ["red"] * 10 + ["blue"] * 10
    assert len(mlstudio.json("images", "by-video", answer["video"]["id"])["images"]) == 20

    sample = tmp_path / "sample.png"
    sample.write_bytes(colour_png(BLUE, 99))
    predicted = mlstudio.json("predict", sample, "-p", project["id"], "--model", model["id"])
    assert [image["type"] for image in predicted] == ["blue"] and predicted[0]["score"] > 0.5

    # the trained model, downloaded from its signed url and uploaded again with its labels
    trained_file = Client(stack.url, token).download(model["url"], tmp_path / "trained.keras")
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(model["labels"]))
    copy = mlstudio.json("models", "upload", trained_file, labels, "-p", project["id"], "--title", "copy")
    assert copy["status"] == "Trained" and copy["labels"] == model["labels"] == ["blue", "red"]
    assert {m["id"] for m in mlstudio.json("models", "list", "-p", project["id"])} >= {model["id"], copy["id"]}

    assert mlstudio.json("projects", "delete", project["id"]) == {"message": "success"}
    for result_text in (registered.output, login.output, trained.output, split.output):
        assert token not in result_text


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    directory = tmp_path_factory.mktemp("models")
    sample_models.write_samples(directory)
    return directory


def test_the_review_loop_with_the_cli(stack, mlstudio, register, samples, tmp_path):
    # the sample light/dark model's scores are exact (model_service.sample_models): a grey level of
    # 250 is 0.99 sure (light), 145 0.67 (light), 100 0.75 (dark), 128 0.50
    _, token = register(stack, f"cli-{uuid.uuid4().hex[:8]}")
    mlstudio.env.update(MLSTUDIO_TOKEN=token, MLSTUDIO_URL=stack.url)
    project = mlstudio.json("projects", "create", "Greys", "--review-threshold", "0.9")
    assert project["review_threshold"] == 0.9
    assert mlstudio.json("projects", "update", project["id"], "--threshold", "0.3")["threshold"] == 0.3
    for tag, levels in (("light", (255, 220)), ("dark", (0, 20))):
        folder = tmp_path / tag
        folder.mkdir()
        for level in levels:
            (folder / f"{level}.png").write_bytes(grey_png(level))
        mlstudio("images", "upload", folder, "--tag", tag, "-p", project["id"])
    model = mlstudio.json("models", "upload", samples / "light_dark.h5", samples / "classLabel.txt", "-p", project["id"],
                          "--title", "light-dark")

    unsure = tmp_path / "unsure"
    unsure.mkdir()
    for level in (250, 145, 100, 128):
        (unsure / f"grey{level}.png").write_bytes(grey_png(level))
    predicted = {image["title"]: image for image in mlstudio.json("predict", unsure, "-p", project["id"], "-m", model["id"])}
    assert {title: image["isTrain"] for title, image in predicted.items()} == {
        "grey100.png": False, "grey128.png": False, "grey145.png": False, "grey250.png": True}  # under 0.9: to review

    def review() -> list[str]:
        return [image["title"] for image in mlstudio.json("images", "review", "-p", project["id"])]

    assert review() == ["grey128.png", "grey145.png", "grey100.png"]  # least sure first; a person's uploads are checked
    confirmed = mlstudio.json("images", "confirm", predicted["grey100.png"]["id"])
    assert [(image["type"], image["isTrain"]) for image in confirmed] == [("dark", True)]
    assert mlstudio.json("images", "retag", predicted["grey128.png"]["id"], "dark")["isTrain"] is True
    assert review() == ["grey145.png"]

    relabelled = mlstudio("relabels", "start", "-p", project["id"], "--model", model["id"], "--follow")
    run = json.loads(relabelled.stdout)
    assert run["status"] == "done" and run["progress"] == {"done": 1, "total": 1}, relabelled.output
    assert job_progress(relabelled.stderr, f"relabel {run['id']}", "images")[-1] == ("done", 1, 1), relabelled.stderr
    assert [r["id"] for r in mlstudio.json("relabels", "list", "-p", project["id"])] == [run["id"]]
    assert review() == ["grey145.png"]  # a model's label stays a model's: still waiting for a person

    checked = sum(image.get("isTrain", True) for image in mlstudio.json("images", "list", "-p", project["id"]))
    assert checked == 7  # 4 uploads, the sure prediction, the confirmed and the retagged ones
    chart = tmp_path / "chart.png"
    evaluated = mlstudio("models", "evaluate", model["id"], "-p", project["id"], "--follow", "--chart", chart)
    evaluation = json.loads(evaluated.stdout)
    assert evaluation["status"] == "Done" and evaluation["images"] == checked, evaluated.output
    steps = job_progress(evaluated.stderr, f"evaluation of model {model['id']}", "images")
    assert steps[0][0] in ("Pending", "Running") and steps[-1] == ("Done", checked, checked), evaluated.stderr
    assert [done for _, done, _ in steps] == sorted(done for _, done, _ in steps)
    assert chart.read_bytes().startswith(b"\x89PNG")
    shown = mlstudio.json("models", "evaluation", model["id"], "-p", project["id"])
    assert shown["accuracy"] == evaluation["accuracy"] and shown["confusion_matrix"]["labels"] == ["dark", "light"]


def test_errors_are_the_apis_message_with_a_non_zero_exit(stack, mlstudio, register, tmp_path):
    _, token = register(stack, f"cli-{uuid.uuid4().hex[:8]}")
    mlstudio.env.update(MLSTUDIO_TOKEN=token, MLSTUDIO_URL=stack.url)
    project = mlstudio.json("projects", "create", "Mine")

    missing = mlstudio("projects", "show", "987654321", ok=False)
    assert missing.exit_code == 1 and missing.stdout == ""
    assert re.search(r"\(not_found\)$", missing.stderr.strip()) and "987654321" in missing.stderr

    text = tmp_path / "notes.txt"
    text.write_text("not a video")
    refused = mlstudio("videos", "upload", text, "-p", project["id"], "--model", "1", "--interval", "5", ok=False)
    assert refused.exit_code == 1 and refused.stdout == "", refused.output
    with pytest.raises(ApiError) as raised:  # the same call through the client: the message the CLI showed
        Client(stack.url, token).upload_video(project["id"], text, 1, interval=5)
    assert refused.stderr.strip() == f"Error: {raised.value.message} ({raised.value.code})"

    with pytest.raises(NotFound) as raised:
        Client(stack.url, token).get_project(987654321)
    assert raised.value.code == "not_found" and raised.value.status == 404

    # a new command's refusal: evaluating a model the caller cannot read, on a project without images
    unreadable = mlstudio("models", "evaluate", "987654321", "-p", project["id"], "--follow", ok=False)
    assert unreadable.exit_code == 1 and unreadable.stdout == "", unreadable.output
    assert unreadable.stderr.strip() == "Error: model 987654321 not found (not_found)"
    no_run = mlstudio("relabels", "show", "987654321", "-p", project["id"], ok=False)
    assert no_run.exit_code == 1 and no_run.stdout == "" and no_run.stderr.strip().endswith("(not_found)"), no_run.output


def test_every_typed_call_against_the_stack(stack, tmp_path):
    client = Client(stack.url)
    name = f"typed-{uuid.uuid4().hex[:8]}"
    user = client.register(name, "pw-typed-123", f"{name}@example.com")
    with pytest.raises(Conflict):
        client.register(name, "other", f"{name}@example.com")
    login = client.login(name, "pw-typed-123")
    assert login["user_id"] == user["id"] == client.user_id

    project = client.create_project("Typed", description="first")
    assert client.get_project(project["id"]) == project and client.list_projects() == [project]
    assert client.update_project(project["id"], "second")["description"] == "second"

    for i in range(3):
        (tmp_path / f"cat{i}.png").write_bytes(colour_png(RED, i))
    cats = client.upload_images(project["id"], "Cat", tmp_path)
    assert [image["type"] for image in cats] == ["cat"] * 3
    assert [t["name"] for t in client.tags(project["id"])] == ["cat"]
    assert client.get_image(cats[0]["id"])["id"] == cats[0]["id"]
    assert [i["id"] for i in client.list_images(project["id"], after_id=cats[0]["id"])] == [c["id"] for c in cats[1:]]
    assert client.review_list(project["id"]) == [] and client.confirm_image(cats[2]["id"])["isTrain"] is True  # a person's
    assert client.retag_image(cats[0]["id"], "dog")["type"] == "dog"
    assert len(client.list_images(project["id"], "cat")) == 2 and len(client.list_images(project["id"], limit=1)) == 1
    with pytest.raises(BadRequest) as same:
        client.rename_tag(project["id"], "cat", "cat")
    assert same.value.status in (400, 406) and same.value.message
    assert {image["type"] for image in client.rename_tag(project["id"], "cat", "dog")} == {"dog"}
    assert client.delete_image(cats[1]["id"]) == {"message": "success"}
    assert client.delete_tag(project["id"], "dog") == {"message": "success"}
    client.upload_images(project["id"], "cat", [tmp_path / "cat0.png"])
    assert client.delete_all_images(project["id"]) == {"message": "success"} and client.list_images(project["id"]) == []

    assert client.list_videos(project["id"]) == []
    assert all(model["status"] for model in client.list_models(project["id"]))
    with pytest.raises(NotFound):
        client.get_video(987654321)
    with pytest.raises(NotFound):
        client.get_model(987654321)
    assert client.delete_project(project["id"]) == {"message": "success"}
    with pytest.raises(NotFound):
        client.get_project(project["id"])
