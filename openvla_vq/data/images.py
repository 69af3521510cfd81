"""Image operations shared by training (tf.data) and evaluation: OpenVLA's resize, augmentation and centre crop."""

from __future__ import annotations

import math

from openvla_vq.data.tf_env import tf

CROP_AREA = 0.9  # OpenVLA's random-resized-crop scale and the matching eval-time centre crop


def resize_uint8(image: tf.Tensor, size: int) -> tf.Tensor:
    """Lanczos3 with antialiasing, rounded and clipped back to uint8 (dlimp/OpenVLA `resize_image`)."""
    out = tf.image.resize(image, (size, size), method="lanczos3", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)


def _crop_and_resize(image: tf.Tensor, box: tf.Tensor) -> tf.Tensor:
    size = tf.shape(image)[:2]
    out = tf.image.crop_and_resize(tf.cast(image, tf.float32)[None], box[None], [0], size)[0]
    return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)


def center_crop(image: tf.Tensor, area: float = CROP_AREA) -> tf.Tensor:
    """Crop the central `area` fraction (square) and resize back: eval counterpart of the random crop."""
    side = math.sqrt(area)
    lo = (1 - side) / 2
    return _crop_and_resize(image, tf.constant([lo, lo, lo + side, lo + side], tf.float32))


def augment(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """OpenVLA's training augmentation, in its order: random crop (0.9 area, square), brightness 0.2,
    contrast [0.8, 1.2], saturation [0.8, 1.2], hue 0.05. `seed` is a stateless [2] int seed."""
    seeds = tf.random.experimental.stateless_split(seed, 6)
    side = math.sqrt(CROP_AREA)
    y0, x0 = tf.unstack(tf.random.stateless_uniform([2], seeds[0], 0.0, 1.0 - side))
    image = _crop_and_resize(image, tf.stack([y0, x0, y0 + side, x0 + side]))
    x = tf.cast(image, tf.float32) / 255.0
    x = tf.image.stateless_random_brightness(x, 0.2, seeds[1])
    x = tf.image.stateless_random_contrast(x, 0.8, 1.2, seeds[2])
    x = tf.image.stateless_random_saturation(x, 0.8, 1.2, seeds[3])
    x = tf.image.stateless_random_hue(x, 0.05, seeds[4])
    return tf.cast(tf.round(tf.clip_by_value(x, 0.0, 1.0) * 255.0), tf.uint8)
