"""Where action tokens live in the LLM vocabulary ("slot policies").

`top_of_vocab` (default, VQ-VLA's layout): layer i, code c -> vocab_size - 1 - (c + codebook_size * i);
for Llama-2 that gives [31744, 31999], [31488, 31743], [31232, 31487], [30976, 31231].

`least_used`: take the measured least-used pieces of the LLM's SentencePiece model instead. For a
BPE model (Llama-2) a piece's score is minus its merge rank, so the lowest scores are the pieces
merged last, i.e. the rarest. Special (control/unknown), byte-fallback and unused pieces are never
taken. The chosen ids are written into the tokenizer's config.json, so decode never depends on the
SentencePiece file again.
"""

from __future__ import annotations

from pathlib import Path

import torch

from openvla_vq.action_tokenizers.base import ActionTokenizerError

SLOT_POLICIES = ("top_of_vocab", "least_used")


def top_of_vocab_ids(vocab_size: int, num_positions: int, symbols: int) -> torch.Tensor:
    """LongTensor [num_positions, symbols]: id = vocab_size - 1 - (s + symbols * position)."""
    pos = torch.arange(num_positions, dtype=torch.int64).unsqueeze(1)
    sym = torch.arange(symbols, dtype=torch.int64).unsqueeze(0)
    return vocab_size - 1 - (sym + symbols * pos)


def least_used_ids(sentencepiece_model: str | Path, num_positions: int, symbols: int) -> torch.Tensor:
    """LongTensor [num_positions, symbols] of the lowest-score normal pieces of a SentencePiece model.

    Pieces are ranked by (score ascending, id descending); position p takes ranks [p*S, (p+1)*S).
    """
    import sentencepiece as spm

    path = Path(sentencepiece_model)
    if not path.is_file():
        raise ActionTokenizerError(f"least_used slots: SentencePiece model {path} not found; pass the LLM's tokenizer.model")
    sp = spm.SentencePieceProcessor(model_file=str(path))
    normal = [
        i for i in range(sp.get_piece_size())
        if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or sp.is_unused(i))
    ]
    need = num_positions * symbols
    if len(normal) < need:
        raise ActionTokenizerError(f"least_used slots: {path} has {len(normal)} normal pieces but {need} are needed")
    ranked = sorted(normal, key=lambda i: (sp.get_score(i), -i))[:need]
    return torch.tensor(ranked, dtype=torch.int64).view(num_positions, symbols)
