"""Samples -> model batches: the one place where data meets the action tokenizer and the prompt format."""

from __future__ import annotations

import numpy as np
import torch

from openvla_vq.action_tokenizers import ActionTokenizer
from openvla_vq.model.prompt import PROMPT, collate, training_example
from openvla_vq.model.vision import ImageProcessor


def sample_images(sample: dict) -> tuple[np.ndarray, ...]:
    """A sample's model input images in camera order: the third-person image, plus the wrist image when loaded."""
    return (sample["image"], sample["wrist_image"]) if "wrist_image" in sample else (sample["image"],)


class ActionChunkCollator:
    """Batch-encode the normalized action chunks, build OpenVLA prompts/labels, normalize images, pad.

    The batch also carries the normalized `actions` [B, K, D], for action-space metrics (L1). template: the prompt
    (training/pretrain_vla.py asks another question, answered in the same kind of tokens).
    """

    def __init__(self, text_tokenizer, action_tokenizer: ActionTokenizer, image_processor: ImageProcessor,
                 pad_token_id: int, max_length: int, template: str = PROMPT) -> None:
        self.text_tokenizer, self.action_tokenizer = text_tokenizer, action_tokenizer
        self.image_processor, self.pad_token_id, self.max_length = image_processor, pad_token_id, max_length
        self.template = template

    def __call__(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        actions = torch.from_numpy(np.stack([s["actions"] for s in samples]))
        rows = self.action_tokenizer.token_rows(self.action_tokenizer.encode(actions))  # lengths may differ
        examples = []
        for sample, row in zip(samples, rows):
            input_ids, labels = training_example(self.text_tokenizer, sample["instruction"], row, self.template)
            examples.append({"input_ids": input_ids, "labels": labels})
        batch = collate(examples, self.pad_token_id, self.max_length)
        batch["pixel_values"] = self.image_processor([sample_images(sample) for sample in samples])
        batch["actions"] = actions
        return batch
