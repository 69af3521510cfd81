"""FAST (Pertsch et al. 2025, pi0-FAST): DCT over time, scale and round, BPE over the integer symbols.

Encode a chunk of K normalized actions (D dims):
  1. per-dimension DCT-II over the K steps, orthonormal (scipy.fft.dct, norm="ortho");
  2. multiply by `scale` and round to integers, clipped to the range seen in training [min_symbol, max_symbol];
  3. flatten low frequencies first across dimensions: (k=0, d=0..D-1), (k=1, d=0..D-1), ...;
  4. each integer becomes one character (code point SYMBOL_BASE + value - min_symbol), and a byte-pair encoding
     (Hugging Face `tokenizers`, vocabulary <= bpe_vocab_size, every symbol in its initial alphabet) merges them;
  5. BPE token t becomes LLM id vocab_size - 1 - t; the end marker is vocab_size - 1 - bpe_vocab_size.
     For Llama-2 that is the slot range 30975..31999 (1,024 tokens + the end marker), the top of the vocabulary.
Decode reverses it and raises a one-line error unless a row holds exactly K*D symbols before its end marker:
malformed sequences are never turned into zero actions. Constrained decoding (`decoding_constraint`) counts the
symbols each row has emitted and allows only tokens that fit in what remains, then the end marker, so every
finished sequence decodes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.fft import dct, idct

from openvla_vq.action_tokenizers.base import (
    LLAMA_SPECIAL_IDS,
    LLAMA_VOCAB_SIZE,
    ActionTokenizer,
    ActionTokenizerError,
    DecodingConstraint,
    validate_id_table,
)

SYMBOL_BASE = 0x100  # symbols map to code points from U+0100 up: no whitespace or control characters


@dataclass
class FastConfig:
    chunk_len: int = 5
    action_dim: int = 7
    scale: float = 10.0  # FAST's default rounding scale
    bpe_vocab_size: int = 1024
    min_symbol: int = -32  # the rounded coefficients' range, set by training
    max_symbol: int = 32
    vocab_size: int = LLAMA_VOCAB_SIZE
    special_ids: list = field(default_factory=lambda: list(LLAMA_SPECIAL_IDS))


def dct_symbols(actions: np.ndarray, scale: float) -> np.ndarray:
    """[B, K, D] normalized actions -> rounded, scaled DCT coefficients [B, K*D], low frequencies first."""
    coefficients = dct(np.asarray(actions, np.float64), type=2, norm="ortho", axis=1)
    return np.rint(coefficients * scale).astype(np.int64).reshape(len(actions), -1)


def train_bpe(symbol_rows: np.ndarray, min_symbol: int, max_symbol: int, vocab_size: int) -> str:
    """A BPE (Hugging Face tokenizers) over rows of integer symbols; returns its JSON."""
    from tokenizers import Tokenizer, models, trainers

    alphabet = [chr(SYMBOL_BASE + v) for v in range(max_symbol - min_symbol + 1)]
    bpe = Tokenizer(models.BPE())
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=alphabet, show_progress=False,
                                  limit_alphabet=len(alphabet), special_tokens=[])
    rows = np.clip(symbol_rows, min_symbol, max_symbol) - min_symbol + SYMBOL_BASE
    bpe.train_from_iterator(("".join(map(chr, row)) for row in rows.tolist()), trainer)
    return bpe.to_str()


class FastActionTokenizer(ActionTokenizer):
    """DCT + BPE: a variable number of ids per chunk, at most K*D, then the end marker."""

    type_name = "fast"
    config_class = FastConfig
    disjoint_positions = False
    variable_length = True

    def __init__(self, config: FastConfig | None = None, name: str | None = None, bpe_json: str | None = None) -> None:
        from tokenizers import Tokenizer

        config = config or FastConfig()
        super().__init__(config, name or "fast")
        if bpe_json is None:
            raise ActionTokenizerError(f"{self.name}: FAST needs a trained BPE; train one with tokenizers/train_fast.py")
        self.bpe_json = bpe_json
        self.bpe = Tokenizer.from_str(bpe_json)
        vocab = self.bpe.get_vocab()
        if len(vocab) > config.bpe_vocab_size:
            raise ActionTokenizerError(f"{self.name}: the BPE has {len(vocab)} tokens but config.json allows {config.bpe_vocab_size}")
        self.pieces = [""] * len(vocab)
        for piece, t in vocab.items():
            self.pieces[t] = piece
        n_symbols = config.max_symbol - config.min_symbol + 1
        singles = {chr(SYMBOL_BASE + v) for v in range(n_symbols)}
        if not singles <= set(vocab) or any(not 0 <= ord(ch) - SYMBOL_BASE < n_symbols for p in self.pieces for ch in p):
            raise ActionTokenizerError(f"{self.name}: the BPE's alphabet disagrees with config.json's symbol range "
                                       f"[{config.min_symbol}, {config.max_symbol}]; the folder was edited or mixed up")
        self.piece_lengths = torch.tensor([len(p) for p in self.pieces], dtype=torch.int64)
        self.end_id = config.vocab_size - 1 - config.bpe_vocab_size
        row = config.vocab_size - 1 - torch.arange(len(vocab), dtype=torch.int64)
        self._action_ids = row
        table = torch.cat([row, torch.tensor([self.end_id])])
        validate_id_table(table[None], config.vocab_size, config.special_ids, disjoint=False, what=self.name)
        self._id_table = table.expand(self.max_tokens + 1, -1).contiguous()

    # ---- sizes and ids -------------------------------------------------------------------
    @property
    def symbols_per_chunk(self) -> int:
        return self.config.chunk_len * self.config.action_dim

    @property
    def max_tokens(self) -> int:
        return self.symbols_per_chunk  # every BPE token holds at least one symbol

    @property
    def id_table(self) -> torch.Tensor:
        """[max_tokens + 1, n_bpe + 1]: any position may hold any BPE id or the end marker (a superset mask)."""
        return self._id_table

    def decoding_constraint(self, vocab_size: int) -> DecodingConstraint:
        self.allowed_id_mask(vocab_size)  # the one-line error when the ids do not fit this vocabulary
        return SymbolCountConstraint(self._action_ids, self.piece_lengths, self.end_id, self.symbols_per_chunk, vocab_size)

    # ---- the two directions ----------------------------------------------------------------
    def encode(self, actions: torch.Tensor | np.ndarray) -> torch.Tensor:
        actions = self._check_actions(actions)
        c = self.config
        symbols = np.clip(dct_symbols(actions.cpu().numpy(), c.scale), c.min_symbol, c.max_symbol) - c.min_symbol
        texts = ["".join(chr(SYMBOL_BASE + v) for v in row) for row in symbols.tolist()]
        ids = torch.full((len(texts), self.max_tokens + 1), self.end_id, dtype=torch.int64)
        for i, encoding in enumerate(self.bpe.encode_batch(texts)):
            ids[i, : len(encoding.ids)] = c.vocab_size - 1 - torch.tensor(encoding.ids, dtype=torch.int64)
        return ids.to(actions.device)

    def token_rows(self, ids: torch.Tensor) -> list[list[int]]:
        rows = []
        for row in ids.tolist():
            end = row.index(self.end_id) if self.end_id in row else len(row)
            rows.append(row[: end + 1])
        return rows

    def decodable(self, ids: torch.Tensor | np.ndarray) -> torch.Tensor:
        ids = torch.as_tensor(ids)
        return torch.tensor([self._row_problem(row) is None for row in ids.long().tolist()], dtype=torch.bool)

    def decode(self, ids: torch.Tensor | np.ndarray) -> torch.Tensor:
        """ids [B, L] (each row: BPE ids, the end marker, anything after it ignored) -> actions [B, K, D]."""
        if isinstance(ids, np.ndarray):
            ids = torch.from_numpy(ids)
        if not isinstance(ids, torch.Tensor) or ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.ndim != 2:
            raise ActionTokenizerError(f"{self.name}.decode: expected an integer tensor of ids [B, L]")
        c, symbols = self.config, []
        for b, row in enumerate(ids.long().tolist()):
            problem = self._row_problem(row)
            if problem is not None:
                raise ActionTokenizerError(f"{self.name}.decode: row {b} {problem}; generate with decoding_constraint()")
            end = row.index(self.end_id)
            symbols.append([ord(ch) - SYMBOL_BASE + c.min_symbol for t in row[:end] for ch in self.pieces[c.vocab_size - 1 - t]])
        if not symbols:
            return torch.zeros(0, c.chunk_len, c.action_dim)
        coefficients = np.asarray(symbols, np.float64).reshape(-1, c.chunk_len, c.action_dim) / c.scale
        return torch.from_numpy(idct(coefficients, type=2, norm="ortho", axis=1)).float()

    def _row_problem(self, row: list[int]) -> str | None:
        """Why a row does not decode, or None."""
        if self.end_id not in row:
            return f"has no end marker ({self.end_id}) within {len(row)} ids"
        end, n_bpe = row.index(self.end_id), len(self.pieces)
        count = 0
        for p, i in enumerate(row[:end]):
            t = self.config.vocab_size - 1 - i
            if not 0 <= t < n_bpe:
                return f"holds id {i} at position {p}, not a FAST token (allowed: ids {self.config.vocab_size - n_bpe}..{self.config.vocab_size - 1})"
            count += len(self.pieces[t])
        if count != self.symbols_per_chunk:
            return f"holds {count} DCT symbols before its end marker, expected {self.symbols_per_chunk} (K={self.chunk_len} x D={self.action_dim})"
        return None

    def _encode_symbols(self, actions: torch.Tensor) -> torch.Tensor:  # encode() is overridden
        raise NotImplementedError

    def _decode_symbols(self, symbols: torch.Tensor) -> torch.Tensor:  # decode() is overridden
        raise NotImplementedError

    # ---- persistence -----------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"bpe_json": torch.frombuffer(bytearray(self.bpe_json.encode()), dtype=torch.uint8)}

    @classmethod
    def from_saved(cls, config: FastConfig, tensors: dict[str, torch.Tensor], name: str | None) -> "FastActionTokenizer":
        if set(tensors) != {"bpe_json"}:
            raise ActionTokenizerError(f"{name or 'fast'}: saved tensors {sorted(tensors)} are not a FAST tokenizer's (bpe_json)")
        text = bytes(tensors["bpe_json"].numpy()).decode()
        try:
            json.loads(text)
        except json.JSONDecodeError:
            raise ActionTokenizerError(f"{name or 'fast'}: the saved BPE is not valid JSON; re-train the tokenizer") from None
        return cls(config, name, bpe_json=text)

    def _with_config(self, config: FastConfig) -> "FastActionTokenizer":
        return FastActionTokenizer(config, self.name, bpe_json=self.bpe_json)

    def __repr__(self) -> str:
        return (f"FastActionTokenizer(name={self.name!r}, K={self.chunk_len}, D={self.action_dim}, BPE {len(self.pieces)} tokens, "
                f"<= {self.max_tokens} ids + end {self.end_id})")


class SymbolCountConstraint(DecodingConstraint):
    """State: DCT symbols emitted so far (symbols_per_chunk + 1 once the end marker is out).

    Below the total, any BPE token that still fits; at the total, only the end marker; after it, the end
    marker again (padding). Single-symbol tokens are always in the vocabulary, so no row gets stuck.
    """

    def __init__(self, action_ids: torch.Tensor, piece_lengths: torch.Tensor, end_id: int, total: int, vocab_size: int) -> None:
        self.total, self.end_id, self.max_length = total, end_id, total + 1
        self.lengths = torch.zeros(vocab_size, dtype=torch.long)  # symbols per vocabulary id; 0 = not a FAST token
        self.lengths[action_ids] = piece_lengths

    def start(self, batch: int, device: torch.device | str) -> torch.Tensor:
        self.lengths = self.lengths.to(device)
        return torch.zeros(batch, dtype=torch.long, device=device)

    def allowed(self, state: torch.Tensor) -> torch.Tensor:
        remaining = (self.total - state).clamp(min=0)
        mask = (self.lengths[None] > 0) & (self.lengths[None] <= remaining[:, None])
        mask[:, self.end_id] = remaining == 0
        return mask

    def advance(self, state: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return torch.where(ids == self.end_id, self.total + 1, state + self.lengths[ids])

    def finished(self, state: torch.Tensor) -> torch.Tensor:
        return state > self.total
