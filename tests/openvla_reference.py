"""../shared/openvla-reference: a tiny checkpoint in OpenVLA's exact layout and outputs of OpenVLA's own code for it.

The checkpoint's config.json names the full-size timm towers; `vision_overrides.json` holds the smaller tower
sizes it was built with. `loadable_copy` links the folder's files into a new folder whose config.json also
carries them as `timm_model_kwargs` (our documented extension), leaving everything else, `auto_map` and
`model_type: openvla` included, as OpenVLA wrote it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared"
OPENVLA_REF = SHARED / "openvla-reference"
CHECKPOINT = OPENVLA_REF / "checkpoint"
GOLDENS = OPENVLA_REF / "goldens"
LLAMA2_TOKENIZER = SHARED / "llama2-tokenizer"
IMAGE_FILES = {"img1": "input_img1_224x224.npy", "img2": "input_img2_256x256.npy", "img3": "input_img3_200x300.npy"}


def golden() -> dict:
    return json.loads((GOLDENS / "golden.json").read_text())


def image(name: str) -> np.ndarray:
    return np.load(GOLDENS / IMAGE_FILES[name])


def loadable_copy(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for item in CHECKPOINT.iterdir():
        if item.name != "config.json":
            (folder / item.name).symlink_to(item)
    config = json.loads((CHECKPOINT / "config.json").read_text())
    overrides = json.loads((CHECKPOINT / "vision_overrides.json").read_text())
    per_id = next(value for key, value in overrides.items() if key.startswith("timm.create_model"))
    config["timm_model_kwargs"] = [per_id[model_id] for model_id in config["timm_model_ids"]]
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder
