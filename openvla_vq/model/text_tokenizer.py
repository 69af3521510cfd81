"""The checkpoint's text tokenizer, loaded silently and exactly as OpenVLA tokenized its data.

OpenVLA folders name remote code in config.json (`auto_map`) and a `model_type` transformers does not know, so
transformers 5's `AutoTokenizer` asks "Do you wish to run the custom code? [y/N]" on stdin (every rank of an
`accelerate launch` would wait) and warns about the model type. It also rebuilds a `LlamaTokenizer`'s
pipeline with a Metaspace pre-tokenizer, which encodes text that starts with a space differently from the
transformers 4.40 that OpenVLA used (../shared/llama2-tokenizer/PROVENANCE.md). Reading `tokenizer.json`
with `PreTrainedTokenizerFast` follows the file as saved: no config lookup, no remote code, 4.40's ids.
"""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedTokenizerFast

from openvla_vq.action_tokenizers import ActionTokenizer, ActionTokenizerError
from openvla_vq.model.config import VLAConfig


def load_text_tokenizer(folder: str | Path) -> PreTrainedTokenizerFast:
    """The Llama(-like) tokenizer of a checkpoint folder (tokenizer.json + tokenizer_config.json)."""
    folder = Path(folder)
    if not (folder / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{folder} has no tokenizer.json: pass an OpenVLA checkpoint folder (it ships the text "
                                f"tokenizer beside config.json)")
    return PreTrainedTokenizerFast.from_pretrained(str(folder))


def check_tokenizer_fits_model(action_tokenizer: ActionTokenizer, config: VLAConfig, special_ids: list[int]) -> None:
    """One-line errors when action ids fall outside the LLM's base vocabulary or on its special tokens."""
    ids = action_tokenizer.id_table
    base = config.base_vocab_size
    if int(ids.max()) >= base or int(ids.min()) < 0:
        raise ActionTokenizerError(
            f"action tokenizer {action_tokenizer.name!r} uses ids [{int(ids.min())}, {int(ids.max())}] but the LLM's base "
            f"vocabulary is [0, {base - 1}]; rebuild it with vocab_size={base}"
        )
    special = sorted(set(special_ids) & set(ids.flatten().tolist()))
    if special:
        raise ActionTokenizerError(f"action tokenizer {action_tokenizer.name!r} ids {special[:5]} are special tokens of the LLM tokenizer")
