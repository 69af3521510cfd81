"""Importing the authors' released tokenizer: equivalence with their network on the golden vectors.

The synthetic state dict is rebuilt from ../shared/reference/vqvla-checkpoint/state_dict.tsv with the
seeded recipe of golden/README.md, saved in the authors' full training-checkpoint format, imported by
the real converter command, loaded through the registry, and compared with what the authors' own code
produced (golden.json).
"""

import argparse
import shutil
from pathlib import Path

import pytest
import torch

from openvla_vq import load_action_tokenizer
from openvla_vq.action_tokenizers.import_vqvla import (
    CheckpointImportError,
    convert_state_dict,
    extract_state_dict,
    import_vqvla,
    main,
    read_checkpoint,
)
from vqvla_reference import golden, golden_tensor, state_dict_sha256, synthetic_state_dict

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reference(vqvla_reference_dir):
    sd = synthetic_state_dict()
    g = golden()
    assert state_dict_sha256(sd) == g["state_dict_sha256"], "the recipe no longer rebuilds the authors' synthetic state dict"
    return sd, g


@pytest.fixture(scope="module")
def imported(reference, tmp_path_factory):
    sd, _ = reference
    root = tmp_path_factory.mktemp("vqvla")
    ckpt = root / "all_data_vq.pth"
    args = argparse.Namespace(batch_size=1024, lr=5e-5, opt_betas=[0.9, 0.95], use_time_pe=True, resume="")
    torch.save({"model": sd, "step": 0, "args": args, "optimizer": {"state": {}, "param_groups": []}, "scaler": {}}, ckpt)
    out = root / "vq_o+l+m"
    assert main([str(ckpt), "--out", str(out)]) == 0
    ckpt.unlink()
    return load_action_tokenizer(out), out


def test_golden_codes_ids_latent_and_decoded_actions(imported, reference):
    tok, _ = imported
    _, g = reference
    assert tok.config.preset == "vq-vla" and tok.config.padding == "vq-vla"
    assert sum(p.numel() for p in tok.model.parameters()) == 113_097_427  # the authors' count (checkpoint README §2)
    x = golden_tensor(g["input"]["x"])
    with torch.no_grad():
        latent = tok.model.encode_latent(x)
    assert torch.allclose(latent, golden_tensor(g["latent"]["full"]), atol=5e-5, rtol=0)
    ids = tok.encode(x)
    assert torch.equal(ids, torch.tensor(g["token_ids"]))
    assert torch.equal(tok.ids_to_symbols(ids), torch.tensor(g["codes"]))
    z = tok.model.vq_layer.codes_to_latent(torch.tensor(g["codes"]))
    assert torch.allclose(z[:, :8], golden_tensor(g["quantized_first8"]), atol=1e-6, rtol=0)
    assert torch.allclose(tok.decode(ids), golden_tensor(g["decoded"]), atol=5e-5, rtol=0)


def test_golden_decode_only_hand_picked_codes(imported, reference):
    tok, _ = imported
    _, g = reference
    hand_ids = torch.tensor(g["hand_token_ids"])
    expect = torch.tensor([[32000 - 1 - (c + 256 * i) for i, c in enumerate(row)] for row in g["hand_codes"]])
    assert torch.equal(hand_ids, expect)
    z = tok.model.vq_layer.codes_to_latent(torch.tensor(g["hand_codes"]))
    assert torch.allclose(z[:, :8], golden_tensor(g["hand_quantized_first8"]), atol=1e-6, rtol=0)
    assert torch.allclose(tok.decode(hand_ids), golden_tensor(g["hand_decoded"]), atol=5e-5, rtol=0)


def test_time_embedding_is_the_authors_buffer(imported, reference):
    tok, _ = imported
    _, g = reference
    assert torch.equal(tok.model.time_emb[0, :, :, 0], golden_tensor(g["time_emb"]))


def test_imported_folder_serves_the_registered_name(imported, tmp_path, monkeypatch):
    _, folder = imported
    reg = tmp_path / "tokenizers"
    reg.mkdir()
    shutil.copy(REPO / "tokenizers" / "vq_o+l+m.json", reg)
    (reg / "vq_o+l+m").symlink_to(folder, target_is_directory=True)
    monkeypatch.setenv("OPENVLA_VQ_TOKENIZERS", str(reg))
    tok = load_action_tokenizer("vq_o+l+m")
    assert tok.name == "vq_o+l+m" and tok.config.preset == "vq-vla"


def test_every_accepted_checkpoint_form(reference):
    sd, _ = reference
    bare = extract_state_dict(sd)
    assert len(bare) == 374 and all(not k.startswith("vqvae.") for k in bare)
    assert extract_state_dict({"model": sd}).keys() == bare.keys()
    assert extract_state_dict(bare).keys() == bare.keys()  # already unprefixed


class Payload:
    """Stands for arbitrary code inside a pickle; weights_only loading must refuse it."""


def one_line(exc_info, *parts):
    msg = str(exc_info.value)
    assert "\n" not in msg
    for p in parts:
        assert p in msg, msg


def test_malformed_checkpoints(reference, tmp_path):
    sd, _ = reference
    bare = extract_state_dict(sd)

    text = tmp_path / "notes.pth"
    text.write_text("this is not a checkpoint")
    with pytest.raises(CheckpointImportError) as e:
        import_vqvla(text, tmp_path / "x")
    one_line(e, "not a loadable torch checkpoint")
    assert not (tmp_path / "x").exists()

    evil = tmp_path / "evil.pth"  # an arbitrary pickled object must never be executed or loaded
    torch.save({"model": {"a": torch.zeros(1)}, "payload": Payload()}, evil)
    with pytest.raises(CheckpointImportError) as e:
        read_checkpoint(evil)
    one_line(e, "not a loadable torch checkpoint")

    with pytest.raises(CheckpointImportError) as e:
        extract_state_dict({"step": 3})
    one_line(e, "no state dict")

    missing = {k: v for k, v in bare.items() if not k.startswith("decoder.projection")}
    with pytest.raises(CheckpointImportError) as e:
        convert_state_dict(missing)
    one_line(e, "2 missing keys", "decoder.projection.weight")

    extra = {**bare, "decoder.projection2.weight": torch.zeros(1)}
    with pytest.raises(CheckpointImportError) as e:
        convert_state_dict(extra)
    one_line(e, "1 unexpected keys", "decoder.projection2.weight")

    wrong = {**bare, "decoder.projection.weight": torch.zeros(7, 9)}
    with pytest.raises(CheckpointImportError) as e:
        convert_state_dict(wrong)
    one_line(e, "shape mismatch at decoder.projection.weight", "expected [7, 8], found [7, 9]")

    uninit = {**bare, "vq_layer.layers.2._codebook.initted": torch.zeros(1)}
    with pytest.raises(CheckpointImportError) as e:
        convert_state_dict(uninit)
    one_line(e, "vq_layer.layers.2._codebook.initted", "never initialised")


def test_cli_reports_errors_in_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "missing.pth"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "no such file" in err and "\n" not in err


def test_bad_importer_input_is_one_line_without_traceback(reference, tmp_path):
    import subprocess
    import sys

    from bad_inputs import assert_one_line_error, truncate

    sd, _ = reference
    torch.save({"model": sd, "step": 0}, tmp_path / "full.pth")
    shutil.copy(tmp_path / "full.pth", tmp_path / "truncated.pth")
    truncate(tmp_path / "truncated.pth")
    torch.save({"model": {**sd, "decoder.projection.weight": torch.zeros(7, 9)}}, tmp_path / "other_shapes.pth")
    cases = {"no such file; download all_data_vq.pth": tmp_path / "missing.pth",
             "truncated.pth: not a loadable torch checkpoint": tmp_path / "truncated.pth",
             "shape mismatch at decoder.projection.weight": tmp_path / "other_shapes.pth"}
    for expected, checkpoint in cases.items():
        done = subprocess.run([sys.executable, "-m", "openvla_vq.action_tokenizers.import_vqvla", str(checkpoint), "--out",
                               str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
        assert_one_line_error(done, expected)
        assert not (tmp_path / "out").exists()  # nothing half-written
