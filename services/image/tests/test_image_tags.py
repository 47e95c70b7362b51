"""Tag rules of API.md: normalisation, allowed characters, length, dots and reserved words."""
import pytest
from mlstudio.common import errors
from mlstudio.common.tags import NO_DETECTION_TAG, normalize_tag, tag_from_label


@pytest.mark.parametrize("raw, tag", [
    ("Cat", "cat"),
    ("  Dog  ", "dog"),
    ("STUDENT", "student"),
    ("my tag", "my tag"),
    ("v1.2", "v1.2"),
    ("a_b-c", "a_b-c"),
    ("Café", "café"),
    ("...", "..."),
    ("2024", "2024"),
    ("x" * 64, "x" * 64),
    ("allowed", "allowed"),
])
def test_valid_tags_are_normalised(raw, tag):
    assert normalize_tag(raw) == tag


@pytest.mark.parametrize("raw", [
    "", "   ", ".", "..", " .. ",
    "all", "ALL", "type", "Type", "predict", "byVideo", "byvideo",
    "x" * 65,
    "a/b", "a\\b", "a?b", "a#b", "a%b", "tab\there", "new\nline", "a:b", "<b>",
    None, 42,
])
def test_invalid_tags_are_refused(raw):
    with pytest.raises(errors.InvalidArgument) as caught:
        normalize_tag(raw)
    assert caught.value.code == "invalid_tag"


def test_the_refusal_says_why():
    with pytest.raises(errors.InvalidArgument, match="reserved"):
        normalize_tag("All")
    with pytest.raises(errors.InvalidArgument, match="64"):
        normalize_tag("y" * 65)


@pytest.mark.parametrize("label, tag", [
    ("Cat", "cat"),
    ("traffic light", "traffic light"),
    ("cat/dog", "cat_dog"),
    ("all", "all_"),
    ("byVideo", "byvideo_"),
    ("", NO_DETECTION_TAG),
    ("..", NO_DETECTION_TAG),
    ("z" * 80, "z" * 64),
])
def test_model_labels_are_made_to_fit(label, tag):
    assert tag_from_label(label) == tag


@pytest.mark.parametrize("label", ["Cat", "a/b?c", "all", "  x  ", "İstanbul", "ß" * 70, "0", "%%%"])
def test_a_fitted_label_is_a_valid_tag(label):
    tag = tag_from_label(label)
    assert normalize_tag(tag) == tag
