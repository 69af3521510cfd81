"""PEFT LoRA on the VLA, as OpenVLA: r=32, alpha=min(r, 16), gaussian init, every linear layer but lm_head.

Linear layers whose outputs OpenVLA never uses (each ViT's last block, SigLIP's attention-pool head) get no
adapter: they would receive no gradient, which also trips DDP's unused-parameter check.
"""

from __future__ import annotations

from peft import LoraConfig, get_peft_model
from torch import nn


def lora_target_modules(model: nn.Module) -> list[str]:
    vision = model.vision_backbone
    unused = [f"vision_backbone.featurizer.blocks.{len(vision.featurizer.blocks) - 1}.",
              f"vision_backbone.fused_featurizer.blocks.{len(vision.fused_featurizer.blocks) - 1}.",
              "vision_backbone.fused_featurizer.attn_pool.", "language_model.lm_head"]
    return [name for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and not any(name.startswith(u) for u in unused)]


def add_lora(model: nn.Module, rank: int, dropout: float, train_modules: tuple[str, ...] = ()) -> nn.Module:
    """train_modules: modules trained in full next to the adapters (PEFT modules_to_save), e.g. ("lm_head",) for a
    backbone trained from scratch, whose frozen random output layer would cap every logit near zero."""
    config = LoraConfig(r=rank, lora_alpha=min(rank, 16), lora_dropout=dropout, init_lora_weights="gaussian",
                        target_modules=lora_target_modules(model), modules_to_save=list(train_modules) or None)
    return get_peft_model(model, config)
