"""Image operations shared by training (tf.data) and evaluation: OpenVLA's resize, augmentation and centre crop.

Both crops work as OpenVLA's code does, on float images in [0, 1]: uint8 -> float by `convert_image_dtype`
(x / 255), `crop_and_resize` (bilinear) back to the input size, clip to [0, 1], and back to uint8 by
`convert_image_dtype(saturate=True)`, which truncates x * 255.5 (it does not round x * 255).

Training (dlimp's `augment_image` with OpenVLA's kwargs): the image is converted to float once, every op gets
the *same* stateless seed and is followed by a clip to [0, 1], and the random crop draws its height and width
offsets from that one seed too, so they are equal (the crop box slides along the diagonal). The same seed also
means the brightness delta and the contrast factor come from the same uniform draw. We reproduce all of it so
a model trained here sees OpenVLA's image distribution; tests compare against dlimp's semantics bit for bit.
"""

from __future__ import annotations

from openvla_vq.data.tf_env import tf

CROP_AREA = 0.9  # OpenVLA's random-resized-crop scale and the matching eval-time centre crop


def resize_uint8(image: tf.Tensor, size: int) -> tf.Tensor:
    """Lanczos3 with antialiasing, rounded and clipped back to uint8 (dlimp/OpenVLA `resize_image`)."""
    out = tf.image.resize(image, (size, size), method="lanczos3", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)


def _crop_and_resize(image: tf.Tensor, box: tf.Tensor) -> tf.Tensor:
    """Float [H, W, C] in [0, 1], box [4] (y0, x0, y1, x1) -> the box resized bilinearly to [H, W, C]."""
    return tf.image.crop_and_resize(image[None], box[None], [0], tf.shape(image)[:2])[0]


def center_crop(image: tf.Tensor, area: float = CROP_AREA) -> tf.Tensor:
    """uint8 [H, W, 3] -> the central `area` fraction (square side sqrt(area)) resized back, uint8.

    OpenVLA's eval `crop_and_resize` (experiments/robot/openvla_utils.py), the counterpart of the random crop."""
    x = tf.image.convert_image_dtype(image, tf.float32)
    side = tf.sqrt(tf.constant(area, tf.float32))
    lo = (1.0 - side) / 2.0
    x = tf.clip_by_value(_crop_and_resize(x, tf.stack([lo, lo, lo + side, lo + side])), 0.0, 1.0)
    return tf.image.convert_image_dtype(x, tf.uint8, saturate=True)


def _random_resized_crop(x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """dlimp's random_resized_crop with scale [0.9, 0.9] and ratio [1, 1]: a square of side sqrt(0.9). dlimp draws
    the height and the width offset with the same seed, so both are this one draw."""
    side = tf.sqrt(tf.constant([CROP_AREA], tf.float32))
    offset = tf.random.stateless_uniform((1,), seed, 0.0, 1.0 - side)
    return _crop_and_resize(x, tf.concat([offset, offset, offset + side, offset + side], axis=0))


def augment(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """OpenVLA's training augmentation, in its order: random crop (0.9 area, square), brightness 0.2,
    contrast [0.8, 1.2], saturation [0.8, 1.2], hue 0.05. uint8 in, uint8 out; `seed` is a stateless [2] seed."""
    x = tf.image.convert_image_dtype(image, tf.float32)
    ops = (
        _random_resized_crop,
        lambda im, s: tf.image.stateless_random_brightness(im, 0.2, s),
        lambda im, s: tf.image.stateless_random_contrast(im, 0.8, 1.2, s),
        lambda im, s: tf.image.stateless_random_saturation(im, 0.8, 1.2, s),
        lambda im, s: tf.image.stateless_random_hue(im, 0.05, s),
    )
    for op in ops:
        x = tf.clip_by_value(op(x, seed), 0.0, 1.0)
    return tf.image.convert_image_dtype(x, tf.uint8, saturate=True)
