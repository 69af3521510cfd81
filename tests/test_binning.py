"""OpenVLA binning, checked against the formulas of OPENVLA_VQVLA.md §1.1 computed with NumPy."""

import numpy as np
import pytest
import torch

from openvla_vq import load_action_tokenizer
from openvla_vq.action_tokenizers import BinningActionTokenizer

VOCAB = 32000
EDGES = np.linspace(-1, 1, 256)
CENTRES = (EDGES[:-1] + EDGES[1:]) / 2.0


def openvla_ids(a: np.ndarray) -> np.ndarray:
    return VOCAB - np.digitize(np.clip(a, -1, 1), EDGES)


def openvla_values(ids: np.ndarray) -> np.ndarray:
    return CENTRES[np.clip(VOCAB - ids - 1, 0, 254)]


@pytest.fixture(scope="module")
def tok():
    return load_action_tokenizer("binning")


def test_shape_contract(tok):
    assert (tok.chunk_len, tok.action_dim, tok.tokens_per_chunk) == (1, 7, 7)
    for p in range(7):
        assert tok.allowed_ids(p).tolist() == list(range(31744, 32000))


def test_ids_equal_openvla_formula_on_10000_random_actions(tok):
    rng = np.random.default_rng(0)
    a = rng.uniform(-1.2, 1.2, size=(10_000, 7)).astype(np.float32)
    ids = tok.encode(torch.from_numpy(a)[:, None, :])
    assert ids.dtype == torch.int64 and ids.shape == (10_000, 7)
    np.testing.assert_array_equal(ids.numpy(), openvla_ids(a))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_edge_values(tok, dtype):
    below = np.nextafter(EDGES, -np.inf)
    above = np.nextafter(EDGES, np.inf)
    special = np.array([-1.0, 1.0, 0.0, -2.0, 2.0, -1e6, 1e6, -1.0000001, 1.0000001])
    values = np.concatenate([EDGES, below, above, special]).astype(dtype)
    values = np.resize(values, (len(values) + 6) // 7 * 7).reshape(-1, 7)
    ids = tok.encode(torch.from_numpy(values)[:, None, :]).numpy()
    np.testing.assert_array_equal(ids, openvla_ids(values))
    assert ids.min() >= 31744 and ids.max() <= 31999
    # the two ends: -1 -> digitize 1 -> 31999; +1 -> digitize 256 -> 31744
    assert tok.encode(torch.full((1, 1, 7), -1.0))[0, 0] == 31999
    assert tok.encode(torch.full((1, 1, 7), 1.0))[0, 0] == 31744


def test_decode_formula_for_every_id(tok):
    ids = np.arange(31744, 32000).repeat(7).reshape(-1, 7)
    out = tok.decode(torch.from_numpy(ids))
    assert out.shape == (256, 1, 7) and out.dtype == torch.float32
    np.testing.assert_array_equal(out[:, 0].numpy(), openvla_values(ids).astype(np.float32))
    # ids 31744 and 31745 both decode to the last centre, as in OpenVLA
    assert out[0, 0, 0] == out[1, 0, 0] == np.float32(CENTRES[-1])


def test_round_trip_error_is_at_most_one_bin(tok):
    a = torch.rand(2000, 1, 7, dtype=torch.float64) * 2 - 1
    back = tok.decode(tok.encode(a)).double()
    assert (back - a).abs().max() <= 2 / 255 + 1e-9


def test_save_load_round_trip(tok, tmp_path):
    tok.save(tmp_path / "b")
    again = load_action_tokenizer(tmp_path / "b")
    assert isinstance(again, BinningActionTokenizer)
    a = torch.rand(100, 1, 7) * 2 - 1
    assert torch.equal(again.encode(a), tok.encode(a))
    assert torch.equal(again.decode(tok.encode(a)), tok.decode(tok.encode(a)))


def test_allowed_mask_matches_ids(tok):
    mask = tok.allowed_id_mask(32064)
    assert mask.shape == (7, 32064)
    assert mask.sum(1).tolist() == [256] * 7
    assert mask[:, 31744:32000].all() and not mask[:, :31744].any() and not mask[:, 32000:].any()
