"""Bad input gets a one-line error that names the problem (issue: foundation, item 7)."""

import json

import numpy as np
import pytest
import torch

from openvla_vq import load_action_tokenizer
from openvla_vq.action_tokenizers import ActionTokenizerError, BinningActionTokenizer, BinningConfig, VQActionTokenizer, VQConfig

TINY = dict(block_out_channels=[16, 16, 16, 16], layers_per_block=1, norm_groups=4, latent_dim=8)


def one_line_error(fn, *match):
    with pytest.raises(ActionTokenizerError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg, msg
    for m in match:
        assert m in msg, msg
    return msg


@pytest.fixture(scope="module", params=["binning", "vq"])
def tok(request):
    return BinningActionTokenizer() if request.param == "binning" else VQActionTokenizer(VQConfig(**TINY))


def test_wrong_rank_shape_or_action_dim(tok):
    k, d = tok.chunk_len, tok.action_dim
    one_line_error(lambda: tok.encode(torch.zeros(k, d)), "expected actions of shape", f"[B, {k}, {d}]")
    one_line_error(lambda: tok.encode(torch.zeros(2, k + 1, d)), "expected actions of shape")
    one_line_error(lambda: tok.encode(torch.zeros(2, k, d - 1)), "expected actions of shape")
    one_line_error(lambda: tok.encode(torch.zeros(2, k, d, dtype=torch.int64)), "floating point")
    one_line_error(lambda: tok.encode([[0.0] * d]), "expected a float tensor")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_inf(tok, bad):
    x = torch.zeros(3, tok.chunk_len, tok.action_dim)
    x[2, 0, 1] = bad
    one_line_error(lambda: tok.encode(x), "NaN/inf", "batch 2, step 0, dim 1")


def test_non_integer_and_misshapen_ids(tok):
    ids = tok.encode(torch.zeros(2, tok.chunk_len, tok.action_dim))
    one_line_error(lambda: tok.decode(ids.float()), "integer tensor")
    one_line_error(lambda: tok.decode(ids[:, :-1]), "expected ids of shape")
    one_line_error(lambda: tok.decode(ids[0]), "expected ids of shape")
    assert torch.equal(tok.decode(ids.numpy().astype(np.int32)), tok.decode(ids))  # any integer dtype is fine


def test_id_outside_its_position_set(tok):
    ids = tok.encode(torch.zeros(2, tok.chunk_len, tok.action_dim))
    bad = ids.clone()
    bad[1, 0] = 100  # an ordinary text token
    one_line_error(lambda: tok.decode(bad), "id 100 at row 1, position 0", "allowed_id_mask")
    if isinstance(tok, VQActionTokenizer):
        swapped = ids.clone()
        swapped[0, 0] = ids[0, 1]  # a layer-1 id in the layer-0 slot
        one_line_error(lambda: tok.decode(swapped), "position 0")


def test_saved_folder_whose_config_disagrees_with_tensors(tmp_path):
    VQActionTokenizer(VQConfig(**TINY)).save(tmp_path / "vq")
    cfg = json.loads((tmp_path / "vq" / "config.json").read_text())
    cfg["config"]["latent_dim"] = 12
    (tmp_path / "vq" / "config.json").write_text(json.dumps(cfg))
    one_line_error(lambda: load_action_tokenizer(tmp_path / "vq"), "shape mismatch", "config.json")
    cfg["config"]["latent_dim"] = 8
    cfg["config"]["layers_per_block"] = 2
    (tmp_path / "vq" / "config.json").write_text(json.dumps(cfg))
    one_line_error(lambda: load_action_tokenizer(tmp_path / "vq"), "missing")

    BinningActionTokenizer().save(tmp_path / "bin")
    cfg = json.loads((tmp_path / "bin" / "config.json").read_text())
    cfg["config"]["max_action"] = 2.0
    (tmp_path / "bin" / "config.json").write_text(json.dumps(cfg))
    one_line_error(lambda: load_action_tokenizer(tmp_path / "bin"), "disagrees with config.json")


def test_broken_folders(tmp_path):
    one_line_error(lambda: load_action_tokenizer(tmp_path / "nope"), "no saved action tokenizer")
    (tmp_path / "empty").mkdir()
    one_line_error(lambda: load_action_tokenizer(tmp_path / "empty"), "no config.json")
    BinningActionTokenizer().save(tmp_path / "b")
    (tmp_path / "b" / "model.safetensors").unlink()
    one_line_error(lambda: load_action_tokenizer(tmp_path / "b"), "model.safetensors is missing")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "config.json").write_text("{not json")
    one_line_error(lambda: load_action_tokenizer(tmp_path / "c"), "not valid JSON")
    VQActionTokenizer(VQConfig(**TINY)).save(tmp_path / "truncated")
    weights = tmp_path / "truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    one_line_error(lambda: load_action_tokenizer(tmp_path / "truncated"), "model.safetensors is not a readable safetensors file")


def test_id_ranges_colliding_with_special_tokens_or_each_other():
    # 4 x 256 ids counted down from vocab_size - 1 reach id 2 (</s>) when vocab_size is 1026
    one_line_error(lambda: VQActionTokenizer(VQConfig(**TINY, vocab_size=1026)), "collide with special tokens")
    one_line_error(lambda: VQActionTokenizer(VQConfig(**TINY, vocab_size=1000)), "base vocabulary")
    VQActionTokenizer(VQConfig(**TINY, vocab_size=1027))  # ids 3..1026 are fine
    rows = [list(range(1000 + 256 * i, 1256 + 256 * i)) for i in range(4)]
    rows[3][5] = rows[0][7]  # layer 3 reuses a layer-0 id
    one_line_error(lambda: VQActionTokenizer(VQConfig(**TINY, slot_policy="least_used", slot_ids=rows)), "used by positions 0 and 3")
    rows[3][5] = rows[3][6]  # two codes of one layer share an id
    one_line_error(lambda: VQActionTokenizer(VQConfig(**TINY, slot_policy="least_used", slot_ids=rows)), "same token id")
    one_line_error(lambda: BinningActionTokenizer(BinningConfig(vocab_size=200)), "base vocabulary")


def test_config_errors():
    one_line_error(lambda: VQActionTokenizer(VQConfig(**{**TINY, "block_out_channels": [16, 16, 16]})), "too small")
    one_line_error(lambda: VQActionTokenizer(VQConfig(**TINY, padding="reflect")), "padding")
    one_line_error(lambda: VQActionTokenizer(VQConfig(**TINY, action_groups=[["xyz", 3]])), "action_groups")
    one_line_error(lambda: VQActionTokenizer(VQConfig(**TINY, slot_policy="least_used")), "needs slot_ids")
