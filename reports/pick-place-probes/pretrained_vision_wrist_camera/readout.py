"""How well a linear map reads the expert's waypoints (relative to the hand) from what the language model sees.

    python reports/pick-place-probes/pretrained_vision_wrist_camera/readout.py runs/pp-vision

For three models of one run (random init `vla`, after vision pretraining `vla-pretrained`, and the binning
fine-tune's last checkpoint, LoRA merged), the projected patch embeddings of the scene frames (the last 4 episodes
per task held out, as the pretraining's report holds them out) are fitted by ridge regression in closed form
(dual form: the features have 32,768 dimensions, the frames a few thousand). The ridge strength is chosen per
model on the last tenth of the training frames (the last few episodes), then refitted on all training episodes,
and, as a second fit, on the first 10 episodes only (as many placements as `make learn-libero` has demonstrations
per task). Printed: the mean |waypoint error| on the held-out placements (cm), per task, next to predicting the
training mean.
"""

import sys
from pathlib import Path

import numpy as np
import torch

from openvla_vq.model.prismatic import PrismaticVLA
from openvla_vq.model.vision import ImageProcessor
from openvla_vq.policy import load_policy
from openvla_vq.training.pretrain_vision import encode, load_frames


@torch.no_grad()
def features(model: PrismaticVLA, images: np.ndarray) -> np.ndarray:
    processor = ImageProcessor(model.vision_backbone)
    return np.concatenate([encode(model, processor, images[i:i + 64]).flatten(1).double().numpy()
                           for i in range(0, len(images), 64)])


def ridge(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, strength: float) -> np.ndarray:
    mean_x, mean_y = x.mean(0), y.mean(0)
    gram = (x - mean_x) @ (x - mean_x).T
    alpha = np.linalg.solve(gram + strength * np.trace(gram) / len(x) * np.eye(len(x)), y - mean_y)
    return (x_test - mean_x) @ ((x - mean_x).T @ alpha) + mean_y


def main(run: Path) -> None:
    models = {"random init": PrismaticVLA.from_pretrained(run / "vla"),
              "vision pretrained": PrismaticVLA.from_pretrained(run / "vla-pretrained"),
              "fine-tuned (binning)": load_policy(run / "runs/binning/checkpoints/step_00002500")[0].model}
    frames = load_frames(run / "scene_frames", 2, held_out=4)
    first_episodes = {task: sum(len(np.load(run / "scene_frames" / f"task{task:02d}_ep{e:03d}.npz")["phase"])
                                for e in range(10)) for task in frames}  # frames of each task's first 10 episodes
    print("| model | task | held-out waypoint error (cm), 46 placements | 10 placements | training mean (cm) |\n"
          "|---|---|---|---|---|")
    for name, model in models.items():
        model.eval()
        for task, splits in sorted(frames.items()):
            train, test = splits["train"], splits["held_out"]
            x, x_test = features(model, train["images"]), features(model, test["images"])
            y = train["waypoints"].reshape(len(x), -1)
            y_test = test["waypoints"].reshape(len(x_test), -1)
            errors = []
            for n in (len(x), first_episodes[task]):
                cut = int(n * 0.9)  # the last tenth of these training frames chooses the ridge strength
                best = min((1e-4, 1e-3, 1e-2, 1e-1, 1.0),
                           key=lambda s: np.abs(ridge(x[:cut], y[:cut], x[cut:n], s) - y[cut:n]).mean())
                errors.append(f"{np.abs(ridge(x[:n], y[:n], x_test, best) - y_test).mean() * 100:.2f} (ridge {best:g})")
            baseline = np.abs(y.mean(0) - y_test).mean() * 100
            print(f"| {name} | {task} | {' | '.join(errors)} | {baseline:.2f} |", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
