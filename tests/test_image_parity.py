"""Eval centre crop and training augmentation exactly as OpenVLA (experiments/robot/openvla_utils.py) and dlimp
(augment_image with OpenVLA's kwargs), checked against independent implementations on real LIBERO renders."""

import math

import numpy as np
import pytest

from openvla_vq.data.images import augment, center_crop, resize_uint8
from openvla_vq.data.tf_env import tf
from openvla_vq.data.preprocess import preprocess_image
from openvla_reference import CHECKPOINT, image

pytestmark = pytest.mark.skipif(not CHECKPOINT.is_dir(), reason="LIBERO renders of ../shared/openvla-reference missing")


def renders() -> list[np.ndarray]:
    """224 px LIBERO frames: a 256 px agentview render resized as the pipeline does, and a crop of a task preview."""
    return [resize_uint8(tf.constant(image("img2")), 224).numpy(), image("img1")]


def numpy_crop_and_resize(img: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """TF's crop_and_resize (bilinear, output = input size) in float64, from its documented sampling grid."""
    h, w = img.shape[:2]
    y0, x0, y1, x1 = box
    ys = y0 * (h - 1) + np.arange(h) * (y1 - y0) * (h - 1) / (h - 1)
    xs = x0 * (w - 1) + np.arange(w) * (x1 - x0) * (w - 1) / (w - 1)
    top, left = np.floor(ys).astype(int), np.floor(xs).astype(int)
    bottom, right = np.minimum(top + 1, h - 1), np.minimum(left + 1, w - 1)
    dy, dx = (ys - top)[:, None, None], (xs - left)[None, :, None]
    a, b = img[top][:, left], img[top][:, right]
    c, d = img[bottom][:, left], img[bottom][:, right]
    upper, lower = a + (b - a) * dx, c + (d - c) * dx
    return upper + (lower - upper) * dy


def independent_center_crop(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OpenVLA's eval crop: x/255 -> centre box of side sqrt(0.9) -> bilinear -> clip -> trunc(x * 255.5).
    Returns (uint8 result, float64 pre-quantization values x * 255.5)."""
    side = math.sqrt(0.9)
    lo = (1 - side) / 2
    x = np.clip(numpy_crop_and_resize(img.astype(np.float64) / 255.0, (lo, lo, lo + side, lo + side)), 0, 1) * 255.5
    return np.minimum(np.trunc(x), 255).astype(np.uint8), x


def test_center_crop_equals_independent_implementation_on_renders():
    for frame in renders():
        ours = center_crop(tf.constant(frame)).numpy()
        expected, scaled = independent_center_crop(frame)
        # float32 (TF) vs float64 (here) may straddle an integer only where x * 255.5 is within 1e-3 of one
        near_integer = np.abs(scaled - np.round(scaled)) < 1e-3
        differ = ours != expected
        assert not (differ & ~near_integer).any()
        assert differ.mean() < 1e-3 and np.abs(ours.astype(int) - expected).max() <= 1
        # truncating x * 255.5 is not rounding x * 255: the old conversion would differ on many pixels
        rounded = np.round(np.clip(scaled / 255.5, 0, 1) * 255).astype(np.uint8)
        assert (rounded != expected).mean() > 0.05


def test_eval_preprocessing_uses_the_exact_crop():
    frame = image("img2")  # 256 px render, already rotated 180 degrees
    jpeg = tf.io.decode_image(tf.io.encode_jpeg(tf.constant(frame)), channels=3).numpy()
    resized = resize_uint8(tf.constant(jpeg), 224).numpy()
    np.testing.assert_array_equal(preprocess_image(frame, crop=True), center_crop(tf.constant(resized)).numpy())
    np.testing.assert_array_equal(preprocess_image(frame, crop=False), resized)


def dlimp_openvla_augment(img: np.ndarray, seed) -> np.ndarray:
    """dlimp.augment_image(image, seed, **OpenVLA's image_augment_kwargs), written from dlimp's source: convert
    to float once, pass the same seed to every op in augment_order, clip after each, convert back saturating."""
    x = tf.image.convert_image_dtype(tf.constant(img)[None], tf.float32)  # random_resized_crop works on a batch
    scale, ratio = (0.9, 0.9), (1.0, 1.0)
    s = tf.random.stateless_uniform((1,), seed, scale[0], scale[1])
    r = tf.exp(tf.random.stateless_uniform((1,), seed, math.log(ratio[0]), math.log(ratio[1])))
    hh, ww = tf.clip_by_value(tf.sqrt(s / r), 0, 1), tf.clip_by_value(tf.sqrt(s * r), 0, 1)
    oy, ox = tf.random.stateless_uniform((1,), seed, 0, 1 - hh), tf.random.stateless_uniform((1,), seed, 0, 1 - ww)
    x = tf.image.crop_and_resize(x, tf.stack([oy, ox, oy + hh, ox + ww], axis=1), tf.range(1), img.shape[:2])[0]
    x = tf.clip_by_value(x, 0, 1)
    x = tf.clip_by_value(tf.image.stateless_random_brightness(x, 0.2, seed=seed), 0, 1)
    x = tf.clip_by_value(tf.image.stateless_random_contrast(x, 0.8, 1.2, seed=seed), 0, 1)
    x = tf.clip_by_value(tf.image.stateless_random_saturation(x, 0.8, 1.2, seed=seed), 0, 1)
    x = tf.clip_by_value(tf.image.stateless_random_hue(x, 0.05, seed=seed), 0, 1)
    return tf.image.convert_image_dtype(x, tf.uint8, saturate=True).numpy()


def test_training_augmentation_equals_dlimp_bit_for_bit():
    for frame in renders():
        for seed in ([0, 1], [7, 123], [2**20, 5]):
            seed = tf.constant(seed, tf.int64)
            np.testing.assert_array_equal(augment(tf.constant(frame), seed).numpy(), dlimp_openvla_augment(frame, seed))


def test_random_crop_box_slides_along_the_diagonal():
    """One seed for every draw (dlimp) makes the height and width offsets equal: with colour ops neutralised, the
    augmented frame equals the crop at (u, u) for the seed's u and differs from a crop at (u, 0)."""
    frame = renders()[0]
    seed = tf.constant([3, 4], tf.int64)
    side = tf.sqrt(tf.constant([0.9], tf.float32))
    u = float(tf.random.stateless_uniform((1,), seed, 0, 1 - side)[0])
    diagonal = numpy_crop_and_resize(frame / 255.0, (u, u, u + float(side[0]), u + float(side[0])))
    off_diagonal = numpy_crop_and_resize(frame / 255.0, (u, 0, u + float(side[0]), float(side[0])))
    x = tf.image.convert_image_dtype(tf.constant(frame), tf.float32)
    from openvla_vq.data.images import _random_resized_crop

    cropped = _random_resized_crop(x, seed).numpy()
    assert np.abs(cropped - diagonal).max() < 1e-5 < np.abs(cropped - off_diagonal).max()
