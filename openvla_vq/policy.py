"""A VLA policy: images + instructions -> un-normalized action chunks, through any registered action tokenizer.

LIBERO observation -> ImageProcessor -> PrismaticVLA (batched, constrained greedy decoding) ->
action tokenizer decode -> un-normalization with the checkpoint's statistics -> actions [B, K, D].
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from openvla_vq.action_tokenizers import ActionTokenizer, ActionTokenizerError, load_action_tokenizer
from openvla_vq.data.normalization import unnormalize_actions
from openvla_vq.model.prismatic import PrismaticVLA
from openvla_vq.model.prompt import prompt_ids
from openvla_vq.model.text_tokenizer import check_tokenizer_fits_model, load_text_tokenizer
from openvla_vq.model.vision import ImageProcessor


def read_statistics(folder: Path, model: PrismaticVLA) -> dict | None:
    """The folder's dataset_statistics.json, else the statistics stored in the model config (OpenVLA's norm_stats)."""
    path = folder / "dataset_statistics.json"
    return json.loads(path.read_text()) if path.is_file() else model.config.norm_stats


class VLAPolicy:
    def __init__(self, model: PrismaticVLA, text_tokenizer, action_tokenizer: ActionTokenizer,
                 norm_stats: dict | None = None, unnorm_key: str | None = None) -> None:
        action_tokenizer = action_tokenizer.for_vocab(model.config.base_vocab_size)
        check_tokenizer_fits_model(action_tokenizer, model.config, text_tokenizer.all_special_ids)
        self.model = model.eval()
        self.text_tokenizer = text_tokenizer
        self.action_tokenizer = action_tokenizer
        self.image_processor = ImageProcessor(model.vision_backbone)
        self.constraint = action_tokenizer.decoding_constraint(model.config.text_config["vocab_size"])
        self.action_stats = self._pick_stats(norm_stats, unnorm_key)
        self.last_latency_s = 0.0
        self.ids_emitted, self.chunks_emitted = 0, 0  # what generation produced (variable-length tokenizers vary)

    @staticmethod
    def _pick_stats(norm_stats: dict | None, unnorm_key: str | None) -> dict | None:
        if not norm_stats:
            return None
        if unnorm_key is None:
            if len(norm_stats) != 1:
                raise KeyError(f"the checkpoint has statistics for {sorted(norm_stats)}; pass unnorm_key=<one of them>")
            unnorm_key = next(iter(norm_stats))
        if unnorm_key not in norm_stats:
            raise KeyError(f"unnorm_key {unnorm_key!r} not in the checkpoint's statistics {sorted(norm_stats)}")
        return norm_stats[unnorm_key]

    @classmethod
    def from_pretrained(cls, folder: str | Path, action_tokenizer: ActionTokenizer, unnorm_key: str | None = None,
                        dtype: torch.dtype = torch.float32, device: str = "cpu") -> "VLAPolicy":
        folder = Path(folder)
        model = PrismaticVLA.from_pretrained(folder, dtype=dtype, device=device)
        return cls(model, load_text_tokenizer(folder), action_tokenizer.to(device),
                   read_statistics(folder, model), unnorm_key)

    @property
    def num_images(self) -> int:
        """Images per sample the model reads: 1 (third-person camera) or 2 (+ wrist, in that order)."""
        return self.model.config.num_images_in_input

    @torch.no_grad()
    def predict_ids(self, images, instructions: list[str]) -> torch.Tensor:
        pixels = self.image_processor(images)
        prompts = [prompt_ids(self.text_tokenizer, text) for text in instructions]
        return self.model.generate_constrained(pixels, prompts, self.constraint)

    def predict_action(self, images, instructions: list[str]) -> np.ndarray:
        """Images (uint8 HxWx3 or PIL, one per sample, or per sample a tuple of its cameras: (third-person, wrist)) +
        instructions -> actions [B, K, D] in the robot's units."""
        if len(images) != len(instructions):
            raise ValueError(f"got {len(images)} images for {len(instructions)} instructions")
        start = time.perf_counter()
        ids = self.predict_ids(images, instructions).cpu()
        actions = self.action_tokenizer.decode(ids).numpy()
        rows = self.action_tokenizer.token_rows(ids)
        self.ids_emitted, self.chunks_emitted = self.ids_emitted + sum(map(len, rows)), self.chunks_emitted + len(rows)
        self.last_latency_s = time.perf_counter() - start
        return unnormalize_actions(actions, self.action_stats) if self.action_stats is not None else actions

    @property
    def ids_per_chunk(self) -> float:
        """Mean ids generated per chunk so far (the end marker included); the tokenizer's length before any query."""
        return self.ids_emitted / self.chunks_emitted if self.chunks_emitted else float(self.action_tokenizer.tokens_per_chunk)


def load_policy(checkpoint: str | Path, tokenizer: str | None = None, device: str = "cpu",
                dtype: torch.dtype = torch.float32, unnorm_key: str | None = None) -> tuple[VLAPolicy, dict]:
    """A policy from a fine-tuning checkpoint (runs/<run>/checkpoints/step_N: base + adapter, merged in memory)
    or from a model folder (merged by training/merge.py, or OpenVLA's own). Returns (policy, info) where info
    holds the training settings the evaluation protocol depends on (image augmentation -> centre crop)."""
    folder = Path(checkpoint)
    run_config = json.loads((folder / "run_config.json").read_text()) if (folder / "run_config.json").is_file() else {}
    if (folder / "adapter").is_dir():
        from openvla_vq.training.merge import merged_model

        model, text_folder = merged_model(folder, run_config, dtype, device), run_config["vla_path"]
    else:
        model, text_folder = PrismaticVLA.from_pretrained(folder, dtype=dtype, device=device), folder
    ref_file = folder / "action_tokenizer.json"  # (tokenizer.json in a model folder is the text tokenizer)
    reference = json.loads(ref_file.read_text()) if ref_file.is_file() else {}
    spec = tokenizer or reference.get("spec") or reference.get("name")
    if spec is None:
        raise ActionTokenizerError(f"{folder} does not say which action tokenizer it was trained with: pass --tokenizer NAME")
    action_tokenizer = load_action_tokenizer(spec).for_vocab(model.config.base_vocab_size)
    if reference.get("fingerprint") and reference["fingerprint"] != action_tokenizer.fingerprint():
        raise ActionTokenizerError(f"{folder} was trained with tokenizer {reference.get('name')!r} but {spec!r} has different weights")
    policy = VLAPolicy(model, load_text_tokenizer(text_folder), action_tokenizer.to(device),
                       read_statistics(folder, model), unnorm_key)
    return policy, {"tokenizer": spec, "image_aug": run_config.get("image_aug", True), "run_config": run_config}
