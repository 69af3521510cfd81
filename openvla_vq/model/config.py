"""The VLA's configuration, read from and written to OpenVLA's `config.json` layout.

An OpenVLA checkpoint folder's config.json (model_type "openvla") is read as is: the fields below are
taken, everything else (auto_map, architectures, ...) is ignored, so no remote code is ever needed.
`timm_model_kwargs` is our one extension: per-backbone keyword overrides passed to timm.create_model,
which lets a tiny random model (tests, demo) run exactly the same code path as OpenVLA-7B.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LLAMA2_7B_TEXT_CONFIG = {
    "model_type": "llama", "vocab_size": 32064, "hidden_size": 4096, "intermediate_size": 11008,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": False,
    "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 32000,
}


@dataclass
class VLAConfig:
    model_type: str = "openvla"
    vision_backbone_id: str = "dinosiglip-vit-so-224px"
    llm_backbone_id: str = "llama2-7b-pure"
    arch_specifier: str = "no-align+fused-gelu-mlp"
    use_fused_vision_backbone: bool = True
    image_resize_strategy: str = "resize-naive"
    timm_model_ids: list = field(default_factory=lambda: ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"])
    timm_override_act_layers: list = field(default_factory=lambda: [None, None])
    timm_model_kwargs: list | None = None  # extension: e.g. [{"embed_dim": 64, "depth": 3, "num_heads": 2}, {...}]
    image_sizes: list = field(default_factory=lambda: [224, 224])
    llm_max_length: int = 2048
    pad_token_id: int = 32000
    pad_to_multiple_of: int = 64
    text_config: dict = field(default_factory=lambda: dict(LLAMA2_7B_TEXT_CONFIG))
    norm_stats: dict | None = None
    n_action_bins: int = 256
    # OpenVLA-OFT's extension: images per sample (1: the third-person camera, OpenVLA; 2: + the wrist camera), each
    # through the same fused backbone, their patches concatenated in camera order
    num_images_in_input: int = 1

    @property
    def base_vocab_size(self) -> int:
        """The text tokenizer's vocabulary without added tokens (<PAD>) and padding rows: 32000 for Llama-2."""
        return self.text_config["vocab_size"] - self.pad_to_multiple_of

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VLAConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        if data.get("model_type") not in ("openvla", "prismatic"):
            raise ValueError(f"config.json has model_type {data.get('model_type')!r}; expected an OpenVLA/Prismatic checkpoint")
        if not data.get("use_fused_vision_backbone", True) or "gelu-mlp" not in data.get("arch_specifier", "fused-gelu-mlp"):
            raise ValueError("only fused DINOv2+SigLIP backbones with the fused GELU MLP projector (OpenVLA-7B) are supported")
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def from_folder(cls, folder: str | Path) -> "VLAConfig":
        path = Path(folder) / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: pass an OpenVLA checkpoint folder (config.json + *.safetensors)")
        return cls.from_dict(json.loads(path.read_text()))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def tiny_config(base_vocab_size: int = 1600, vit_width: int = 32, llm_width: int = 64, num_images: int = 1,
                **overrides) -> VLAConfig:
    """A few-million-parameter VLA with OpenVLA's exact structure (224 px, 14 px patches -> 256 patches).

    vit_width / llm_width: each ViT's embedding size and the Llama's hidden size (its MLP is twice as wide); heads
    keep 16 dimensions each. num_images: 2 adds the wrist camera (num_images_in_input)."""
    vocab = base_vocab_size + 64  # room for <PAD>, padded to a multiple of 64 like OpenVLA's 32064
    text = {**LLAMA2_7B_TEXT_CONFIG, "vocab_size": vocab, "hidden_size": llm_width, "intermediate_size": 2 * llm_width,
            "num_hidden_layers": 2, "num_attention_heads": llm_width // 16, "num_key_value_heads": llm_width // 16,
            "max_position_embeddings": 1024, "pad_token_id": base_vocab_size}
    vit = {"embed_dim": vit_width, "depth": 3, "num_heads": vit_width // 16}
    return VLAConfig(timm_model_kwargs=[dict(vit), dict(vit)], text_config=text, pad_token_id=base_vocab_size,
                     llm_max_length=1024, num_images_in_input=num_images, **overrides)
