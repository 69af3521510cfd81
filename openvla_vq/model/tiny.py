"""A tiny random VLA in OpenVLA's exact checkpoint layout, built offline (tests and the demo).

Its text tokenizer is either the real Llama-2 tokenizer with OpenVLA's <PAD> = 32000 (`text_tokenizer=` a folder
such as ../shared/llama2-tokenizer; the 32064-row vocabulary makes every step cost more), or, for fast tests, a
SentencePiece BPE model trained locally the way Llama's was (byte fallback, <unk>=0, <s>=1, </s>=2, "▁" word
boundaries) with a small vocabulary, saved with <PAD> = its base vocabulary size.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path

import torch

from openvla_vq.model.config import tiny_config
from openvla_vq.model.prismatic import PrismaticVLA

ROBOT_WORDS = (
    "put pick place open close turn push pull stack lift the a on in into top of bowl plate mug cup drawer cabinet "
    "stove microwave basket tray box book shelf caddy wine bottle rack ketchup cream cheese butter alphabet soup "
    "black white red yellow green left right front back middle bottom it and up down both them knob burner"
).split()


def train_text_tokenizer(folder: str | Path, vocab_size: int = 1600, seed: int = 0) -> Path:
    """Write tokenizer.model/tokenizer.json/tokenizer_config.json of a Llama-like tokenizer with <PAD> = vocab_size."""
    import sentencepiece as spm
    from transformers import LlamaTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    syllables = [a + b for a in "bcdfghjklmnprstvwz" for b in "aeiou"]
    words = ROBOT_WORDS + ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(3000)]
    lines = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(5000)]
    lines += ["In: What action should the robot take to " + " ".join(rng.choice(ROBOT_WORDS) for _ in range(6)) + "?\nOut:"
              for _ in range(500)]
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("\n".join(lines))
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=str(folder / "tokenizer"), vocab_size=vocab_size, model_type="bpe",
            byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2,
            # Llama-2's settings: no normalization (newlines survive as byte pieces), digits split, keep spaces
            normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=True,
            split_digits=True, allow_whitespace_only_pieces=True,
        )
    (folder / "tokenizer.vocab").unlink()
    (folder / "tokenizer_config.json").write_text(
        '{"tokenizer_class": "LlamaTokenizer", "add_bos_token": true, "add_eos_token": false, '
        '"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}\n'
    )
    tok = LlamaTokenizer.from_pretrained(str(folder))
    tok.add_special_tokens({"pad_token": "<PAD>"})
    tok.save_pretrained(str(folder))
    return folder


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def write_tiny_checkpoint(folder: str | Path, seed: int = 0, base_vocab_size: int = 1600,
                          text_tokenizer: str | Path | None = None, vit_width: int = 32, llm_width: int = 64,
                          num_images: int = 1, position_embedding: str = "random") -> Path:
    """A random-init tiny VLA + its tokenizer, saved in OpenVLA's folder layout.

    text_tokenizer: a tokenizer folder to copy (e.g. the Llama-2 one; base_vocab_size must then be its 32000),
    else a small one is trained here. vit_width / llm_width / num_images: see tiny_config.
    position_embedding: "random" keeps timm's init (std 0.02); "sincos" writes MAE's fixed 2-D sin-cos table into
    both towers instead. LoRA never trains the position embedding, and timm's init is ~30x weaker than the random
    patch embedding's output, which leaves a frozen from-scratch ViT nearly blind to where a patch lies."""
    torch.manual_seed(seed)
    model = PrismaticVLA(tiny_config(base_vocab_size, vit_width, llm_width, num_images))
    if position_embedding == "sincos":
        from timm.layers.pos_embed_sincos import build_sincos2d_pos_embed

        for vit in (model.vision_backbone.featurizer, model.vision_backbone.fused_featurizer):
            table = build_sincos2d_pos_embed(list(vit.patch_embed.grid_size), dim=vit.pos_embed.shape[-1])
            with torch.no_grad():
                vit.pos_embed.copy_(table.view_as(vit.pos_embed))  # both towers: patches only, no class position
    elif position_embedding != "random":
        raise ValueError(f"position_embedding {position_embedding!r}: pass random or sincos")
    model.save_pretrained(folder)
    if text_tokenizer is None:
        train_text_tokenizer(folder, vocab_size=base_vocab_size, seed=seed)
    else:
        for name in TOKENIZER_FILES:
            shutil.copy(Path(text_tokenizer) / name, Path(folder) / name)
    return Path(folder)
