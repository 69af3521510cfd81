"""Observation preprocessing of OpenVLA's LIBERO eval, built on the training pipeline's image ops.

The env worker already rotates frames by 180 degrees; here: JPEG encode/decode round trip (the training
images were JPEG), lanczos3 resize to 224 (the same `resize_uint8` as training), and for checkpoints
trained with augmentation the 0.9-area centre crop that matches the random crop's scale.
"""

from __future__ import annotations

import numpy as np

from openvla_vq.data.images import center_crop, resize_uint8
from openvla_vq.data.tf_env import tf


def preprocess_image(image: np.ndarray, size: int = 224, crop: bool = True) -> np.ndarray:
    x = tf.io.decode_image(tf.io.encode_jpeg(tf.convert_to_tensor(image)), expand_animations=False, channels=3)
    x = resize_uint8(x, size)
    if crop:
        x = center_crop(x)
    return x.numpy()
