"""VQ-VLA's action tokenizer: a frozen convolutional residual VQ-VAE; one token per RVQ layer.

A chunk of K=5 normalized actions (7-D: xyz, euler, gripper) becomes Q=4 codes, one per quantizer, and
code c of layer i becomes LLM token id `id_table[i, c]` (by default vocab_size - 1 - (c + 256 i),
see slots.py). Decoding maps ids back to codes, sums the codebook rows and runs the decoder.

Two named presets of the same network (`VQConfig.preset(...)`):
  * "openvla-vq": our default; symmetric ("same") padding, codebook trained by the paper's loss with
    k-means init and dead-code restarts.
  * "vq-vla": the authors' released network (all_data_vq.pth): action-axis causal padding,
    EMA codebooks (decay 0.8), no dead-code restarts. `config.preset` records which one a folder holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from openvla_vq.action_tokenizers.base import (
    LLAMA_SPECIAL_IDS,
    LLAMA_VOCAB_SIZE,
    ActionTokenizer,
    ActionTokenizerError,
    validate_id_table,
)
from openvla_vq.action_tokenizers.slots import SLOT_POLICIES, top_of_vocab_ids
from openvla_vq.action_tokenizers.vq_network import PADDINGS, ActionVQVAE
from openvla_vq.io import check_state_dict


@dataclass
class VQConfig:
    preset: str = "openvla-vq"
    # chunk layout
    chunk_len: int = 5
    action_dim: int = 7
    action_groups: list = field(default_factory=lambda: [["xyz", 3], ["euler", 3], ["gripper", 1]])
    # embeddings: 2 * num_frequencies + 1 input channels
    num_frequencies: int = 10
    max_frequency_log2: float = 8.0
    # convolutional encoder / decoder
    block_out_channels: list = field(default_factory=lambda: [128, 256, 256, 512])
    layers_per_block: int = 4
    norm_groups: int = 32
    norm_eps: float = 1e-6
    norm_per_timestep: bool = True
    padding: str = "same"
    latent_dim: int = 128
    # residual VQ
    num_quantizers: int = 4
    codebook_size: int = 256
    codebook_update: str = "loss"
    ema_decay: float = 0.99
    kmeans_iters: int = 10
    dead_code_threshold: float = 0.05
    vq_loss_weight: float = 4.0  # lambda in L = ||a - a_hat||^2 + lambda (codebook + commitment)
    # where the tokens live in the LLM vocabulary
    vocab_size: int = LLAMA_VOCAB_SIZE
    special_ids: list = field(default_factory=lambda: list(LLAMA_SPECIAL_IDS))
    slot_policy: str = "top_of_vocab"
    slot_ids: list | None = None  # explicit [Q][codebook_size] ids (least_used policy); None = top_of_vocab formula

    @classmethod
    def preset_config(cls, name: str, **overrides) -> "VQConfig":
        presets = {
            "openvla-vq": {},
            "vq-vla": dict(preset="vq-vla", padding="vq-vla", codebook_update="ema", ema_decay=0.8,
                           dead_code_threshold=0.0),
        }
        if name not in presets:
            raise ActionTokenizerError(f"unknown VQ preset {name!r}; choose one of {sorted(presets)}")
        return cls(**{**presets[name], **overrides})

    def validate(self) -> None:
        n = len(self.block_out_channels)
        if self.padding not in PADDINGS:
            raise ActionTokenizerError(f"vq config: padding {self.padding!r} unknown; choose one of {list(PADDINGS)}")
        if self.slot_policy not in SLOT_POLICIES:
            raise ActionTokenizerError(f"vq config: slot_policy {self.slot_policy!r} unknown; choose one of {list(SLOT_POLICIES)}")
        if sum(size for _, size in self.action_groups) != self.action_dim:
            raise ActionTokenizerError(f"vq config: action_groups {self.action_groups} do not add up to action_dim={self.action_dim}")
        if max(self.chunk_len, self.action_dim) > 2 ** (n - 1):
            raise ActionTokenizerError(
                f"vq config: {n} blocks reach a {2 ** (n - 1)}x{2 ** (n - 1)} map, too small for a {self.chunk_len}x{self.action_dim} chunk; add blocks"
            )
        bad = [c for c in self.block_out_channels if c % self.norm_groups]
        if bad:
            raise ActionTokenizerError(f"vq config: channels {bad} are not divisible by norm_groups={self.norm_groups}")


class VQActionTokenizer(ActionTokenizer):
    """Residual VQ-VAE tokenizer: K actions -> Q ids, one per quantizer layer, each layer its own id range."""

    type_name = "vq"
    config_class = VQConfig
    disjoint_positions = True

    def __init__(self, config: VQConfig | None = None, name: str | None = None, model: ActionVQVAE | None = None) -> None:
        config = config or VQConfig()
        config.validate()
        super().__init__(config, name or "vq")
        self.model = model if model is not None else ActionVQVAE(config)
        self.model.eval().requires_grad_(False)  # a tokenizer is frozen; training uses self.model directly
        if config.slot_ids is not None:
            table = torch.tensor(config.slot_ids, dtype=torch.int64)
            if list(table.shape) != [config.num_quantizers, config.codebook_size]:
                raise ActionTokenizerError(
                    f"{self.name}: slot_ids has shape {list(table.shape)}, expected [{config.num_quantizers}, {config.codebook_size}]"
                )
        elif config.slot_policy == "least_used":
            raise ActionTokenizerError(f"{self.name}: slot_policy 'least_used' needs slot_ids; build them with slots.least_used_ids(tokenizer.model, ...)")
        else:
            table = top_of_vocab_ids(config.vocab_size, config.num_quantizers, config.codebook_size)
        validate_id_table(table, config.vocab_size, config.special_ids, disjoint=True, what=self.name)
        self._id_table = table

    @property
    def device(self) -> torch.device:
        return self.model.time_emb.device

    def to(self, device: torch.device | str) -> "VQActionTokenizer":
        self.model.to(device)
        return self

    def _with_config(self, config: VQConfig) -> "VQActionTokenizer":
        if config.slot_ids is not None:
            raise ActionTokenizerError(
                f"{self.name}: its ids are explicit least-used slots of one LLM tokenizer and cannot move to a "
                f"vocabulary of {config.vocab_size}; rebuild slot_ids with slots.least_used_ids(<that tokenizer.model>)"
            )
        return VQActionTokenizer(config, self.name, model=self.model)

    @torch.no_grad()
    def _encode_symbols(self, actions: torch.Tensor) -> torch.Tensor:
        latent = self.model.encode_latent(actions.to(self.device, torch.float32))
        return self.model.vq_layer.quantize(latent).to(actions.device)

    @torch.no_grad()
    def _decode_symbols(self, symbols: torch.Tensor) -> torch.Tensor:
        latent = self.model.vq_layer.codes_to_latent(symbols.to(self.device))
        return self.model.decode_latent(latent).to(symbols.device)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    @classmethod
    def from_saved(cls, config: VQConfig, tensors: dict[str, torch.Tensor], name: str | None) -> "VQActionTokenizer":
        tok = cls(config, name)
        load_state_checked(tok.model, tensors, what=tok.name)
        return tok


def load_state_checked(model: torch.nn.Module, tensors: dict[str, torch.Tensor], what: str) -> None:
    check_state_dict(model, tensors, f"{what}: tensors disagree with config.json", ActionTokenizerError)
    model.load_state_dict(tensors, strict=True)
