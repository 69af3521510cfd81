"""Residual vector quantization with k-means initialisation and dead-code restarts.

Greedy RVQ (paper §3.2): r_0 = x; for layer i: c_i = argmin_c ||r_i - E_i[c]||, r_{i+1} = r_i - E_i[c_i];
q(x) = sum_i E_i[c_i]. Gradients reach the encoder through the straight-through estimator.

Codebook updates (`codebook_update`):
  * "loss" (default, the paper's Eq. 1): E is a parameter trained by the codebook term ||sg(r_i) - q_i||^2.
  * "ema": E follows an exponential moving average of its assigned residuals (the authors' code, decay 0.8).
Both add the commitment term ||r_i - sg(q_i)||^2. A codebook whose `initted` flag is 0 is set by k-means
on the first training batch; never at inference. Codes whose moving-average usage (`cluster_size`,
expected assignments per batch) drops below `dead_code_threshold` are restarted on random residuals of
the current batch. Buffer names follow the authors' checkpoint (`layers.i._codebook.embed`, ...).
Under torch.distributed, k-means results, restarts and EMA statistics are synchronised across ranks.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _broadcast(t: torch.Tensor) -> None:
    if _distributed():
        dist.broadcast(t, src=0)


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if _distributed():
        dist.all_reduce(t)
    return t


def nearest_code(x: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codebook row for each row of x, by squared Euclidean distance (expanded form)."""
    dist2 = x.pow(2).sum(1, keepdim=True) - 2 * x @ embed.t() + embed.pow(2).sum(1).unsqueeze(0)
    return dist2.argmin(dim=1)


def kmeans(x: torch.Tensor, num_clusters: int, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means from random samples of x; returns (centres [N, d], counts [N])."""
    idx = torch.randint(0, x.shape[0], (num_clusters,), device=x.device) if x.shape[0] < num_clusters \
        else torch.randperm(x.shape[0], device=x.device)[:num_clusters]
    centres = x[idx].clone()
    for _ in range(iters):
        assign = nearest_code(x, centres)
        counts = torch.bincount(assign, minlength=num_clusters).to(x.dtype)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        centres = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centres)
    counts = torch.bincount(nearest_code(x, centres), minlength=num_clusters).to(x.dtype)
    return centres, counts


class Codebook(nn.Module):
    def __init__(self, size: int, dim: int, learnable: bool) -> None:
        super().__init__()
        self.register_buffer("initted", torch.zeros(1))
        self.register_buffer("cluster_size", torch.zeros(1, size))
        self.register_buffer("embed_avg", torch.zeros(1, size, dim))
        embed = torch.randn(1, size, dim)
        if learnable:  # trained by the codebook loss
            self.embed = nn.Parameter(embed)
        else:  # EMA-updated: a buffer, so no optimizer ever touches it (same state-dict key either way)
            self.register_buffer("embed", embed)


class QuantizerLayer(nn.Module):
    """One RVQ stage; the codebook sits at `_codebook` to match the authors' state-dict names."""

    def __init__(self, size: int, dim: int, learnable: bool) -> None:
        super().__init__()
        self._codebook = Codebook(size, dim, learnable)


class ResidualVQ(nn.Module):
    def __init__(self, cfg) -> None:
        super().__init__()
        if cfg.codebook_update not in ("loss", "ema"):
            raise ValueError(f"codebook_update must be 'loss' or 'ema', got {cfg.codebook_update!r}")
        self.cfg = cfg
        learnable = cfg.codebook_update == "loss"
        self.layers = nn.ModuleList(QuantizerLayer(cfg.codebook_size, cfg.latent_dim, learnable) for _ in range(cfg.num_quantizers))

    def codebooks(self) -> list[torch.Tensor]:
        return [layer._codebook.embed[0] for layer in self.layers]

    @torch.no_grad()
    def quantize(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent [B, d] -> codes [B, Q] (greedy residual nearest-code search in float32)."""
        residual = latent.float()
        codes = []
        for embed in self.codebooks():
            c = nearest_code(residual, embed.float())
            residual = residual - embed[c].float()
            codes.append(c)
        return torch.stack(codes, dim=1)

    def codes_to_latent(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, Q] -> sum of the chosen codebook rows [B, d], summed in layer order (q0 + q1 + ...)."""
        out = None
        for i, embed in enumerate(self.codebooks()):
            row = embed[codes[:, i]].float()
            out = row if out is None else out + row
        return out

    def forward(self, latent: torch.Tensor):
        """Training/eval pass: (straight-through quantized [B, d], codes [B, Q], codebook loss, commitment loss)."""
        residual = latent.float()
        total = torch.zeros_like(residual)
        codes, codebook_loss, commit_loss = [], residual.new_zeros(()), residual.new_zeros(())
        for layer in self.layers:
            cb = layer._codebook
            if self.training and not bool(cb.initted.item()):
                self._kmeans_init(cb, residual.detach())
            c = nearest_code(residual.detach(), cb.embed[0].detach())
            q = cb.embed[0][c]
            codebook_loss = codebook_loss + F.mse_loss(q, residual.detach())
            commit_loss = commit_loss + F.mse_loss(residual, q.detach())
            if self.training:
                self._update_stats(cb, residual.detach(), c)
            residual = residual - q.detach()
            total = total + q
            codes.append(c)
        # straight-through: the value is the quantized sum, the encoder's gradient passes as identity;
        # the codebook learns only from codebook_loss (standard VQ-VAE).
        quantized = latent + (total - latent).detach()
        return quantized, torch.stack(codes, dim=1), codebook_loss, commit_loss

    @torch.no_grad()
    def _kmeans_init(self, cb: Codebook, x: torch.Tensor) -> None:
        centres, counts = kmeans(x, cb.embed.shape[1], self.cfg.kmeans_iters)
        _broadcast(centres)
        _broadcast(counts)
        cb.embed.data[0] = centres
        cb.embed_avg.data[0] = centres * counts[:, None]
        cb.cluster_size.data[0] = counts
        cb.initted.fill_(1.0)

    @torch.no_grad()
    def _update_stats(self, cb: Codebook, x: torch.Tensor, codes: torch.Tensor) -> None:
        decay = self.cfg.ema_decay
        onehot = F.one_hot(codes, cb.embed.shape[1]).to(x.dtype)
        counts = _all_reduce_sum(onehot.sum(0))
        cb.cluster_size.data[0].mul_(decay).add_(counts, alpha=1 - decay)
        if self.cfg.codebook_update == "ema":
            sums = _all_reduce_sum(onehot.t() @ x)
            cb.embed_avg.data[0].mul_(decay).add_(sums, alpha=1 - decay)
            n = cb.cluster_size[0].sum()
            smoothed = (cb.cluster_size[0] + 1e-5) / (n + cb.embed.shape[1] * 1e-5) * n
            cb.embed.data[0] = cb.embed_avg[0] / smoothed[:, None]
        if self.cfg.dead_code_threshold > 0:
            dead = cb.cluster_size[0] < self.cfg.dead_code_threshold
            if bool(dead.any()):
                picks = x[torch.randint(0, x.shape[0], (int(dead.sum()),), device=x.device)]
                new = cb.embed.data[0].clone()
                new[dead] = picks
                _broadcast(new)
                cb.embed.data[0] = new
                cb.embed_avg.data[0][dead] = new[dead] * self.cfg.dead_code_threshold * 2
                cb.cluster_size.data[0][dead] = self.cfg.dead_code_threshold * 2
