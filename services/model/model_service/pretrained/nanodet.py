"""NanoDet-m (COCO, 80 classes) as a SavedModel with the studio's detector signature.

The network comes as a TF.js graph model (`nanodet.json` + `nanodet.bin`, read by `tfjs_graph`)
that outputs, per level (strides 8, 16, 32 on a 416x416 input: 52x52, 26x26, 13x13 cells, row by
row), sigmoid class scores [batch, cells, 80] and a GFL box distribution [batch, cells, 44]: for
each side (left, top, right, bottom) 11 logits over distances 0..10 strides from the cell centre.
(The export was for a batch of one; `tfjs_graph.free_batch` lets one call take a whole batch.)
What the package leaves out is added here, inside the served graph:

- preprocessing: uint8 RGB of any size -> resized keeping its aspect ratio into the 416x416
  input (black padding, as NanoDet's own warp does), BGR, NanoDet's mean/std, channels first.
  The aspect matters: of the 377 frames of `shared/data/car-detection.mp4`, 10 have a car at
  0.5 or more with it kept, none when the frames are stretched to 416x416 first (so a client
  should send frames at their own aspect ratio, not squeezed to a square);
- decoding: softmax over the 11 bins, expected distance times the stride, box around the centre;
- class-wise non-max suppression (NanoDet's own settings: IoU 0.6, scores from 0.05, 100 boxes).

The signature is the one the exporter gives every Detection model (TF Object Detection API
names): `images` uint8 [batch, height, width, 3] in; `detection_boxes` [batch, 100, 4]
normalised `[ymin, xmin, ymax, xmax]` of the image as sent, `detection_scores`,
`detection_classes` (1-based ids into `coco_labels.txt`), `num_detections`.
"""
from __future__ import annotations

from pathlib import Path

INPUT_SIZE = 416
STRIDES = (8, 16, 32)
REG_MAX = 10  # 44 box channels = 4 sides x 11 bins (the 416 model's config; the 320 one uses 7)
NUM_CLASSES = 80
MAX_DETECTIONS = 100
IOU_THRESHOLD = 0.6
SCORE_THRESHOLD = 0.05
# NanoDet's normalisation, in its BGR channel order.
MEAN_BGR = (103.53, 116.28, 123.675)
STD_BGR = (57.375, 57.12, 58.395)
INPUT_TENSOR = "input_1:0"
# Scores and box distributions per stride, as the model.json's signature names them.
SCORE_TENSORS = ("Identity:0", "Identity_1:0", "Identity_2:0")
BOX_TENSORS = ("Identity_3:0", "Identity_4:0", "Identity_5:0")


def _centres(tf):
    """Cell centres (x, y) in input pixels, level after level, row by row: [cells, 2]."""
    parts = []
    for stride in STRIDES:
        cells = INPUT_SIZE // stride
        ys, xs = tf.meshgrid(tf.range(cells, dtype=tf.float32), tf.range(cells, dtype=tf.float32), indexing="ij")
        centre = (tf.stack([tf.reshape(xs, [-1]), tf.reshape(ys, [-1])], axis=1) + 0.5) * stride
        parts.append(centre)
    return tf.concat(parts, axis=0)


def _strides(tf):
    return tf.concat([tf.fill([(INPUT_SIZE // s) ** 2], float(s)) for s in STRIDES], axis=0)


def decode(tf, distributions, centres, strides):
    """GFL distributions [n, cells, 4 * 11] -> boxes [n, cells, 4] (x1, y1, x2, y2) in input pixels."""
    logits = tf.reshape(distributions, [tf.shape(distributions)[0], -1, 4, REG_MAX + 1])
    bins = tf.range(REG_MAX + 1, dtype=tf.float32)
    distances = tf.reduce_sum(tf.nn.softmax(logits, axis=-1) * bins, axis=-1) * strides[tf.newaxis, :, tf.newaxis]
    x, y = centres[tf.newaxis, :, 0], centres[tf.newaxis, :, 1]
    return tf.stack([x - distances[..., 0], y - distances[..., 1], x + distances[..., 2], y + distances[..., 3]], axis=-1)


class NanoDetModule:
    """Builds the tf.Module to save: the graph function plus the serving signature around it."""

    def __init__(self, model_json: Path):
        import tensorflow as tf

        from . import tfjs_graph

        self.tf = tf
        self.network = tfjs_graph.to_function(model_json, [INPUT_TENSOR], [*SCORE_TENSORS, *BOX_TENSORS], any_batch=True)

    def module(self):
        tf = self.tf
        module = tf.Module()
        network = self.network
        centres, strides = _centres(tf), _strides(tf)
        mean = tf.constant(MEAN_BGR, tf.float32)
        std = tf.constant(STD_BGR, tf.float32)

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
        def serve(images):
            shape = tf.shape(images)
            height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
            scale = INPUT_SIZE / tf.maximum(height, width)
            new_h = tf.cast(tf.round(height * scale), tf.int32)
            new_w = tf.cast(tf.round(width * scale), tf.int32)
            pixels = tf.image.resize(tf.cast(images, tf.float32), tf.stack([new_h, new_w]))
            # Padded with black pixels (0) before normalising, as NanoDet's warp pads.
            pixels = tf.image.pad_to_bounding_box(pixels, 0, 0, INPUT_SIZE, INPUT_SIZE)
            bgr = (pixels[..., ::-1] - mean) / std
            channels_first = tf.transpose(bgr, [0, 3, 1, 2])
            outputs = network(channels_first)
            scores, distributions = tf.concat(outputs[:3], axis=1), tf.concat(outputs[3:], axis=1)
            boxes = decode(tf, distributions, centres, strides)
            # Input pixels -> fractions of the image as sent ([ymin, xmin, ymax, xmax]).
            x1, y1, x2, y2 = tf.unstack(boxes / scale, axis=-1)
            normalised = tf.stack([y1 / height, x1 / width, y2 / height, x2 / width], axis=-1)
            nms = tf.image.combined_non_max_suppression(
                normalised[:, :, tf.newaxis, :], scores, MAX_DETECTIONS, MAX_DETECTIONS,
                iou_threshold=IOU_THRESHOLD, score_threshold=SCORE_THRESHOLD, clip_boxes=True)
            return {
                "detection_boxes": nms.nmsed_boxes,
                "detection_scores": nms.nmsed_scores,
                "detection_classes": nms.nmsed_classes + 1.0,
                "num_detections": tf.cast(nms.valid_detections, tf.float32),
            }

        module.serve = serve
        return module

    def save(self, directory: Path) -> None:
        module = self.module()
        self.tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})
