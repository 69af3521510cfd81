"""Prismatic / OpenVLA as a plain torch module on transformers 5: no remote code, batched constrained decoding.

State-dict names are OpenVLA's (`vision_backbone.featurizer.*`, `vision_backbone.fused_featurizer.*`,
`projector.fc1|fc2|fc3.*`, `language_model.*`), so an OpenVLA checkpoint folder loads with strict key
checking. The sequence fed to the LLM is [BOS, 256 projected patches, prompt..., actions..., EOS]
(patches right after BOS, as OpenVLA).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from accelerate import init_empty_weights
from huggingface_hub import save_torch_state_dict
from torch import nn
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from openvla_vq.action_tokenizers.base import DecodingConstraint, PositionConstraint
from openvla_vq.io import CheckpointError, atomic_dir, check_safetensors, check_state_dict, load_safetensors
from openvla_vq.model.config import VLAConfig
from openvla_vq.model.vision import FusedVisionBackbone

IGNORE_INDEX = -100


class FusedMLPProjector(nn.Module):
    """fc1 (D -> 4D), GELU, fc2 (4D -> LLM), GELU, fc3 (LLM -> LLM): OpenVLA's "fused-gelu-mlp"."""

    def __init__(self, vision_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
        self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
        self.fc3 = nn.Linear(llm_dim, llm_dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.act(self.fc2(self.act(self.fc1(x)))))


class PrismaticVLA(nn.Module):
    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        self.config = config
        self.vision_backbone = FusedVisionBackbone(config)
        text = LlamaConfig(**{k: v for k, v in config.text_config.items() if k != "model_type"})
        self.projector = FusedMLPProjector(self.vision_backbone.embed_dim, text.hidden_size)
        self.language_model = LlamaForCausalLM(text)

    @property
    def num_patches(self) -> int:
        """Patches in the LLM's sequence: every input image's."""
        return self.vision_backbone.num_patches * self.config.num_images_in_input

    # ---- forward ------------------------------------------------------------------------
    def project_patches(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 6 n, H, W] -> patch embeddings in the LLM's space [B, P, H] (on the model's device and dtype)."""
        if pixel_values.shape[1] != 6 * self.config.num_images_in_input:
            raise ValueError(f"pixel_values have {pixel_values.shape[1]} channels; this model reads "
                             f"{self.config.num_images_in_input} image(s) of 6 channels (num_images_in_input)")
        weight = self.projector.fc1.weight
        return self.projector(self.vision_backbone(pixel_values.to(weight.device, weight.dtype)))

    def embed_multimodal(self, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """[BOS] + projected patches + the rest of input_ids, as embeddings [B, 1 + P + (L - 1), H]."""
        patches = self.project_patches(pixel_values)
        text = self.language_model.get_input_embeddings()(input_ids)
        return torch.cat([text[:, :1], patches.to(text.dtype), text[:, 1:]], dim=1)

    def expand_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Text labels [B, L] -> labels aligned with the multimodal sequence [B, 1 + P + L - 1] (patches unsupervised)."""
        b, p = labels.shape[0], self.num_patches
        return torch.cat([labels[:, :1], labels.new_full((b, p), IGNORE_INDEX), labels[:, 1:]], dim=1)

    def supervised_tail(self, labels: torch.Tensor) -> int:
        """Trailing positions of the multimodal sequence that the loss reads: from the one predicting the batch's
        first supervised token to the end (0: all of them). Logits for only these give the same loss as for all."""
        supervised = (labels[:, 1:] != IGNORE_INDEX).any(0).nonzero()  # BOS (label 0) sits before the patches
        if bool(labels[:, 0].ne(IGNORE_INDEX).any()) or not len(supervised):
            return 0  # 0: every position
        return labels.shape[1] - (1 + int(supervised[0])) + 1

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values: torch.Tensor,
                labels: torch.Tensor | None = None, logits_to_keep: int = 0):
        """Causal-LM forward; logits/labels cover [BOS, patches, text...], patch positions are never supervised.

        logits_to_keep: n > 0 computes only the last n positions' logits and the loss over their labels (training
        passes `supervised_tail(labels)`: the same loss without the vocabulary projection of every image patch)."""
        embeds = self.embed_multimodal(pixel_values, input_ids)
        b, p = input_ids.shape[0], self.num_patches
        mask = torch.cat([attention_mask[:, :1], attention_mask.new_ones(b, p), attention_mask[:, 1:]], dim=1)
        full_labels = self.expand_labels(labels) if labels is not None else None
        if full_labels is not None and logits_to_keep:
            full_labels = full_labels[:, -logits_to_keep:]
        return self.language_model(inputs_embeds=embeds, attention_mask=mask, labels=full_labels,
                                   logits_to_keep=logits_to_keep)

    # ---- generation ---------------------------------------------------------------------
    @torch.no_grad()
    def generate_constrained(self, pixel_values: torch.Tensor, prompts: list[list[int]],
                             constraint: DecodingConstraint | torch.Tensor) -> torch.Tensor:
        """Batched greedy decoding with a KV cache; each step may only pick the ids the constraint allows.

        prompts: token ids per sample (starting with BOS), any lengths (left-padded here).
        constraint: the action tokenizer's automaton (tokenizer.decoding_constraint(V)), or a BoolTensor [T, V]
        of ids allowed per position (fixed length). Returns int64 ids [B, L], L <= its max_length: decoding
        stops once every row is finished (rows that finished earlier hold what the constraint allows after
        their end, the end marker).
        """
        if isinstance(constraint, torch.Tensor):
            constraint = PositionConstraint(constraint)
        device = self.projector.fc1.weight.device
        patches = self.project_patches(pixel_values)
        table = self.language_model.get_input_embeddings()
        rows = []
        for i, prompt in enumerate(prompts):
            text = table(torch.tensor(prompt, device=device))
            rows.append(torch.cat([text[:1], patches[i].to(text.dtype), text[1:]]))
        b, n = len(rows), max(len(r) for r in rows)
        embeds = rows[0].new_zeros(b, n, rows[0].shape[-1])
        mask = torch.zeros(b, n, dtype=torch.long, device=device)
        for i, row in enumerate(rows):  # left padding: every row's next token lands in the same column
            embeds[i, n - len(row):] = row
            mask[i, n - len(row):] = 1
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        lm, out_ids = self.language_model, []
        state = constraint.start(b, device)
        out = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, past_key_values=DynamicCache(), use_cache=True,
                 logits_to_keep=1)
        for t in range(constraint.max_length):
            logits = out.logits[:, -1].float().masked_fill(~constraint.allowed(state), float("-inf"))
            nxt = logits.argmax(-1)
            out_ids.append(nxt)
            state = constraint.advance(state, nxt)
            if t + 1 == constraint.max_length or bool(constraint.finished(state).all()):
                break
            mask = torch.cat([mask, mask.new_ones(b, 1)], dim=1)
            positions = positions[:, -1:] + 1
            out = lm(inputs_embeds=lm.get_input_embeddings()(nxt)[:, None], attention_mask=mask,
                     position_ids=positions, past_key_values=out.past_key_values, use_cache=True, logits_to_keep=1)
        return torch.stack(out_ids, dim=1)

    # ---- persistence --------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, folder: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> "PrismaticVLA":
        """Load an OpenVLA-layout folder (config.json + model.safetensors or sharded *.safetensors + index).

        Parameters are created on the meta device and the checkpoint tensors are assigned in place, so a
        7B model needs one copy of its weights in memory. Missing or unexpected keys are an error.
        """
        folder = Path(folder)
        config = VLAConfig.from_folder(folder)
        with init_empty_weights(include_buffers=False):
            model = cls(config)
        state = {}
        for shard in _shard_files(folder):
            state.update(load_safetensors(shard, device=str(device)))
        check_state_dict(model, state, f"{folder}: checkpoint does not match the model", CheckpointError)
        model.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}, strict=True, assign=True)
        return model.to(device)

    def save_pretrained(self, folder: str | Path, max_shard_bytes: int = 5 * 2**30) -> Path:
        """Write config.json + safetensors (sharded with an index past max_shard_bytes, by huggingface_hub), atomically."""
        folder = Path(folder)
        with atomic_dir(folder) as tmp:
            (tmp / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
            save_torch_state_dict(self.state_dict(), tmp, max_shard_size=max_shard_bytes, metadata={"format": "pt"})
        return folder


def check_weight_files(folder: str | Path) -> None:
    """Every weight file of an OpenVLA-layout folder is present and readable (headers only, no tensors loaded)."""
    for shard in _shard_files(Path(folder)):
        check_safetensors(shard)


def _shard_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return [folder / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    raise FileNotFoundError(f"{folder}: no model.safetensors or model.safetensors.index.json")
