"""Training parameters from form fields, and the dataset written from a project's images."""
from __future__ import annotations

import io
import re
import types

import pytest
from PIL import Image

from mlstudio.common import errors
from model_service.training import dataset, params, recipe, split


def parse(**fields):
    return params.parse(fields, default_time_limit_s=600, max_time_limit_s=3600)


def test_defaults_and_given_values():
    assert parse() == params.TrainingParams(time_limit_s=600)
    given = parse(epochs="3", image_size=" 32 ", batch_size="8", validation_split="0", learning_rate="0.01", time_limit_s="60",
                  title="ignored", description="ignored", dropout="0.3")
    assert (given.epochs, given.image_size, given.batch_size, given.validation_split, given.learning_rate, given.time_limit_s) == (
        3, 32, 8, 0.0, 0.01, 60)
    assert given.extra == {"dropout": "0.3"}
    assert given.to_dict()["dropout"] == "0.3" and given.to_dict()["epochs"] == 3
    assert params.TrainingParams.from_dict(given.to_dict()) == given
    assert (parse().recipe, parse().fine_tune, parse().augment) == ("transfer", 0, "none")  # transfer learning by default
    chosen = parse(recipe=" Scratch", fine_tune="2", augment="flip")
    assert (chosen.recipe, chosen.fine_tune, chosen.augment, chosen.extra) == ("scratch", 2, "flip", {})
    assert parse().include_unchecked is False and parse(include_unchecked="True").include_unchecked is True
    assert params.TrainingParams.from_dict(parse(include_unchecked="yes").to_dict()).include_unchecked is True


def test_the_held_out_split_is_stratified_seeded_and_never_takes_a_whole_tag():
    files = {"a": [f"a/{n}.png" for n in range(10)], "b": [f"b/{n}.png" for n in range(3)], "c": ["c/1.png"], "d": ["d/1.png", "d/2.png"]}
    held = split.held_out(files, 0.2, seed=5)
    assert [sum(name.startswith(f"{tag}/") for name in held) for tag in "abcd"] == [2, 1, 0, 1]
    assert held == split.held_out(files, 0.2, seed=5) and held != split.held_out(files, 0.2, seed=6)
    assert split.held_out(files, 0.0, seed=5) == set()
    assert len(split.held_out({"a": files["a"]}, 0.5, seed=1)) == 5


def test_class_weights_balance_the_classes():
    weights = recipe.class_weights([0] * 6 + [1] * 2, 2)
    assert weights == {0: 8 / 12, 1: 8 / 4}
    assert weights[0] * 6 == weights[1] * 2  # each class weighs as much in the loss


@pytest.mark.parametrize("field, value, message", [
    ("epochs", "0", "field epochs must be between 1 and 500, got 0"),
    ("epochs", "ten", "field epochs must be a whole number, got 'ten'"),
    ("image_size", "8", "field image_size must be between 16 and 512"),
    ("validation_split", "0.9", "field validation_split must be between 0.0 and 0.5"),
    ("learning_rate", "nan", "field learning_rate must be a finite number"),
    ("time_limit_s", "7200", "field time_limit_s must be between 1 and 3600"),
    ("recipe", "resnet", "field recipe must be one of transfer, scratch, got 'resnet'"),
    ("augment", "crop", "field augment must be one of none, flip"),
    ("fine_tune", "17", "field fine_tune must be between 0 and 16"),
    ("include_unchecked", "maybe", "field include_unchecked must be true or false, got 'maybe'"),
])
def test_bad_values_answer_400_naming_the_field(field, value, message):
    with pytest.raises(errors.InvalidArgument, match=message) as raised:
        parse(**{field: value})
    assert raised.value.code == "bad_training_parameter"


def test_extra_fields_are_bounded():
    with pytest.raises(errors.InvalidArgument, match="too long"):
        parse(note="x" * 2000)
    with pytest.raises(errors.InvalidArgument, match="at most 32"):
        parse(**{f"p{i}": "1" for i in range(40)})


def png(rgb=(200, 0, 0)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), rgb).save(out, "PNG")
    return out.getvalue()


def webp() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (0, 0, 200)).save(out, "WEBP")
    return out.getvalue()


def item(image_id, tag, content=None, content_type="image/png"):
    return types.SimpleNamespace(image_id=image_id, tag=tag, content=content or png(), content_type=content_type)


def test_images_are_written_per_tag_and_labels_are_the_sorted_tags(tmp_path):
    items = [item(1, "red"), item(2, "red"), item(3, "blue", webp(), "image/webp"), item(4, "blue"), item(5, "", png())]
    written = dataset.materialise(items, tmp_path / "data", min_images_per_tag=2, max_bytes=1 << 20)
    assert written.labels == ["blue", "red"] and written.counts == {"blue": 2, "red": 2} and written.size == 4
    assert sorted(p.name for p in (tmp_path / "data" / "red").iterdir()) == ["1.png", "2.png"]
    assert sorted(p.name for p in (tmp_path / "data" / "blue").iterdir()) == ["3.png", "4.png"]
    assert Image.open(tmp_path / "data" / "blue" / "3.png").format == "PNG"  # WebP converted: Keras cannot read it


@pytest.mark.parametrize("items, message", [
    ([], "training needs images of at least two tags; the project has no tagged images"),
    ([item(1, "red"), item(2, "red")], "the project has only the tag 'red'"),
    ([item(1, "red"), item(2, "red"), item(3, "blue")], "each tag needs at least 2 images to train on; too few in 'blue' (1)"),
    ([item(1, "../etc"), item(2, "red")], "the tag '../etc' cannot be used as a class name"),
    ([item(1, "red", b"not an image", "image/webp")], "image 1 (image/webp) could not be decoded"),
])
def test_datasets_that_cannot_be_trained_on_are_refused(tmp_path, items, message):
    with pytest.raises(dataset.DatasetRefused, match=re.escape(message)):
        dataset.materialise(items, tmp_path / "data", min_images_per_tag=2, max_bytes=1 << 20)


def test_a_dataset_over_the_size_limit_is_refused(tmp_path):
    with pytest.raises(dataset.DatasetRefused, match="larger than the training limit"):
        dataset.materialise([item(i, "red") for i in range(10)], tmp_path / "data", min_images_per_tag=1, max_bytes=200)


def test_the_backbone_is_located_by_its_stamp_and_absent_without_one(tmp_path, monkeypatch):
    from model_service.training import features

    found = features.locate()  # the one built at setup (`make pretrained`)
    assert found is not None and found.model_file.name == "features.keras" and found.model_file.is_file()
    assert found.version.startswith("lite0-") and found.version.endswith(f"-f{features.FEATURE_VERSION}")
    monkeypatch.setenv("PRETRAINED_DIR", str(tmp_path))
    assert features.locate() is None
