"""The residual conv VQ-VAE tokenizer: contract, id ranges, RVQ math, loss, training mechanics, persistence."""

import json

import pytest
import torch

from openvla_vq import load_action_tokenizer
from openvla_vq.action_tokenizers import VQActionTokenizer, VQConfig
from openvla_vq.action_tokenizers.vq_network import conv_padding

RANGES = [(31744, 31999), (31488, 31743), (31232, 31487), (30976, 31231)]


def tiny_config(**kw) -> VQConfig:
    base = dict(block_out_channels=[16, 16, 32, 32], layers_per_block=1, norm_groups=8, latent_dim=16)
    return VQConfig(**{**base, **kw})


def test_untrained_paper_size_tokenizer_maps_1000_chunks_into_the_four_ranges():
    torch.manual_seed(0)
    tok = VQActionTokenizer(VQConfig())  # the paper's sizes: 4 x 256 codes on a 128-d latent
    assert (tok.chunk_len, tok.action_dim, tok.tokens_per_chunk) == (5, 7, 4)
    x = torch.rand(1000, 5, 7) * 2 - 1
    ids = tok.encode(x)
    assert ids.shape == (1000, 4) and ids.dtype == torch.int64
    for layer, (lo, hi) in enumerate(RANGES):
        assert tok.allowed_ids(layer).tolist() == list(range(lo, hi + 1))
        assert ((ids[:, layer] >= lo) & (ids[:, layer] <= hi)).all()
    out = tok.decode(ids)
    assert out.shape == (1000, 5, 7) and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_id_formula_is_vqvla():
    tok = VQActionTokenizer(tiny_config())
    codes = torch.tensor([[0, 0, 0, 0], [255, 255, 255, 255], [1, 2, 3, 4]])
    want = torch.tensor([[32000 - 1 - (c + 256 * i) for i, c in enumerate(row)] for row in codes.tolist()])
    assert torch.equal(tok.id_table[torch.arange(4), codes], want)
    assert torch.equal(tok.ids_to_symbols(want), codes)


def test_greedy_residual_quantization_matches_float64_brute_force():
    torch.manual_seed(1)
    tok = VQActionTokenizer(tiny_config())
    latent = torch.randn(64, 16)
    codes = tok.model.vq_layer.quantize(latent)
    books = [e.double() for e in tok.model.vq_layer.codebooks()]
    r = latent.double()
    for i, book in enumerate(books):
        c = torch.cdist(r, book).argmin(1)
        assert torch.equal(c, codes[:, i])
        r = r - book[c]
    z = tok.model.vq_layer.codes_to_latent(codes)
    assert torch.allclose(z.double(), sum(b[codes[:, i]] for i, b in enumerate(books)), atol=1e-6)


def test_training_loss_is_reconstruction_plus_lambda_times_codebook_and_commitment():
    torch.manual_seed(2)
    tok = VQActionTokenizer(tiny_config(dead_code_threshold=0.0))  # no restarts: the codebook stays put in this pass
    net = tok.model.train()
    x = torch.rand(32, 5, 7) * 2 - 1
    out = net(x)  # first training pass also runs k-means
    net.eval()
    latent = net.encode_latent(x)
    codes = net.vq_layer.quantize(latent)
    r, cb, commit = latent, 0.0, 0.0
    for i, book in enumerate(net.vq_layer.codebooks()):
        q = book[codes[:, i]]
        cb += ((q - r) ** 2).mean()
        commit += ((r - q) ** 2).mean()
        r = r - q
    recon = net.decode_latent(net.vq_layer.codes_to_latent(codes))
    # the same weights give the same quantities (the EMA stats updated in the pass do not affect the codebook in "loss" mode)
    expect = ((recon - x) ** 2).mean() + 4.0 * (cb + commit)
    assert torch.allclose(out["loss"], expect, rtol=1e-4, atol=1e-6)
    assert torch.equal(out["codes"], codes)


def test_kmeans_initialises_codebooks_on_the_first_training_batch_only():
    torch.manual_seed(3)
    tok = VQActionTokenizer(tiny_config(codebook_size=8, dead_code_threshold=0.0))
    net = tok.model
    x = torch.rand(256, 5, 7) * 2 - 1
    net.eval()(x)
    assert all(l._codebook.initted.item() == 0 for l in net.vq_layer.layers), "eval must never initialise codebooks"
    net.train()(x)
    assert all(l._codebook.initted.item() == 1 for l in net.vq_layer.layers)
    latent = net.encode_latent(x).detach()
    book0 = net.vq_layer.layers[0]._codebook.embed[0].detach()
    # k-means centres lie inside the data: each is a mean of latents, so within their bounding box
    assert (book0.min(0).values >= latent.min(0).values - 1e-5).all() and (book0.max(0).values <= latent.max(0).values + 1e-5).all()
    before = book0.clone()
    net(x)
    assert torch.equal(net.vq_layer.layers[0]._codebook.embed[0], before), "k-means runs once"


def test_dead_codes_are_restarted_on_batch_residuals():
    torch.manual_seed(4)
    tok = VQActionTokenizer(tiny_config(codebook_size=16, dead_code_threshold=0.5, ema_decay=0.0))
    net = tok.model.train()
    cb = net.vq_layer.layers[0]._codebook
    cb.initted.fill_(1)
    far = torch.full_like(cb.embed.data[0], 100.0)
    far[0] = 0.0  # only code 0 is reachable; the other 15 are dead
    cb.embed.data[0] = far
    x = torch.rand(64, 5, 7) * 2 - 1
    net(x)
    latent = net.encode_latent(x).detach()
    new = cb.embed.data[0]
    moved = (new[1:] - 100.0).abs().amax(1) > 1
    assert moved.all()
    # each restarted code equals one of the batch's layer-0 residuals (= latents)
    d = torch.cdist(new[1:], latent).min(1).values
    assert (d < 1e-3).all()


def test_conv_padding_modes():
    assert conv_padding("same", 3) == (1, 1, 1, 1)
    assert conv_padding("vq-vla", 3) == (2, 0, 1, 1)  # action axis: 2 left, 0 right; time: 1 each side
    assert conv_padding("same", 1) == conv_padding("vq-vla", 1) == (0, 0, 0, 0)


def test_vq_vla_preset_is_causal_on_the_action_axis_and_ours_is_not():
    torch.manual_seed(5)
    x = torch.rand(1, 5, 7) * 2 - 1
    y = x.clone()
    y[0, :, 6] += 0.5  # change only the gripper (last action column)
    for preset, causal in [("vq-vla", True), ("openvla-vq", False)]:
        net = VQActionTokenizer(VQConfig.preset_config(preset, **dict(block_out_channels=[16, 16, 32, 32], layers_per_block=1, norm_groups=8, latent_dim=16, norm_per_timestep=True))).model
        a = net.encoder.conv_in(net.embed(x))
        b = net.encoder.conv_in(net.embed(y))
        changed = (a - b).abs().amax(dim=(0, 1, 2)) > 0  # per action column
        # action-causal: a change in the last column reaches only that column; "same": also column 5
        assert changed.tolist() == ([False] * 6 + [True] if causal else [False] * 5 + [True, True])


def test_save_load_reproduces_encode_and_decode_exactly(tmp_path):
    torch.manual_seed(6)
    tok = VQActionTokenizer(tiny_config(), name="tiny")
    tok.model.train()(torch.rand(128, 5, 7) * 2 - 1)  # k-means-initialised, non-default state
    tok.model.eval()
    tok.save(tmp_path / "tok")
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == ["config.json", "model.safetensors"]
    again = load_action_tokenizer(tmp_path / "tok")
    assert again.name == "tiny" and json.loads((tmp_path / "tok" / "config.json").read_text())["config"]["preset"] == "openvla-vq"
    x = torch.rand(300, 5, 7) * 2 - 1
    ids = tok.encode(x)
    assert torch.equal(again.encode(x), ids)
    assert torch.equal(again.decode(ids), tok.decode(ids))


@pytest.mark.parametrize("update", ["loss", "ema"])
def test_training_reduces_reconstruction_error(update):
    """60 AdamW steps at the paper's learning-rate scale fit a small set of trajectories.

    (At lr ~1e-3 a tiny encoder's latents move farther per step than their spread and the codes collapse;
    the authors train at 5e-5.)"""
    torch.manual_seed(7)
    tok = VQActionTokenizer(tiny_config(codebook_update=update, ema_decay=0.8 if update == "ema" else 0.99))
    net = tok.model.train().requires_grad_(True)
    protos = torch.rand(16, 5, 7) * 2 - 1
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    losses = []
    for _ in range(60):
        out = net(protos[torch.randint(0, 16, (64,))] + 0.02 * torch.randn(64, 5, 7))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["recon_loss"].item())
    assert losses[-1] < 0.5 * losses[0]
