"""Train a FAST action tokenizer (DCT + BPE) on RLDS action data: `python tokenizers/train_fast.py --mixture ml`.

The actions come through the same reader as VQ training (RLDSChunkDataset: OpenVLA normalization, K-step chunks),
from the datasets of the mixture's last stage (tokenizers/mixtures.json), training splits only; FAST has no
progressive stages. The rounded coefficients' range sets the symbol alphabet; the BPE merges them into at most
`bpe_vocab_size` tokens. The folder (config.json + model.safetensors holding the BPE's JSON) is written atomically.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from openvla_vq.action_tokenizers.fast import FastActionTokenizer, FastConfig, dct_symbols, train_bpe
from openvla_vq.action_tokenizers.registry import tokenizers_dir
from openvla_vq.data.rlds_dataset import read_action_chunks
from openvla_vq.training.train_tokenizer import TokenizerTrainingError, check_stages, mixture_stages


@dataclass
class FastTrainConfig:
    mixture: str = "ml"  # a key of tokenizers/mixtures.json; its last stage's datasets are used
    data_root_dir: Path = Path("data/rlds")
    name: str = "fast_m"
    out: Path | None = None  # default tokenizers/<name>/, where the registry looks
    chunk_len: int = 5
    scale: float = 10.0
    bpe_vocab_size: int = 1024
    max_chunks_per_dataset: int = 200_000


def train_fast(cfg: FastTrainConfig) -> Path:
    stages = mixture_stages(cfg.mixture)
    check_stages(cfg.data_root_dir, cfg.mixture, stages[-1:])
    datasets = [name for name, _ in stages[-1]["datasets"]]
    start = time.perf_counter()
    chunks = np.concatenate([read_action_chunks(cfg.data_root_dir, name, cfg.chunk_len, cfg.max_chunks_per_dataset)
                             for name in datasets])
    symbols = dct_symbols(chunks, cfg.scale)
    low, high = int(symbols.min()), int(symbols.max())
    config = FastConfig(chunk_len=cfg.chunk_len, action_dim=chunks.shape[-1], scale=cfg.scale, bpe_vocab_size=cfg.bpe_vocab_size,
                        min_symbol=low, max_symbol=high)
    if high - low + 1 > cfg.bpe_vocab_size:
        raise TokenizerTrainingError(f"the rounded coefficients span {high - low + 1} values, more than --bpe_vocab_size "
                                     f"{cfg.bpe_vocab_size}: lower --scale")
    tokenizer = FastActionTokenizer(config, cfg.name, bpe_json=train_bpe(symbols, low, high, cfg.bpe_vocab_size))
    lengths = [len(row) for row in tokenizer.token_rows(tokenizer.encode(chunks[:5000]))]
    metadata = {"mixture": cfg.mixture, "datasets": datasets, "chunks": len(chunks), "symbol_range": [low, high],
                "bpe_tokens": len(tokenizer.pieces), "mean_ids_per_chunk_incl_end": float(np.mean(lengths)),
                "train_s": round(time.perf_counter() - start, 1)}
    out = cfg.out or tokenizers_dir() / cfg.name
    tokenizer.save(out, metadata=metadata)
    return out
