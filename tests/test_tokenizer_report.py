"""The tokenizer quality report, against independent numpy computations on the same chunks."""

import json

import numpy as np
import pytest
import torch

from openvla_vq.action_tokenizers import VQActionTokenizer, VQConfig
from openvla_vq.evaluation.tokenizer_report import adjacent_pairs, load_chunks, report
from openvla_vq.data.rlds_writer import write_rlds
from openvla_vq.sim.maniskill_rlds import action_episode, action_features
from test_train_tokenizer import smooth_actions


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    write_rlds(root / "data", "maniskill_synth", (action_episode(smooth_actions(i, 20 + i), "t", f"e{i}") for i in range(6)),
               features=action_features())
    torch.manual_seed(0)
    VQActionTokenizer(VQConfig(block_out_channels=[16] * 4, layers_per_block=1, norm_groups=4, latent_dim=8)).save(root / "vq")
    return root


def test_report_metrics(data, tmp_path):
    r = report(str(data / "vq"), data / "data", ["maniskill_synth:all"], tmp_path)
    d = r["datasets"]["maniskill_synth:all"]
    chunks = load_chunks(data / "data", "maniskill_synth", "all", 5, 10_000)
    assert d["chunks"] == len(chunks) == sum(20 + i for i in range(6))
    # adjacency: within an episode, chunk t+1 is chunk t shifted by one step; 6 episodes -> 5 boundaries
    assert len(adjacent_pairs(chunks)) == len(chunks) - 6
    # binning: independent OpenVLA formula on every action, error at most half a bin (+ the gripper's exact 0/1)
    edges = np.linspace(-1, 1, 256)
    centres = (edges[:-1] + edges[1:]) / 2
    decoded = centres[np.clip(np.digitize(np.clip(chunks, -1, 1), edges) - 1, 0, 254)]
    assert d["binning"]["l1"] == pytest.approx(np.abs(decoded - chunks).mean(), rel=1e-5)
    # binning overlap rate: same bin for consecutive actions, over the within-episode pairs
    bins = np.digitize(np.clip(chunks[:, 0], -1, 1), edges)
    pairs = adjacent_pairs(chunks)
    assert d["binning"]["overlap_rate"] == pytest.approx((bins[pairs] == bins[pairs + 1]).mean())
    layers = d["tokenizer"]["layers"]
    assert len(layers) == 4 and all(0 < l["codes_used"] <= 256 and l["dead_codes"] == 256 - l["codes_used"] for l in layers)
    assert 0.0 <= d["tokenizer"]["overlap_rate"] <= 1.0
    assert json.loads((tmp_path / "report.json").read_text())["tokenizer"] == r["tokenizer"]
    assert (tmp_path / "trajectories.png").stat().st_size > 5000
