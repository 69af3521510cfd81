"""How far OpenVLA's training augmentation moves the tiny VLA's projected image features, against how far another
placement of the objects does (the signal the policy must read).

For tasks 47 and 56, demonstrations 0-3 and steps 0 and 20: the mean |difference| of the projector's output
(both towers, then the projector), relative to its mean |value|, between (a) the frame and the next demonstration's
frame at that step, (b) two draws of the full augmentation (0.9-area random crop, brightness, contrast, saturation,
hue), (c) two draws of the random crop alone. Each camera is fed to every image slot of the model.

    python reports/pick-place-probes/image_aug_wrist_camera/feature_shift.py MODEL EPISODES_FOLDER

MODEL: a model folder (the random-init tiny VLA) or a fine-tuning checkpoint (base + adapter, merged in memory).
EPISODES_FOLDER: the generator's .episodes/<dataset>-<version>/ folder holding task47_try000.npz ...
"""

import functools
import sys
from pathlib import Path

import numpy as np
import torch

from openvla_vq.data.images import _random_resized_crop, augment, resize_uint8
from openvla_vq.data.tf_env import tf
from openvla_vq.model.prismatic import PrismaticVLA
from openvla_vq.model.vision import ImageProcessor
from openvla_vq.policy import load_policy


def main(model_path: Path, episodes: Path) -> None:
    model = (load_policy(model_path)[0].model if (model_path / "adapter").is_dir()
             else PrismaticVLA.from_pretrained(model_path))
    processor = ImageProcessor(model.vision_backbone)

    @functools.cache
    def recording(task: int, demo: int, camera: str) -> np.ndarray:  # each episode's camera read once
        with np.load(episodes / f"task{task}_try{demo:03d}.npz") as z:
            return z[camera]

    def frame(task: int, demo: int, step: int, camera: str) -> tf.Tensor:  # as fine-tuning decodes it
        return resize_uint8(tf.io.decode_image(tf.io.encode_jpeg(recording(task, demo, camera)[step]), channels=3), 224)

    def crop_only(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        x = tf.image.convert_image_dtype(image, tf.float32)
        return tf.image.convert_image_dtype(tf.clip_by_value(_random_resized_crop(x, seed), 0, 1), tf.uint8, saturate=True)

    @torch.no_grad()
    def features(image: tf.Tensor) -> torch.Tensor:
        return model.project_patches(processor([(image.numpy(),) * model.config.num_images_in_input]))

    for camera in ("images", "wrist_images"):
        shifts: dict[str, list[float]] = {"other placement (next demonstration, same step)": [],
                                          "full augmentation (two draws)": [], "random crop only (two draws)": []}
        for task in (47, 56):
            for demo in range(4):
                for step in (0, 20):
                    a, b = frame(task, demo, step, camera), frame(task, demo + 1, step, camera)
                    fa = features(a)
                    scale = fa.abs().mean()
                    seeds = [tf.constant([k, demo * 7 + step], tf.int64) for k in (1, 2)]
                    pairs = ((features(b), fa), (features(augment(a, seeds[0])), features(augment(a, seeds[1]))),
                             (features(crop_only(a, seeds[0])), features(crop_only(a, seeds[1]))))
                    for name, (x, y) in zip(shifts, pairs):
                        shifts[name].append(float((x - y).abs().mean() / scale))
        print(camera)
        for name, values in shifts.items():
            print(f"  {name}: {np.mean(values):.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
