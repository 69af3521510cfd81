"""OpenVLA's prompt and label layout, shared by training batches and inference.

    <s> In: What action should the robot take to {instruction}?\\nOut: ▁ <action ids ...> </s>

Action ids come straight from the action tokenizer (never decoded to text and re-tokenized), and the
loss covers exactly the action ids and EOS (tokens_per_chunk + 1 labels). The prompt ends with the
SentencePiece "▁" piece (29871 for Llama-2), which is how OpenVLA's training tokenized "Out: " before
the action characters and what its predict_action appends at inference.
"""

from __future__ import annotations

from typing import Sequence

import torch

from openvla_vq.model.prismatic import IGNORE_INDEX

PROMPT = "In: What action should the robot take to {instruction}?\nOut:"
SPACE_PIECE = "▁"


def prompt_ids(text_tokenizer, instruction: str, template: str = PROMPT) -> list[int]:
    """Token ids of the prompt, BOS first, ending with the "▁" piece. template: another question in the same layout
    (training/pretrain_vla.py asks where the waypoints are)."""
    ids = list(text_tokenizer(template.format(instruction=instruction.lower().strip())).input_ids)
    space = text_tokenizer.convert_tokens_to_ids(SPACE_PIECE)
    if ids[-1] != space:
        ids.append(space)
    return ids


def training_example(text_tokenizer, instruction: str, action_ids: Sequence[int],
                     template: str = PROMPT) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, labels) for one sample; labels are IGNORE_INDEX except on the action ids and EOS."""
    prompt = prompt_ids(text_tokenizer, instruction, template)
    target = [int(i) for i in action_ids] + [text_tokenizer.eos_token_id]
    input_ids = torch.tensor(prompt + target, dtype=torch.long)
    labels = torch.tensor([IGNORE_INDEX] * len(prompt) + target, dtype=torch.long)
    supervised = int((labels != IGNORE_INDEX).sum())
    assert supervised == len(action_ids) + 1, f"{supervised} supervised labels, expected tokens_per_chunk + 1 = {len(action_ids) + 1}"
    return input_ids, labels


def collate(examples: list[dict], pad_token_id: int, max_length: int) -> dict[str, torch.Tensor]:
    """Right-pad input_ids (pad id) and labels (IGNORE_INDEX), stack pixel_values (when the examples carry them);
    attention_mask marks real tokens."""
    longest = min(max(len(e["input_ids"]) for e in examples), max_length)
    b = len(examples)
    input_ids = torch.full((b, longest), pad_token_id, dtype=torch.long)
    labels = torch.full((b, longest), IGNORE_INDEX, dtype=torch.long)
    for i, e in enumerate(examples):
        n = min(len(e["input_ids"]), longest)
        input_ids[i, :n] = e["input_ids"][:n]
        labels[i, :n] = e["labels"][:n]
    batch = {"input_ids": input_ids, "labels": labels, "attention_mask": (input_ids != pad_token_id).long()}
    if "pixel_values" in examples[0]:
        batch["pixel_values"] = torch.stack([e["pixel_values"] for e in examples])
    return batch
