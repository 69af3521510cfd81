"""BEAST (Zhou et al. 2025): each action dimension of a chunk as a B-spline; its control points are the tokens.

No training. For K steps at times t_k = k / (K - 1) and a clamped uniform B-spline of `degree` with N control
points (scipy's BSpline basis), the basis matrix B [K, N] is fixed: encode fits the control points of every
dimension by least squares (C = pinv(B) X), quantizes each into `n_bins` uniform levels over
[-control_range, control_range] and emits them control point by control point (all D dimensions of point 0,
then of point 1, ...): T = N * D ids, fixed length. Decode dequantizes and evaluates the spline, X = B C.
Ids share one range at the top of the vocabulary as OpenVLA's bins do: id = vocab_size - 1 - level
(31744..31999 for Llama-2 with 256 levels).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.interpolate import BSpline

from openvla_vq.action_tokenizers.base import (
    LLAMA_SPECIAL_IDS,
    LLAMA_VOCAB_SIZE,
    ActionTokenizer,
    ActionTokenizerError,
    validate_id_table,
)


@dataclass
class BeastConfig:
    chunk_len: int = 5
    action_dim: int = 7
    num_control_points: int = 3
    degree: int = 2
    n_bins: int = 256
    control_range: float = 1.5  # least-squares control points overshoot the [-1, 1] data a little
    vocab_size: int = LLAMA_VOCAB_SIZE
    special_ids: list = field(default_factory=lambda: list(LLAMA_SPECIAL_IDS))


def spline_basis(chunk_len: int, num_control_points: int, degree: int) -> np.ndarray:
    """[K, N] values of the clamped uniform B-spline basis functions at the K step times."""
    interior = np.linspace(0.0, 1.0, num_control_points - degree + 1)[1:-1]
    knots = np.concatenate([np.zeros(degree + 1), interior, np.ones(degree + 1)])
    times = np.linspace(0.0, 1.0, chunk_len)
    return BSpline.design_matrix(times, knots, degree).toarray()


class BeastActionTokenizer(ActionTokenizer):
    """B-spline control points, quantized: K actions -> N * D ids."""

    type_name = "beast"
    config_class = BeastConfig
    disjoint_positions = False

    def __init__(self, config: BeastConfig | None = None, name: str | None = None) -> None:
        c = config or BeastConfig()
        super().__init__(c, name or "beast")
        if not c.degree + 1 <= c.num_control_points <= c.chunk_len:
            raise ActionTokenizerError(f"{self.name}: need degree + 1 <= num_control_points <= chunk_len, got degree {c.degree}, "
                                       f"{c.num_control_points} control points, {c.chunk_len} steps")
        self.basis = torch.from_numpy(spline_basis(c.chunk_len, c.num_control_points, c.degree))  # float64 [K, N]
        self.fit = torch.linalg.pinv(self.basis)  # [N, K]: least squares
        row = c.vocab_size - 1 - torch.arange(c.n_bins, dtype=torch.int64)
        self._id_table = row.expand(c.num_control_points * c.action_dim, -1).contiguous()
        validate_id_table(self._id_table, c.vocab_size, c.special_ids, disjoint=False, what=self.name)

    def _encode_symbols(self, actions: torch.Tensor) -> torch.Tensor:
        c = self.config
        points = self.fit.to(actions.device) @ actions.to(torch.float64)  # [B, N, D]
        levels = torch.round((points + c.control_range) / (2 * c.control_range) * (c.n_bins - 1))
        return levels.clamp(0, c.n_bins - 1).long().flatten(1)  # point-major: [B, N * D]

    def _decode_symbols(self, symbols: torch.Tensor) -> torch.Tensor:
        c = self.config
        points = symbols.view(-1, c.num_control_points, c.action_dim).double() / (c.n_bins - 1) * 2 * c.control_range - c.control_range
        return self.basis.to(symbols.device) @ points  # [B, K, D]

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"basis": self.basis}

    @classmethod
    def from_saved(cls, config: BeastConfig, tensors: dict[str, torch.Tensor], name: str | None) -> "BeastActionTokenizer":
        tok = cls(config, name)
        saved = tensors.get("basis")
        if saved is None or saved.shape != tok.basis.shape or not torch.allclose(saved, tok.basis):
            raise ActionTokenizerError(f"{tok.name}: saved 'basis' disagrees with config.json ({config.num_control_points} control "
                                       f"points, degree {config.degree}, {config.chunk_len} steps); re-save it")
        return tok
