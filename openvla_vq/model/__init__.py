"""The Prismatic/OpenVLA model: fused DINOv2+SigLIP vision (timm), MLP projector, Llama-2 (transformers)."""

from openvla_vq.model.config import VLAConfig, tiny_config
from openvla_vq.model.prismatic import IGNORE_INDEX, PrismaticVLA
from openvla_vq.model.vision import ImageProcessor

__all__ = ["IGNORE_INDEX", "ImageProcessor", "PrismaticVLA", "VLAConfig", "tiny_config"]
