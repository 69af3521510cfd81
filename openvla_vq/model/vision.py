"""OpenVLA's fused DINOv2 + SigLIP vision backbone (timm) and its image processor.

Each featurizer returns the patch tokens of its second-to-last block (no prefix tokens, no final
norm); the two feature maps are concatenated channel-wise (1024 + 1152 = 2176 for OpenVLA-7B).
Pixel values have 6 channels: 3 normalized for DINOv2, then 3 normalized for SigLIP.
The checkpoint calls DINOv2's LayerScale parameter `scale_factor` (timm: `gamma`), so timm's
LayerScale modules are swapped for an identical one with that name.
"""

from __future__ import annotations

import numpy as np
import timm
import torch
from PIL import Image
from timm.layers import LayerScale as TimmLayerScale
from torch import nn
from torchvision.transforms import functional as TF


class LayerScale(nn.Module):
    """x * scale_factor, named as in OpenVLA checkpoints."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale_factor = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale_factor


def _create_featurizer(model_id: str, image_size: int, act_layer: str | None, overrides: dict | None) -> nn.Module:
    kwargs = dict(pretrained=False, num_classes=0, img_size=image_size, **(overrides or {}))
    if act_layer is not None:
        kwargs["act_layer"] = act_layer
    model = timm.create_model(model_id, **kwargs)
    for block in model.blocks:
        for name in ("ls1", "ls2"):
            ls = getattr(block, name, None)
            if isinstance(ls, TimmLayerScale):
                new = LayerScale(ls.gamma.shape[0]).to(ls.gamma.device, ls.gamma.dtype)
                if ls.gamma.device.type != "meta":
                    new.scale_factor.data.copy_(ls.gamma.data)
                setattr(block, name, new)
    return model


class FusedVisionBackbone(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        kw = config.timm_model_kwargs or [None, None]
        ids, acts = config.timm_model_ids, config.timm_override_act_layers
        self.featurizer = _create_featurizer(ids[0], config.image_sizes[0], acts[0], kw[0])
        self.fused_featurizer = _create_featurizer(ids[1], config.image_sizes[1], acts[1], kw[1])
        self.embed_dim = self.featurizer.embed_dim + self.fused_featurizer.embed_dim
        self.num_patches = self.featurizer.patch_embed.num_patches

    @staticmethod
    def _patches(vit: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        (out,) = vit.forward_intermediates(pixels, indices=[len(vit.blocks) - 2], return_prefix_tokens=False,
                                           norm=False, stop_early=True, intermediates_only=True, output_fmt="NLC")
        return out

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 6 n, H, W] (n images of 6 channels) -> patch features [B, n num_patches, embed_dim], image by image."""
        b, channels, h, w = pixel_values.shape
        images = pixel_values.reshape(b * (channels // 6), 6, h, w)  # every image through the same towers at once
        dino, siglip = torch.split(images, [3, 3], dim=1)
        patches = torch.cat([self._patches(self.featurizer, dino), self._patches(self.fused_featurizer, siglip)], dim=2)
        return patches.reshape(b, -1, patches.shape[-1])


class ImageProcessor:
    """OpenVLA's processor for resize-naive 224 px: bicubic resize to a square, then each backbone's mean/std.

    Accepts uint8 HWC arrays or PIL images, or per sample a tuple of them (several cameras); returns float32
    [B, 6, H, W] (or [B, 6 n, H, W]).
    """

    def __init__(self, backbone: FusedVisionBackbone | None = None, stats: list[tuple[tuple, tuple]] | None = None,
                 image_size: int = 224) -> None:
        """backbone: its towers give the mean/std and the image size (training and evaluation read the same); or
        explicit stats (and image_size)."""
        if backbone is not None:
            configs = [timm.data.resolve_model_data_config(vit) for vit in (backbone.featurizer, backbone.fused_featurizer)]
            stats = [(tuple(cfg["mean"]), tuple(cfg["std"])) for cfg in configs]
            image_size = backbone.featurizer.patch_embed.img_size[0]  # the model's own (timm's config says 518)
        self.image_size = image_size
        self.mean = torch.tensor([m for mean, _ in stats for m in mean]).view(6, 1, 1)
        self.std = torch.tensor([s for _, std in stats for s in std]).view(6, 1, 1)

    def to_tensor(self, image: np.ndarray | Image.Image | tuple) -> torch.Tensor:
        """One image -> [6, H, W]; a tuple of images (cameras of one sample) -> [6 n, H, W]."""
        return self([image])[0]

    def _uint8(self, image: np.ndarray | Image.Image) -> torch.Tensor:
        """One image -> uint8 [3, H, W] at the model's size."""
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"expected a uint8 HxWx3 image, got {image.dtype} {image.shape}")
            image = Image.fromarray(image)
        image = image.convert("RGB")
        if image.size != (self.image_size, self.image_size):
            image = image.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
        return TF.pil_to_tensor(image)

    def __call__(self, images: list) -> torch.Tensor:
        """A batch: per sample one image or a tuple of its cameras -> float32 [B, 6 n, H, W]: the uint8 pixels
        gathered first, then each image's RGB copied once per tower into one float tensor normalized in place
        (the same values as per-image normalization, without a float tensor per image and their stacking)."""
        cameras = [tuple(im) if isinstance(im, (tuple, list)) else (im,) for im in images]
        pixels = torch.stack([torch.stack([self._uint8(im) for im in sample]) for sample in cameras])  # [B, n, 3, H, W]
        b, n, _, h, w = pixels.shape
        batch = torch.empty(b, n, 2, 3, h, w)
        batch.copy_(pixels[:, :, None].expand(b, n, 2, 3, h, w))
        batch = batch.view(b, 6 * n, h, w).div_(255.0)
        return batch.sub_(self.mean.repeat(n, 1, 1)).div_(self.std.repeat(n, 1, 1))
