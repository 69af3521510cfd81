"""Tokenizer registry: names -> config files, clear errors, layout rules, plugin types."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from openvla_vq import load_action_tokenizer, registered_names
from openvla_vq.action_tokenizers import (
    ActionTokenizerError,
    TokenizerWeightsNotFoundError,
    UnknownTokenizerError,
    VQActionTokenizer,
    VQConfig,
    build_action_tokenizer,
)
from openvla_vq.action_tokenizers.registry import tokenizers_dir

REPO = Path(__file__).resolve().parents[1]


def test_layout_never_shadows_huggingface_tokenizers():
    assert not (REPO / "tokenizers" / "__init__.py").exists()
    assert not [p for p in (REPO / "tests").rglob("*") if p.name.startswith("tokenizers")]
    out = subprocess.run(
        [sys.executable, "-c", "import tokenizers, transformers; print(tokenizers.__file__); tokenizers.Tokenizer"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout
    assert "site-packages" in out


def test_scripts_run_by_path_do_not_shadow_installed_packages():
    """A script run by path puts its folder first on sys.path: bench/tokenizers.py would break transformers."""
    import importlib.util

    for folder in ("bench", "eval", "finetune", "tokenizers"):
        for script in (REPO / folder).glob("*.py"):
            spec = importlib.util.find_spec(script.stem)
            where = spec and (spec.origin or next(iter(spec.submodule_search_locations or []), None))
            assert where is None or REPO in Path(where).parents, f"{script} shadows the installed package {script.stem!r}"


def test_required_names_are_registered_with_one_config_each():
    names = registered_names()
    for name in ["binning", "vq_o", "vq_o+l", "vq_o+l+m"]:
        assert name in names
        entry = json.loads((REPO / "tokenizers" / f"{name}.json").read_text())
        assert "type" in entry["tokenizer"]


def test_unknown_name_lists_known_names_and_closest_match():
    with pytest.raises(UnknownTokenizerError) as info:
        load_action_tokenizer("vq_o+l+n")
    msg = str(info.value)
    assert "did you mean 'vq_o+l+m'" in msg and "binning" in msg and "vq_o+l" in msg and "\n" not in msg


@pytest.mark.parametrize("name", ["vq_o", "vq_o+l", "vq_o+l+m"])
def test_registered_vq_name_without_weights_says_where_and_how(name):
    if (tokenizers_dir() / name / "config.json").exists():
        pytest.skip(f"weights for {name} are present locally")
    with pytest.raises(TokenizerWeightsNotFoundError) as info:
        load_action_tokenizer(name)
    msg = str(info.value)
    assert str(tokenizers_dir() / name) in msg and "train" in msg and "pass --tokenizer" in msg and "\n" not in msg
    if name == "vq_o+l+m":
        assert "import_vqvla" in msg


def test_untrained_vq_from_a_registered_config():
    entry = json.loads((REPO / "tokenizers" / "vq_o.json").read_text())
    tok = build_action_tokenizer({**entry["tokenizer"], "block_out_channels": [16, 16, 16, 16], "norm_groups": 4,
                                  "layers_per_block": 1}, name="vq_o")
    assert isinstance(tok, VQActionTokenizer) and tok.name == "vq_o" and tok.tokens_per_chunk == 4
    with pytest.raises(ActionTokenizerError, match="unknown config keys"):
        build_action_tokenizer({"type": "vq", "codebook_sizes": 3})


def test_registered_name_loads_weights_from_its_folder(tmp_path, monkeypatch):
    reg = tmp_path / "tokenizers"
    reg.mkdir()
    shutil.copy(REPO / "tokenizers" / "vq_o+l+m.json", reg)
    tok = VQActionTokenizer(VQConfig(block_out_channels=[16, 16, 16, 16], norm_groups=4, layers_per_block=1, latent_dim=8))
    tok.save(reg / "vq_o+l+m")
    monkeypatch.setenv("OPENVLA_VQ_TOKENIZERS", str(reg))
    loaded = load_action_tokenizer("vq_o+l+m")
    assert loaded.name == "vq_o+l+m"
    x = torch.rand(10, 5, 7) * 2 - 1
    assert torch.equal(loaded.encode(x), tok.encode(x))


def test_plugin_type_by_import_path(tmp_path):
    tok = build_action_tokenizer({"type": "openvla_vq.action_tokenizers.binning:BinningActionTokenizer", "n_bins": 16})
    assert tok.allowed_ids(0).numel() == 16
    with pytest.raises(ActionTokenizerError, match="could not be imported"):
        build_action_tokenizer({"type": "no_such_module:Thing"})
