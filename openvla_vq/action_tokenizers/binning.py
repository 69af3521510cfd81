"""OpenVLA's per-dimension 256-bin action tokenizer, bit-exact (prismatic/vla/action_tokenizer.py).

Encode: clip to [min, max]; d = digitize(a, edges) with 256 edges = linspace(-1, 1, 256), so d is in
1..256; id = vocab_size - d, i.e. ids 31744..31999 for Llama-2 (vocab_size 32000).
Decode: index = clip(vocab_size - id - 1, 0, 254); value = bin_centres[index] (255 midpoints).
Edges and centres are computed with NumPy in float64 exactly as OpenVLA does, so ids match bitwise
(torch.linspace may differ from np.linspace in the last bit, which moves exact-edge values).
Chunk length 1, one token per action dimension (T = D = 7).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from openvla_vq.action_tokenizers.base import (
    LLAMA_SPECIAL_IDS,
    LLAMA_VOCAB_SIZE,
    ActionTokenizer,
    ActionTokenizerError,
    validate_id_table,
)


@dataclass
class BinningConfig:
    n_bins: int = 256
    min_action: float = -1.0
    max_action: float = 1.0
    action_dim: int = 7
    vocab_size: int = LLAMA_VOCAB_SIZE  # the base tokenizer's vocab, excluding added tokens such as <PAD>
    special_ids: list[int] = field(default_factory=lambda: list(LLAMA_SPECIAL_IDS))


class BinningActionTokenizer(ActionTokenizer):
    """OpenVLA binning: K=1, T=D, symbol s = digitize(a) - 1 in 0..n_bins-1, id = vocab_size - 1 - s."""

    type_name = "binning"
    config_class = BinningConfig
    disjoint_positions = False  # OpenVLA shares one id range across the 7 dimensions

    def __init__(self, config: BinningConfig | None = None, name: str | None = None) -> None:
        super().__init__(config or BinningConfig(), name)
        c = self.config
        if c.n_bins < 2 or not c.min_action < c.max_action:
            raise ActionTokenizerError(f"binning: need n_bins >= 2 and min_action < max_action, got {c.n_bins}, [{c.min_action}, {c.max_action}]")
        edges = np.linspace(c.min_action, c.max_action, c.n_bins)
        self.edges = torch.from_numpy(edges)  # float64 [n_bins]
        self.centres = torch.from_numpy((edges[:-1] + edges[1:]) / 2.0)  # float64 [n_bins - 1]
        row = c.vocab_size - 1 - torch.arange(c.n_bins, dtype=torch.int64)
        self._id_table = row.expand(c.action_dim, -1).contiguous()
        validate_id_table(self._id_table, c.vocab_size, c.special_ids, disjoint=False, what=self.name)

    @property
    def chunk_len(self) -> int:
        return 1

    def _encode_symbols(self, actions: torch.Tensor) -> torch.Tensor:
        a = actions[:, 0].to(torch.float64).clamp(self.config.min_action, self.config.max_action)
        # bucketize(right=True) == np.digitize(right=False): edges[d-1] <= a < edges[d]
        d = torch.bucketize(a, self.edges.to(a.device), right=True)
        return d - 1

    def _decode_symbols(self, symbols: torch.Tensor) -> torch.Tensor:
        index = symbols.clamp(0, self.config.n_bins - 2)  # id 31744 (d = 256) decodes like 31745, as in OpenVLA
        return self.centres.to(symbols.device)[index].unsqueeze(1)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"edges": self.edges, "centres": self.centres}

    @classmethod
    def from_saved(cls, config: BinningConfig, tensors: dict[str, torch.Tensor], name: str | None) -> "BinningActionTokenizer":
        tok = cls(config, name)
        for key, mine in tok.state_tensors().items():
            saved = tensors.get(key)
            if saved is None or saved.shape != mine.shape or not torch.equal(saved, mine):
                raise ActionTokenizerError(
                    f"{tok.name}: saved '{key}' disagrees with config.json (n_bins={config.n_bins}, "
                    f"range [{config.min_action}, {config.max_action}]); the folder was edited or mixed up, re-save it"
                )
        return tok
