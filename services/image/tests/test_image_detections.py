"""Detections in the original API's string forms, which the frontend parses to draw boxes."""
from image_service.detections import best, filed_under
from mlstudio.common.detections import boxes, captions, detection


def test_captions_and_boxes_concatenate_one_entry_per_object():
    found = [detection("cat", 0.92345, 10.4, 20.5, 110.6, 220.0), detection("dog", 0.5, 0, 0, 5.49, 7.5)]
    assert captions(found) == ",cat 0.923,dog 0.500"
    assert boxes(found) == ",[10 21 111 220],[0 0 5 8]"


def test_classification_images_have_no_strings():
    assert captions(None) is None
    assert boxes(None) is None


def test_a_detection_image_without_objects_has_empty_strings():
    assert captions([]) == ""
    assert boxes([]) == ""


def test_an_image_is_filed_under_its_most_confident_object():
    found = [detection("cat", 0.4, 0, 0, 1, 1), detection("Traffic Light", 0.9, 0, 0, 1, 1)]
    assert best(found) == ("traffic light", 0.9)
    assert best([]) == ("unlabeled", None)


def test_filing_detected_keeps_the_best_score_and_top_label_files_by_object():
    found = [detection("cat", 0.4, 0, 0, 1, 1), detection("Traffic Light", 0.9, 0, 0, 1, 1)]
    assert filed_under(found) == ("detected", 0.9)
    assert filed_under([]) == ("detected", None)
    assert filed_under(found, "top_label") == ("traffic light", 0.9)
    assert filed_under([], "top_label") == ("unlabeled", None)
