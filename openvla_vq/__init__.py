"""openvla-vq: fine-tune OpenVLA with a pluggable action tokenizer and evaluate it on LIBERO-90."""

from openvla_vq.action_tokenizers import ActionTokenizer, load_action_tokenizer, registered_names

__all__ = ["ActionTokenizer", "load_action_tokenizer", "registered_names"]
__version__ = "0.1.0"
