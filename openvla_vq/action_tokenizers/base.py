"""The action-tokenizer contract shared by fine-tuning, data and evaluation.

An action tokenizer turns a chunk of K normalized actions of dimension D into T integer token ids
and back. Everything downstream talks to it only through this class:

    tok.name               registered name, e.g. "binning" or "vq_o+l+m"
    tok.chunk_len          K: actions per chunk (1 for binning, 5 for VQ-VLA)
    tok.action_dim         D: action dimension (7: xyz, euler, gripper)
    tok.tokens_per_chunk   T: token ids per chunk (7 for binning, 4 for VQ-VLA)
    tok.id_table           LongTensor [T, S]: id_table[p, s] is the LLM token id of symbol s at position p
    tok.allowed_ids(p)     sorted LongTensor of the ids position p may hold
    tok.allowed_id_mask(V) BoolTensor [T, V], for constrained decoding over a vocabulary of V logits
    tok.encode(actions)    float [B, K, D] (normalized) -> int64 [B, T]
    tok.decode(ids)        int [B, T] -> float32 [B, K, D]
    tok.save(folder) / load_action_tokenizer(folder)   config.json + model.safetensors, no pickle

Subclasses implement `_encode_symbols` (actions -> symbol indices into id_table columns) and
`_decode_symbols` (symbols -> actions); this base class owns input validation and the symbol <-> id
mapping, so an invalid id can never reach a decoder silently.

Variable-length tokenizers (FAST) set `variable_length`, declare an `end_id` and a maximum length
(`max_tokens` ids before the end marker, so T = max_tokens + 1), and override encode/decode:

    tok.encode(actions)               -> int64 [B, T]: each row's ids, the end marker, then end markers as padding
    tok.token_rows(ids)               -> per-row id lists to supervise (up to and including the end marker)
    tok.decodable(ids)                -> BoolTensor [B]: which rows decode (decode raises on any other row)
    tok.decoding_constraint(V)        -> the automaton constrained generation asks, step by step, for the ids
                                         allowed after each row's prefix (batched, on the model's device), so
                                         every finished sequence decodes

Fixed-length tokenizers get all four from the per-position id table; their ids and decodes are unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import save_file

from openvla_vq.io import CheckpointError, atomic_dir, load_safetensors

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "openvla-vq/action-tokenizer"
FORMAT_VERSION = 1

# Llama-2 SentencePiece: <unk>=0, <s>=1, </s>=2; ids >= 32000 are added tokens (OpenVLA's <PAD> = 32000).
LLAMA_VOCAB_SIZE = 32000
LLAMA_SPECIAL_IDS = (0, 1, 2)


class ActionTokenizerError(ValueError):
    """Bad input to, or inconsistent state of, an action tokenizer (always a one-line message)."""


def config_from_dict(cls: type, data: dict[str, Any], what: str) -> Any:
    """Build dataclass `cls` from `data`, rejecting unknown keys with a one-line error."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ActionTokenizerError(f"{what}: unknown config keys {unknown}; known keys are {sorted(names)}")
    return cls(**data)


def validate_id_table(
    table: torch.Tensor, vocab_size: int, special_ids: tuple[int, ...] | list[int], disjoint: bool, what: str
) -> None:
    """Check that the ids fit the vocabulary, avoid special tokens, and do not collide.

    Within a position every symbol needs its own id (else decoding is ambiguous). Across positions the
    ids must be disjoint when `disjoint` (VQ layers each own an id range, as in VQ-VLA); binning shares
    one range across its 7 positions by design (OpenVLA).
    """
    if table.dtype != torch.int64 or table.ndim != 2:
        raise ActionTokenizerError(f"{what}: id table must be int64 [positions, symbols], got {table.dtype} {list(table.shape)}")
    lo, hi = int(table.min()), int(table.max())
    if lo < 0 or hi >= vocab_size:
        raise ActionTokenizerError(
            f"{what}: token ids span [{lo}, {hi}] but the base vocabulary is [0, {vocab_size - 1}]; "
            "use fewer/smaller codebooks or a larger vocab_size"
        )
    clash = sorted(set(table.flatten().tolist()) & set(int(s) for s in special_ids))
    if clash:
        raise ActionTokenizerError(f"{what}: token ids {clash[:5]} collide with special tokens {list(special_ids)}; move the id range")
    for p, row in enumerate(table):
        if row.unique().numel() != row.numel():
            raise ActionTokenizerError(f"{what}: position {p} maps two symbols to the same token id; ids must be unique per position")
    if disjoint:
        seen: dict[int, int] = {}
        for p, row in enumerate(table.tolist()):
            for i in row:
                if i in seen:
                    raise ActionTokenizerError(
                        f"{what}: token id {i} is used by positions {seen[i]} and {p}; each position needs its own id range"
                    )
                seen[i] = p


class DecodingConstraint(ABC):
    """A small automaton over a batch: which ids generation may emit next, given what each row emitted so far.

    Its state is one LongTensor [B] on the model's device; generation calls allowed() before each step and
    advance() with the chosen ids, for at most `max_length` steps or until every row is finished.
    """

    max_length: int

    @abstractmethod
    def start(self, batch: int, device: torch.device | str) -> torch.Tensor: ...

    @abstractmethod
    def allowed(self, state: torch.Tensor) -> torch.Tensor:
        """BoolTensor [B, V]: the logits that may be chosen now."""

    @abstractmethod
    def advance(self, state: torch.Tensor, ids: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def finished(self, state: torch.Tensor) -> torch.Tensor:
        """BoolTensor [B]."""


class PositionConstraint(DecodingConstraint):
    """Fixed length: position t may hold exactly the ids of mask[t]; the state is the position."""

    def __init__(self, mask: torch.Tensor) -> None:
        self.mask, self.max_length = mask, mask.shape[0]

    def start(self, batch: int, device: torch.device | str) -> torch.Tensor:
        self.mask = self.mask.to(device)
        return torch.zeros(batch, dtype=torch.long, device=device)

    def allowed(self, state: torch.Tensor) -> torch.Tensor:
        return self.mask[state.clamp(max=self.max_length - 1)]

    def advance(self, state: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return state + 1

    def finished(self, state: torch.Tensor) -> torch.Tensor:
        return state >= self.max_length


class ActionTokenizer(ABC):
    """Base class of every action tokenizer; see the module docstring for the contract."""

    type_name: ClassVar[str]  # the "type" written to config.json and resolved by the registry
    config_class: ClassVar[type]
    disjoint_positions: ClassVar[bool] = True
    variable_length: ClassVar[bool] = False
    end_id: int | None = None  # the end marker of variable-length sequences

    def __init__(self, config: Any, name: str | None = None) -> None:
        self.config = config
        self.name = name or self.type_name

    # ---- sizes and ids (from the config and the table a subclass builds in __init__) ---------
    _id_table: torch.Tensor

    @property
    def chunk_len(self) -> int:
        return self.config.chunk_len

    @property
    def action_dim(self) -> int:
        return self.config.action_dim

    @property
    def id_table(self) -> torch.Tensor:
        """LongTensor [T, S] of token ids (CPU)."""
        return self._id_table

    @property
    def tokens_per_chunk(self) -> int:
        return int(self.id_table.shape[0])

    def allowed_ids(self, position: int) -> torch.Tensor:
        """Sorted token ids that `position` (0..T-1) may hold."""
        return self.id_table[position].unique()

    def allowed_id_mask(self, vocab_size: int) -> torch.Tensor:
        """BoolTensor [T, vocab_size]: True where a logit may be chosen at each action position."""
        if int(self.id_table.max()) >= vocab_size:
            raise ActionTokenizerError(
                f"{self.name}: action ids reach {int(self.id_table.max())} but the model vocabulary has {vocab_size} entries"
            )
        mask = torch.zeros(self.tokens_per_chunk, vocab_size, dtype=torch.bool)
        mask.scatter_(1, self.id_table, True)
        return mask

    @property
    def max_tokens(self) -> int:
        """Most ids a chunk takes before its end marker (fixed length: exactly T, no end marker)."""
        return self.tokens_per_chunk

    def decoding_constraint(self, vocab_size: int) -> DecodingConstraint:
        return PositionConstraint(self.allowed_id_mask(vocab_size))

    def token_rows(self, ids: torch.Tensor) -> list[list[int]]:
        """encode()'s output as the id lists a training example supervises."""
        return ids.tolist()

    def decodable(self, ids: torch.Tensor | np.ndarray) -> torch.Tensor:
        """BoolTensor [B]: rows whose every id belongs to its position (exactly the rows decode() accepts)."""
        ids = torch.as_tensor(ids).long()
        if ids.ndim != 2 or ids.shape[1] != self.tokens_per_chunk or ids.numel() == 0:
            return torch.zeros(ids.shape[0] if ids.ndim else 0, dtype=torch.bool)
        mask = self.allowed_id_mask(max(int(self.id_table.max()), int(ids.max()), 0) + 1)
        in_range = (ids >= 0) & (ids < mask.shape[1])
        return (in_range & mask[torch.arange(ids.shape[1])[None], ids.clamp(0, mask.shape[1] - 1)]).all(1)

    # ---- the two directions ----------------------------------------------------------------
    def encode(self, actions: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Normalized actions [B, K, D] -> int64 token ids [B, T] (on the input's device)."""
        actions = self._check_actions(actions)
        symbols = self._encode_symbols(actions)
        table = self.id_table.to(symbols.device)
        return table[torch.arange(self.tokens_per_chunk, device=symbols.device), symbols]

    def decode(self, ids: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Token ids [B, T] -> float32 normalized actions [B, K, D]; raises on any id outside its position's set."""
        symbols = self.ids_to_symbols(ids)
        return self._decode_symbols(symbols).float()

    def ids_to_symbols(self, ids: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Validate ids [B, T] and map each to its symbol index (column of id_table)."""
        if isinstance(ids, np.ndarray):
            ids = torch.from_numpy(ids)
        if not isinstance(ids, torch.Tensor):
            raise ActionTokenizerError(f"{self.name}.decode: expected a tensor of token ids, got {type(ids).__name__}")
        if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            raise ActionTokenizerError(f"{self.name}.decode: token ids must be an integer tensor, got {ids.dtype}; cast with .long()")
        if ids.ndim != 2 or ids.shape[1] != self.tokens_per_chunk:
            raise ActionTokenizerError(
                f"{self.name}.decode: expected ids of shape [B, {self.tokens_per_chunk}], got {list(ids.shape)}"
            )
        ids = ids.long()
        table = self.id_table.to(ids.device)
        order = table.argsort(dim=1)
        sorted_ids = table.gather(1, order)  # [T, S]
        pos = torch.searchsorted(sorted_ids, ids.T.contiguous()).clamp(max=table.shape[1] - 1)  # [T, B]
        found = sorted_ids.gather(1, pos) == ids.T
        if not bool(found.all()):
            p, b = (~found).nonzero()[0].tolist()
            lo, hi = int(sorted_ids[p, 0]), int(sorted_ids[p, -1])
            raise ActionTokenizerError(
                f"{self.name}.decode: id {int(ids[b, p])} at row {b}, position {p} is not an action token of that position "
                f"(allowed: {table.shape[1]} ids in [{lo}, {hi}]); constrain generation with allowed_id_mask()"
            )
        return order.gather(1, pos).T.contiguous()

    def _check_actions(self, actions: torch.Tensor | np.ndarray) -> torch.Tensor:
        if isinstance(actions, np.ndarray):
            actions = torch.from_numpy(actions)
        if not isinstance(actions, torch.Tensor):
            raise ActionTokenizerError(f"{self.name}.encode: expected a float tensor of actions, got {type(actions).__name__}")
        if not actions.dtype.is_floating_point:
            raise ActionTokenizerError(f"{self.name}.encode: actions must be floating point, got {actions.dtype}")
        want = [self.chunk_len, self.action_dim]
        if actions.ndim != 3 or list(actions.shape[1:]) != want:
            raise ActionTokenizerError(
                f"{self.name}.encode: expected actions of shape [B, {want[0]}, {want[1]}] (batch, chunk, action dim), "
                f"got {list(actions.shape)}"
            )
        bad = ~torch.isfinite(actions)
        if bool(bad.any()):
            b, k, d = bad.nonzero()[0].tolist()
            raise ActionTokenizerError(
                f"{self.name}.encode: actions contain NaN/inf (first at batch {b}, step {k}, dim {d}); clean the data before tokenizing"
            )
        return actions

    @abstractmethod
    def _encode_symbols(self, actions: torch.Tensor) -> torch.Tensor:
        """Validated actions [B, K, D] -> int64 symbols [B, T] indexing id_table columns."""

    @abstractmethod
    def _decode_symbols(self, symbols: torch.Tensor) -> torch.Tensor:
        """int64 symbols [B, T] -> actions [B, K, D]."""

    # ---- persistence -----------------------------------------------------------------------
    @abstractmethod
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors saved to model.safetensors."""

    @classmethod
    @abstractmethod
    def from_saved(cls, config: Any, tensors: dict[str, torch.Tensor], name: str | None) -> "ActionTokenizer":
        """Rebuild from a saved config and tensors; must raise if they disagree."""

    def to(self, device: torch.device | str) -> "ActionTokenizer":
        return self

    def for_vocab(self, vocab_size: int) -> "ActionTokenizer":
        """This tokenizer with its ids counted from the end of an LLM vocabulary of `vocab_size` base tokens.

        OpenVLA's bins (`vocab_size - d`) and VQ-VLA's codes (`vocab_size - 1 - (c + 256 i)`) are both defined
        relative to the LLM tokenizer; the stored config holds Llama-2's 32000.
        """
        if self.config.vocab_size == vocab_size:
            return self
        return self._with_config(dataclasses.replace(self.config, vocab_size=vocab_size))

    def _with_config(self, config: Any) -> "ActionTokenizer":
        return type(self)(config, self.name)

    def fingerprint(self) -> str:
        """sha256 over the config and every saved tensor: identifies exactly which tokenizer a run used."""
        h = hashlib.sha256(json.dumps(dataclasses.asdict(self.config), sort_keys=True).encode())
        for key, tensor in sorted(self.state_tensors().items()):
            h.update(key.encode())
            h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def save(self, folder: str | Path, metadata: dict | None = None) -> Path:
        """Write config.json + model.safetensors atomically (the folder appears complete or not at all).

        `metadata` (e.g. training data and each dataset's normalization statistics) is stored in config.json.
        """
        folder = Path(folder)
        with atomic_dir(folder) as tmp:
            meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "type": self.type_name, "name": self.name,
                    "config": dataclasses.asdict(self.config), **({"metadata": metadata} if metadata else {})}
            (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
            tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_tensors().items()}
            save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT, "type": self.type_name})
        return folder

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, K={self.chunk_len}, D={self.action_dim}, "
                f"T={self.tokens_per_chunk}, ids=[{int(self.id_table.min())}, {int(self.id_table.max())}])")


def read_saved(folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a saved tokenizer folder's metadata and tensors, with one-line errors for the usual breakages."""
    cfg_path, w_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not cfg_path.is_file():
        raise ActionTokenizerError(f"{folder}: no {CONFIG_FILE}; this is not a saved action tokenizer folder")
    try:
        meta = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ActionTokenizerError(f"{cfg_path}: not valid JSON ({e}); re-save the tokenizer") from None
    if meta.get("format") != FORMAT or "type" not in meta or "config" not in meta:
        raise ActionTokenizerError(f"{cfg_path}: not an openvla-vq action tokenizer config (missing format/type/config)")
    if not w_path.is_file():
        raise ActionTokenizerError(f"{folder}: {WEIGHTS_FILE} is missing next to {CONFIG_FILE}; re-save or re-train the tokenizer")
    try:
        return meta, load_safetensors(w_path)
    except CheckpointError as e:
        raise ActionTokenizerError(str(e)) from None
