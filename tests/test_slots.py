"""The opt-in `least_used` slot policy, on a Llama-like SentencePiece BPE model trained here.

The Llama-2 tokenizer.model cannot be downloaded; this one is built the same way (BPE, byte fallback,
<unk>=0, <s>=1, </s>=2), so special, byte and normal pieces all exist and scores follow merge order.
"""

import random

import pytest
import sentencepiece as spm
import torch

from openvla_vq import load_action_tokenizer
from openvla_vq.action_tokenizers import VQActionTokenizer, VQConfig
from openvla_vq.action_tokenizers.slots import least_used_ids

TINY = dict(block_out_channels=[16, 16, 16, 16], layers_per_block=1, norm_groups=4, latent_dim=8)
VOCAB = 1600


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    rng = random.Random(0)
    syllables = [a + b for a in "bcdfghjklmnprstvwz" for b in "aeiou"] + ["th", "ch", "sh", "qu", "ng"]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(4000)]
    corpus = tmp_path_factory.mktemp("sp") / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(words) for _ in range(12)) for _ in range(6000)))
    prefix = corpus.parent / "llama_like"
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(prefix), vocab_size=VOCAB, model_type="bpe", byte_fallback=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2,
    )
    return prefix.with_suffix(".model")


def test_least_used_pieces_are_the_lowest_scored_normal_pieces(sp_model):
    sp = spm.SentencePieceProcessor(model_file=str(sp_model))
    table = least_used_ids(sp_model, 4, 256)
    assert table.shape == (4, 256) and table.unique().numel() == 1024
    chosen = set(table.flatten().tolist())
    for i in chosen:
        assert not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or sp.is_unused(i))
    assert not chosen & {0, 1, 2} and not chosen & set(range(3, 259))  # specials and the 256 byte pieces
    normal = [i for i in range(sp.get_piece_size()) if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i))]
    worst_kept = max(sp.get_score(i) for i in chosen)
    best_left = max((sp.get_score(i) for i in normal if i not in chosen), default=None)
    assert all(sp.get_score(i) >= worst_kept for i in normal if i not in chosen) and best_left >= worst_kept
    # layer 0 holds the very least used pieces
    assert max(sp.get_score(i) for i in table[0].tolist()) <= min(sp.get_score(i) for i in table[1].tolist())


def test_vq_tokenizer_with_least_used_slots_round_trips_exactly(sp_model, tmp_path):
    table = least_used_ids(sp_model, 4, 256)
    cfg = VQConfig(**TINY, vocab_size=VOCAB, slot_policy="least_used", slot_ids=table.tolist())
    tok = VQActionTokenizer(cfg)
    x = torch.rand(200, 5, 7) * 2 - 1
    ids = tok.encode(x)
    for layer in range(4):
        assert set(ids[:, layer].tolist()) <= set(table[layer].tolist())
    tok.save(tmp_path / "tok")
    again = load_action_tokenizer(tmp_path / "tok")  # ids come from config.json, not the SentencePiece file
    assert again.config.slot_ids == table.tolist()
    assert torch.equal(again.encode(x), ids) and torch.equal(again.decode(ids), tok.decode(ids))
    assert torch.equal(tok.ids_to_symbols(ids), tok.model.vq_layer.quantize(tok.model.encode_latent(x)))
