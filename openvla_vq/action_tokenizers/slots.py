"""Where action tokens live in the LLM vocabulary ("slot policies").

`top_of_vocab` (default, VQ-VLA's layout): layer i, code c -> vocab_size - 1 - (c + codebook_size * i);
for Llama-2 that gives [31744, 31999], [31488, 31743], [31232, 31487], [30976, 31231].

`least_used`: take the LLM tokenizer's least-used pieces instead, rarest first. With `counts` (each id's
occurrences in a corpus, e.g. from evaluation/slot_report.py) that is measured use: fewest occurrences, ties broken
towards the higher id. Without counts, the tokenizer's own order: a SentencePiece model's scores (for BPE,
minus the merge rank: the pieces merged last are the rarest), or, for a Hugging Face `tokenizer.json` (Llama-2
as OpenVLA ships it: a vocabulary and merges, no scores), the id, because a converted SentencePiece vocabulary
keeps score order in its ids. (The merges list is no substitute: HF's conversion reorders it, e.g. runs of "▁"
come last, and the "last-merged" pieces measured 64,000 per million tokens of text.) Special (control/unknown),
byte-fallback and unused pieces are never taken. The chosen ids are written into the tokenizer's config.json,
so decode never depends on the LLM tokenizer file again. How often each choice occurs in real text:
`make slot-report` (reports/llama2-slots/).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from openvla_vq.action_tokenizers.base import ActionTokenizerError

SLOT_POLICIES = ("top_of_vocab", "least_used")


def top_of_vocab_ids(vocab_size: int, num_positions: int, symbols: int) -> torch.Tensor:
    """LongTensor [num_positions, symbols]: id = vocab_size - 1 - (s + symbols * position)."""
    pos = torch.arange(num_positions, dtype=torch.int64).unsqueeze(1)
    sym = torch.arange(symbols, dtype=torch.int64).unsqueeze(0)
    return vocab_size - 1 - (sym + symbols * pos)


def least_used_ids(tokenizer_file: str | Path, num_positions: int, symbols: int,
                   counts: np.ndarray | None = None) -> torch.Tensor:
    """LongTensor [num_positions, symbols] of the least-used normal pieces of an LLM tokenizer.

    `tokenizer_file`: a SentencePiece `tokenizer.model`, a Hugging Face BPE `tokenizer.json`, or a folder holding
    either. `counts`: optional occurrences per id measured on a corpus. Pieces are ranked rarest first (ties:
    higher id first); position p takes ranks [p*S, (p+1)*S).
    """
    path = Path(tokenizer_file)
    if path.is_dir():
        path = next((path / n for n in ("tokenizer.json", "tokenizer.model") if (path / n).is_file()), path / "tokenizer.json")
    if not path.is_file():
        raise ActionTokenizerError(f"least_used slots: {path} not found; pass the LLM's tokenizer.json or tokenizer.model")
    normal, score = _bpe_json_pieces(path) if path.suffix == ".json" else _sentencepiece_pieces(path)
    if counts is not None:
        score = {i: float(counts[i]) if i < len(counts) else 0.0 for i in normal}
    ranked = sorted(normal, key=lambda i: (score[i], -i))
    need = num_positions * symbols
    if len(ranked) < need:
        raise ActionTokenizerError(f"least_used slots: {path} has {len(ranked)} candidate pieces but {need} are needed")
    return torch.tensor(ranked[:need], dtype=torch.int64).view(num_positions, symbols)


def _bpe_json_pieces(path: Path) -> tuple[list[int], dict[int, float]]:
    """Normal pieces of a tokenizer.json BPE model (no added tokens, no byte pieces); score = -id."""
    data = json.loads(path.read_text())
    model = data.get("model", {})
    if model.get("type") != "BPE":
        raise ActionTokenizerError(f"least_used slots: {path} holds a {model.get('type')} model, not BPE")
    added = {t["id"] for t in data.get("added_tokens", [])}
    byte_piece = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")
    normal = [i for piece, i in model["vocab"].items() if i not in added and not byte_piece.match(piece)]
    return normal, {i: -float(i) for i in normal}


def _sentencepiece_pieces(path: Path) -> tuple[list[int], dict[int, float]]:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(path))
    normal = [
        i for i in range(sp.get_piece_size())
        if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or sp.is_unused(i))
    ]
    return normal, {i: sp.get_score(i) for i in normal}
