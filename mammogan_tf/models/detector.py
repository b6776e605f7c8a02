"""A single-stage, anchor-based, YOLOv3-style lesion detector (Redmon & Farhadi 2018), as used by
Han et al. 2019 to measure what GAN augmentation adds to detection.

``images (B, S, S, C) float32 in [-1, 1] -> [raw (B, S/s, S/s, A, 5 + K) for s in strides]``:
a small CSP/Darknet-like backbone (or a ``keras.applications`` MobileNetV2 / ResNet50 trunk) (conv-BN-LeakyReLU, stride-2 stages of cross-stage-partial
residual blocks), a top-down feature pyramid, and one 1x1 head per scale predicting, for each
cell and each of its ``A`` anchors, ``(t_x, t_y, t_w, t_h, objectness logit, K class logits)``.

Decoding (``decode``), for a cell (i, j) of stride s and an anchor (a_w, a_h) in pixels:
``centre = ((j, i) + sigmoid(t_xy)) * s``, ``size = (a_w, a_h) * exp(t_wh)``; boxes are
``(x0, y0, x1, y1)`` in input pixels, row 0 at the top. A detection's score is
``sigmoid(objectness) * sigmoid(class logit)``. Non-maximum suppression is per class.

The loss, target assignment and training are in ``mammogan_tf.training.detection``.
"""
from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mammogan_tf.errors import InputError
from mammogan_tf.models.detector_config import DEFAULT_ANCHORS, DetectorConfig
from mammogan_tf.models.layers import ConvBlock, register

APPLICATION_LAYERS = {
    "mobilenet_v2": ("MobileNetV2", {4: "block_3_expand_relu", 8: "block_6_expand_relu",
                                     16: "block_13_expand_relu", 32: "out_relu"}),
    "resnet50": ("ResNet50", {4: "conv2_block3_out", 8: "conv3_block4_out", 16: "conv4_block6_out",
                              32: "conv5_block3_out"}),
}
"""keras.applications trunks: class name and the layer giving each stride's features."""

OBJECTNESS_PRIOR = 0.01
"""Initial objectness probability (head bias log(p / (1 - p))): most cells hold no lesion."""


def _conv(filters: int, kernel: int = 3, strides: int = 1) -> ConvBlock:
    return ConvBlock(filters, kernel, strides, activation="leaky_relu", negative_slope=0.1, init_std=0.05)


@register
class CSPStage(keras.layers.Layer):
    """Downsample by 2, then a cross-stage-partial block: half the channels go through ``depth``
    residual (1x1, 3x3) bottlenecks, half bypass them; both are concatenated and mixed by a 1x1.
    ``(B, H, W, C) -> (B, H/2, W/2, filters)``."""

    def __init__(self, filters: int, depth: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.depth = filters, depth
        half = max(filters // 2, 1)
        self.down = _conv(filters, 3, 2)
        self.split_main, self.split_bypass = _conv(half, 1), _conv(half, 1)
        self.bottlenecks = [(_conv(half, 1), _conv(half, 3)) for _ in range(depth)]
        self.mix = _conv(filters, 1)

    def call(self, inputs, training=None):
        x = self.down(inputs, training=training)
        main, bypass = self.split_main(x, training=training), self.split_bypass(x, training=training)
        for reduce, expand in self.bottlenecks:
            main = main + expand(reduce(main, training=training), training=training)
        return self.mix(tf.concat([main, bypass], axis=-1), training=training)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "depth": self.depth}


@register
class YOLODetector(keras.Model):
    """``images (B, S, S, C) in [-1, 1] -> list over strides of raw (B, S/s, S/s, A, 5 + K)``."""

    def __init__(self, image_size: int = 256, channels: int = 1, num_classes: int = 1, width: int = 16,
                 max_width: int = 256, depth: int = 1, strides=(8, 16, 32), anchors=DEFAULT_ANCHORS,
                 backbone: str = "csp", **kwargs):
        super().__init__(**kwargs)
        self.image_size, self.channels, self.num_classes = image_size, channels, num_classes
        self.width, self.max_width, self.depth, self.backbone = width, max_width, depth, backbone
        self.strides = [int(s) for s in strides]
        self.anchors = [[[float(v) for v in a] for a in scale] for scale in anchors]
        self.num_anchors = len(self.anchors[0])
        levels = int(np.log2(self.strides[-1]))
        widths = [min(width * 2 ** i, max_width) for i in range(levels + 1)]
        if backbone == "csp":
            self.stem = _conv(widths[0], 3)
            self.stages = [CSPStage(widths[i + 1], depth) for i in range(levels)]
        else:
            name, layers = APPLICATION_LAYERS[backbone]
            self.trunk = getattr(keras.applications, name)(include_top=False, weights=None,
                                                           input_shape=(image_size, image_size, 3))
            self.trunk_features = keras.Model(self.trunk.input,
                                              [self.trunk.get_layer(layers[s]).output for s in self.strides])
        self.outputs_at = [int(np.log2(s)) for s in self.strides]  # stage index of each scale
        self.laterals = [_conv(widths[i], 1) for i in self.outputs_at]
        self.merges = [_conv(widths[i], 3) for i in self.outputs_at[:-1]]
        self.head_convs = [_conv(widths[i], 3) for i in self.outputs_at]
        prior = float(np.log(OBJECTNESS_PRIOR / (1 - OBJECTNESS_PRIOR)))
        bias = np.zeros((self.num_anchors, 5 + num_classes), np.float32)
        bias[:, 4] = prior
        self.heads = [keras.layers.Conv2D(self.num_anchors * (5 + num_classes), 1, dtype="float32",
                                          kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                                          bias_initializer=keras.initializers.Constant(bias.reshape(-1)))
                      for _ in self.strides]

    def backbone_features(self, inputs, training=None) -> dict:
        """Backbone feature maps by level (log2 of the stride)."""
        if self.backbone == "csp":
            x, features = self.stem(inputs, training=training), {}
            for level, stage in enumerate(self.stages, start=1):
                x = stage(x, training=training)
                features[level] = x
            return features
        rgb = tf.repeat(inputs, 3, axis=-1) if self.channels == 1 else inputs
        if self.backbone == "resnet50":  # caffe-style input: BGR 0-255 minus the ImageNet means
            rgb = keras.applications.resnet50.preprocess_input((rgb + 1.0) * 127.5)
        return dict(zip(self.outputs_at, self.trunk_features(rgb, training=training)))

    def call(self, inputs, training=None):
        features = self.backbone_features(inputs, training)
        outputs, top = [], None
        for k in reversed(range(len(self.strides))):  # coarse to fine
            x = self.laterals[k](features[self.outputs_at[k]], training=training)
            if top is not None:
                up = tf.image.resize(top, tf.shape(x)[1:3], method="nearest")
                x = self.merges[k](tf.concat([x, up], axis=-1), training=training)
            top = x
            raw = self.heads[k](self.head_convs[k](x, training=training))
            shape = tf.shape(raw)
            outputs.append(tf.reshape(raw, [shape[0], shape[1], shape[2], self.num_anchors,
                                            5 + self.num_classes]))
        return outputs[::-1]

    def decode(self, outputs):
        """Raw outputs -> ``(boxes (B, N, 4) pixels, objectness logits (B, N), class logits (B, N, K))``
        over every cell and anchor of every scale (N = sum of H_s * W_s * A)."""
        boxes, obj, cls = [], [], []
        for raw, stride, anchors in zip(outputs, self.strides, self.anchors):
            b = decode_boxes(raw[..., :4], stride, anchors)
            batch = tf.shape(raw)[0]
            boxes.append(tf.reshape(b, [batch, -1, 4]))
            obj.append(tf.reshape(raw[..., 4], [batch, -1]))
            cls.append(tf.reshape(raw[..., 5:], [batch, -1, self.num_classes]))
        return tf.concat(boxes, 1), tf.concat(obj, 1), tf.concat(cls, 1)

    def detect(self, images, score_threshold: float = 0.001, iou_threshold: float = 0.45,
               max_detections: int = 100, batch_size: int = 16):
        """Detections per image after per-class NMS: a list of ``(boxes (P, 4) float32 pixels,
        scores (P,) in [0, 1], classes (P,) int32)`` numpy triples, scores decreasing."""
        results = []
        for start in range(0, len(images), batch_size):
            chunk = tf.convert_to_tensor(images[start:start + batch_size], tf.float32)
            boxes, obj, cls = self.decode(self(chunk, training=False))
            scores = tf.sigmoid(obj)[..., None] * tf.sigmoid(cls)  # (B, N, K)
            for i in range(int(tf.shape(chunk)[0])):
                best = tf.argmax(scores[i], axis=-1, output_type=tf.int32)
                score = tf.reduce_max(scores[i], axis=-1)
                keep = non_max_suppression(boxes[i], score, best, iou_threshold, max_detections,
                                           score_threshold)
                results.append((tf.gather(boxes[i], keep).numpy(), tf.gather(score, keep).numpy(),
                                tf.gather(best, keep).numpy()))
        return results

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size, "channels": self.channels,
                "num_classes": self.num_classes, "width": self.width, "max_width": self.max_width,
                "depth": self.depth, "strides": self.strides, "anchors": self.anchors,
                "backbone": self.backbone}


def build_detector(config: DetectorConfig) -> YOLODetector:
    """A built ``YOLODetector`` from its config section."""
    model = YOLODetector(config.image_size, config.channels, config.num_classes, config.width,
                         config.max_width, config.depth, config.strides, config.anchors, config.backbone)
    model(tf.zeros((1, config.image_size, config.image_size, config.channels)))
    if config.backbone_weights:
        if not Path(config.backbone_weights).is_file():
            raise InputError(f"model.backbone_weights: {config.backbone_weights} does not exist")
        model.trunk.load_weights(config.backbone_weights)
    return model


def decode_boxes(t, stride: int, anchors) -> tf.Tensor:
    """``t (B, H, W, A, 4)`` raw ``(t_x, t_y, t_w, t_h)`` -> boxes ``(B, H, W, A, 4)`` (x0, y0, x1, y1)
    in input pixels (see the module docstring; ``t_wh`` is clipped to [-10, 10])."""
    t = tf.cast(t, tf.float32)
    shape = tf.shape(t)
    cols, rows = tf.meshgrid(tf.range(shape[2]), tf.range(shape[1]))
    grid = tf.cast(tf.stack([cols, rows], -1), tf.float32)[None, :, :, None, :]
    centre = (grid + tf.sigmoid(t[..., :2])) * float(stride)
    size = tf.constant(anchors, tf.float32) * tf.exp(tf.clip_by_value(t[..., 2:], -10.0, 10.0))
    return tf.concat([centre - size / 2, centre + size / 2], axis=-1)


def non_max_suppression(boxes, scores, classes, iou_threshold: float = 0.45, max_output: int = 100,
                        score_threshold: float = 0.0) -> tf.Tensor:
    """Indices (P,) int32 of the kept boxes, by decreasing score, NMS done separately per class.

    boxes: (N, 4) (x0, y0, x1, y1); scores: (N,); classes: (N,) int. A box is dropped when a
    higher-scoring box of its class overlaps it with IoU > ``iou_threshold``, or when its score
    is below ``score_threshold``. Classes are kept apart by shifting each class's boxes by a
    distinct offset larger than the image, so one ``tf.image.non_max_suppression`` does all.
    """
    scores = tf.cast(scores, tf.float32)
    candidates = tf.cast(tf.reshape(tf.where(scores >= score_threshold), [-1]), tf.int32)
    boxes = tf.gather(tf.cast(boxes, tf.float32), candidates)
    extent = tf.reduce_max(tf.concat([tf.reshape(tf.abs(boxes), [-1]), [0.0]], 0))
    offset = (extent + 1.0) * 2.0 * tf.cast(tf.gather(classes, candidates), tf.float32)[:, None]
    shifted = boxes + offset
    yx = tf.stack([shifted[:, 1], shifted[:, 0], shifted[:, 3], shifted[:, 2]], axis=-1)
    keep = tf.image.non_max_suppression(yx, tf.gather(scores, candidates), max_output,
                                        iou_threshold=iou_threshold)
    return tf.gather(candidates, keep)


def kmeans_anchors(sizes, count: int, iterations: int = 100, seed: int = 0) -> np.ndarray:
    """YOLOv3's anchors: k-means of box sizes ``(N, 2)`` (w, h) with distance 1 - IoU of boxes
    sharing a centre; ``(count, 2)`` sorted by area (split them over the scales, small first)."""
    sizes = np.asarray(sizes, np.float64).reshape(-1, 2)
    if len(sizes) < count:
        raise ValueError(f"{len(sizes)} boxes cannot give {count} anchors")
    rng = np.random.default_rng(seed)
    centres = sizes[rng.choice(len(sizes), count, replace=False)]
    for _ in range(iterations):
        nearest = np.argmax(shape_iou(sizes, centres), axis=1)
        new = np.array([np.median(sizes[nearest == k], 0) if np.any(nearest == k) else centres[k]
                        for k in range(count)])
        if np.allclose(new, centres):
            break
        centres = new
    return centres[np.argsort(centres.prod(1))]


def shape_iou(sizes_a, sizes_b) -> np.ndarray:
    """IoU ``(N, M)`` of boxes of sizes (w, h) ``(N, 2)`` and ``(M, 2)`` placed on one centre."""
    a, b = np.asarray(sizes_a, np.float64), np.asarray(sizes_b, np.float64)
    inter = np.minimum(a[:, None, 0], b[None, :, 0]) * np.minimum(a[:, None, 1], b[None, :, 1])
    return inter / (a[:, None].prod(-1) + b[None].prod(-1) - inter)
