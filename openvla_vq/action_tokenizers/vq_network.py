"""The convolutional residual VQ-VAE of VQ-VLA (paper §3.2-3.3), as one configurable network.

Layout (shapes for the paper's sizes, K=5 steps x D=7 action dims):

    actions [B,K,D] --(+ action-type emb [1,C,1,D], + sinusoidal time emb [1,K,C,1])--> [B,C=21,K,D]
    encoder: conv_in -> L x (resnet stack, stride-2 conv) -> resnets -> GN, SiLU, conv_out -> [B,128,1,1]
    residual VQ (4 x 256 codes of 128-d) -> quantized latent [B,128]
    decoder: conv_in -> resnets -> L x (resnet stack, conv to 4C + pixel shuffle) -> [B,C,8,8]
             -> Linear(8 -> D) on the action axis -> GN, SiLU, conv_out -> last K time rows -> [B,K,D]

Conv2d "height" is time and "width" is the action dimension. Module and parameter names follow the
authors' checkpoint (`encoder.down_blocks.0.resnets.0.conv1.conv.weight`, ...), so their released
weights load by name into the `vq-vla` configuration of this same code (see import_vqvla.py).

Padding (`padding` in the config):
  * "same" (our default): one zero on each side of both axes for 3x3 convs. The encoder sees the
    whole chunk at once, so time causality buys nothing; and the action axis is a list of
    heterogeneous dimensions in a conventional order, so padding one side only (the reference)
    makes x see two zero columns while the gripper sees the euler angles -- an arbitrary asymmetry.
  * "vq-vla": the reference's CausalConv2d: 2 zeros left / 0 right on the action axis, 1 zero on
    each side of the time axis. Needed to reproduce the released tokenizer exactly.
Both give the same spatial sizes (K: 5->3->2->1, D: 7->4->2->1), hence the same parameter shapes.

GroupNorm can be per time step (`norm_per_timestep`, the reference's CausalGroupNorm: statistics over
channels-in-group x action axis for each step separately) or over the whole (C, K, D) map.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

PADDINGS = ("same", "vq-vla")


def conv_padding(mode: str, kernel: int) -> tuple[int, int, int, int]:
    """F.pad tuple (action_left, action_right, time_before, time_after) for a k x k conv."""
    half = kernel // 2
    if mode == "same":
        return (half, half, half, half)
    if mode == "vq-vla":
        return (2 * half, 0, half, half)
    raise ValueError(f"unknown padding {mode!r}; choose one of {PADDINGS}")


def sinusoidal_time_embedding(chunk_len: int, num_frequencies: int, max_frequency_log2: float) -> torch.Tensor:
    """[1, K, 2F+1, 1]: sin(phi f), sin(phi f + pi/2), phi, with phi_t = 2 pi t / K and f = 2**linspace(0, max, F).

    Computed in float32 in the reference's operation order, so it is bitwise equal to their buffer.
    """
    freqs = 2 ** torch.linspace(0, max_frequency_log2, num_frequencies)
    phi = (torch.arange(chunk_len, dtype=torch.float32) / chunk_len * 2 * math.pi).unsqueeze(1)
    angles = phi * freqs
    emb = torch.cat([torch.sin(angles), torch.sin(angles + math.pi / 2), phi], dim=1)
    return emb.view(1, chunk_len, 2 * num_frequencies + 1, 1)


class PaddedConv2d(nn.Module):
    """Conv2d with explicit (possibly asymmetric) zero padding; weights live at `.conv`."""

    def __init__(self, cin: int, cout: int, kernel: int, padding: str, stride: int = 1) -> None:
        super().__init__()
        self.pad = conv_padding(padding, kernel)
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad))


class ActionGroupNorm(nn.GroupNorm):
    """GroupNorm over (B, C, K, D) maps, optionally with separate statistics for each time step."""

    def __init__(self, groups: int, channels: int, eps: float, per_timestep: bool) -> None:
        super().__init__(groups, channels, eps=eps)
        self.per_timestep = per_timestep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.per_timestep:
            return super().forward(x)
        b, c, t, a = x.shape
        y = x.permute(0, 2, 1, 3).reshape(b * t, c, a)
        y = F.group_norm(y, self.num_groups, self.weight, self.bias, self.eps)
        return y.view(b, t, c, a).permute(0, 2, 1, 3)


class ResnetBlock(nn.Module):
    """Pre-norm residual block: shortcut(x) + conv2(SiLU(GN(conv1(SiLU(GN(x))))))."""

    def __init__(self, cin: int, cout: int, cfg) -> None:
        super().__init__()
        self.norm1 = ActionGroupNorm(cfg.norm_groups, cin, cfg.norm_eps, cfg.norm_per_timestep)
        self.conv1 = PaddedConv2d(cin, cout, 3, cfg.padding)
        self.norm2 = ActionGroupNorm(cfg.norm_groups, cout, cfg.norm_eps, cfg.norm_per_timestep)
        self.conv2 = PaddedConv2d(cout, cout, 3, cfg.padding)
        self.conv_shortcut = PaddedConv2d(cin, cout, 1, cfg.padding) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.conv_shortcut(x) if self.conv_shortcut is not None else x) + h


class ResnetStack(nn.Module):
    def __init__(self, cin: int, cout: int, cfg) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock(cin if i == 0 else cout, cout, cfg) for i in range(cfg.layers_per_block)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resnets:
            x = block(x)
        return x


class Encoder(nn.Module):
    def __init__(self, cfg, in_channels: int) -> None:
        super().__init__()
        ch = cfg.block_out_channels
        self.conv_in = PaddedConv2d(in_channels, ch[0], 3, cfg.padding)
        self.down_blocks = nn.ModuleList(ResnetStack(ch[max(i - 1, 0)], ch[i], cfg) for i in range(len(ch)))
        self.conv_blocks = nn.ModuleList(
            PaddedConv2d(ch[i], ch[i], 3, cfg.padding, stride=2) if i < len(ch) - 1 else nn.Identity()
            for i in range(len(ch))
        )
        self.res_blocks = ResnetStack(ch[-1], ch[-1], cfg)
        self.conv_norm_out = ActionGroupNorm(cfg.norm_groups, ch[-1], cfg.norm_eps, cfg.norm_per_timestep)
        self.conv_out = PaddedConv2d(ch[-1], cfg.latent_dim, 3, cfg.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block, down in zip(self.down_blocks, self.conv_blocks):
            x = down(block(x))
        x = self.res_blocks(x)
        x = self.conv_out(F.silu(self.conv_norm_out(x)))
        return x.flatten(1)  # [B, latent, 1, 1] -> [B, latent]


class Decoder(nn.Module):
    def __init__(self, cfg) -> None:
        super().__init__()
        ch = cfg.block_out_channels
        n = len(ch)
        self.chunk_len = cfg.chunk_len
        self.conv_in = PaddedConv2d(cfg.latent_dim, ch[-1], 3, cfg.padding)
        self.res_blocks = ResnetStack(ch[-1], ch[-1], cfg)
        # up_blocks[i] maps ch[i+1] -> ch[i] (the deepest one ch[-1] -> ch[-1]); run in order n-1 .. 0.
        self.up_blocks = nn.ModuleList(ResnetStack(ch[min(i + 1, n - 1)], ch[i], cfg) for i in range(n))
        # after up_blocks[i] (i > 0): conv_blocks[i-1] to 4x channels, then pixel shuffle doubles K and D.
        self.conv_blocks = nn.ModuleList(PaddedConv2d(ch[i + 1], 4 * ch[i + 1], 3, cfg.padding) for i in range(n - 1))
        self.projection = nn.Linear(2 ** (n - 1), cfg.action_dim)
        self.conv_norm_out = ActionGroupNorm(cfg.norm_groups, ch[0], cfg.norm_eps, cfg.norm_per_timestep)
        self.conv_out = PaddedConv2d(ch[0], 1, 3, cfg.padding)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.res_blocks(self.conv_in(z[:, :, None, None]))
        for i in reversed(range(len(self.up_blocks))):
            x = self.up_blocks[i](x)
            if i > 0:
                x = F.pixel_shuffle(self.conv_blocks[i - 1](x), 2)
        x = self.projection(x)  # action axis 2**(n-1) -> D
        x = self.conv_out(F.silu(self.conv_norm_out(x)))
        return x[:, 0, -self.chunk_len:, :]


class ActionVQVAE(nn.Module):
    """Embeddings + encoder + residual VQ + decoder. `forward` returns the training losses."""

    def __init__(self, cfg) -> None:
        super().__init__()
        from openvla_vq.action_tokenizers.rvq import ResidualVQ

        self.cfg = cfg
        channels = 2 * cfg.num_frequencies + 1
        self.group_names = [name for name, _ in cfg.action_groups]
        for name, size in cfg.action_groups:  # learned action-type embeddings, e.g. xyz_emb [1, C, 1, 3]
            setattr(self, f"{name}_emb", nn.Parameter(0.02 * torch.randn(1, channels, 1, size)))
        self.register_buffer("time_emb", sinusoidal_time_embedding(cfg.chunk_len, cfg.num_frequencies, cfg.max_frequency_log2))
        self.encoder = Encoder(cfg, channels)
        self.decoder = Decoder(cfg)
        self.vq_layer = ResidualVQ(cfg)

    def embed(self, actions: torch.Tensor) -> torch.Tensor:
        """[B, K, D] -> [B, C, K, D]: broadcast the actions over C channels, add type then time embeddings."""
        type_emb = torch.cat([getattr(self, f"{n}_emb") for n in self.group_names], dim=-1)
        x = actions.unsqueeze(1) + type_emb
        return (x.transpose(1, 2) + self.time_emb).transpose(1, 2)

    def encode_latent(self, actions: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.embed(actions))

    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder(latent)

    def forward(self, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training step quantities: loss = MSE(recon) + lambda * (codebook + commitment), lambda = vq_loss_weight."""
        latent = self.encode_latent(actions)
        quantized, codes, codebook_loss, commit_loss = self.vq_layer(latent)
        recon = self.decode_latent(quantized)
        recon_loss = F.mse_loss(recon, actions)
        loss = recon_loss + self.cfg.vq_loss_weight * (codebook_loss + commit_loss)
        return {"loss": loss, "recon_loss": recon_loss, "codebook_loss": codebook_loss,
                "commit_loss": commit_loss, "recon": recon, "codes": codes}
