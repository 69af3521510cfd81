"""Action tokenizers: the plugin contract (base), OpenVLA binning, the residual VQ-VAE, and the registry."""

from openvla_vq.action_tokenizers.base import ActionTokenizer, ActionTokenizerError, DecodingConstraint
from openvla_vq.action_tokenizers.binning import BinningActionTokenizer, BinningConfig
from openvla_vq.action_tokenizers.registry import (
    TokenizerWeightsNotFoundError,
    UnknownTokenizerError,
    build_action_tokenizer,
    load_action_tokenizer,
    register_tokenizer_type,
    registered_names,
)
from openvla_vq.action_tokenizers.vq import VQActionTokenizer, VQConfig

__all__ = [
    "ActionTokenizer", "ActionTokenizerError", "BinningActionTokenizer", "DecodingConstraint", "BinningConfig", "VQActionTokenizer",
    "VQConfig", "TokenizerWeightsNotFoundError", "UnknownTokenizerError", "build_action_tokenizer",
    "load_action_tokenizer", "register_tokenizer_type", "registered_names",
]
