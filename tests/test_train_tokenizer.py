"""tokenizers/train.py: progressive stages over action-only RLDS data, one-line errors, exact resume after SIGKILL."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from openvla_vq import load_action_tokenizer
from openvla_vq.sim.maniskill_rlds import action_episode, action_features
from openvla_vq.data.rlds_writer import write_rlds

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tokenizers" / "train.py"


def smooth_actions(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, n)[:, None]
    xyz = np.sin(2 * np.pi * (t * rng.uniform(0.5, 1.5, 6) + rng.uniform(size=6))) * 0.01
    return np.concatenate([xyz, (t < rng.uniform(0.3, 0.7)).astype(np.float64)], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    for name, offset in (("maniskill_synth", 0), ("maniskill_heldout", 100)):
        write_rlds(root / "data", name, (action_episode(smooth_actions(offset + i, 30 + i), "task", f"ep{i}") for i in range(8)),
                   features=action_features())
    reg = root / "registry"
    reg.mkdir()
    for f in (REPO / "tokenizers").glob("*.json"):
        shutil.copy(f, reg)
    mixtures = json.loads((reg / "mixtures.json").read_text())
    mixtures["two"] = {"stages": [{"name": "A", "datasets": [["maniskill_synth", 1.0]]},
                                  {"name": "A+B", "datasets": [["maniskill_synth", 1.0], ["maniskill_heldout", 1.0]]}]}
    (reg / "mixtures.json").write_text(json.dumps(mixtures))
    return root


def cli(root: Path, name: str, mixture: str = "two") -> list[str]:
    return ["--mixture", mixture, "--data_root_dir", str(root / "data"), "--name", name, "--run_root_dir", str(root / "runs"),
            "--steps_per_stage", "10", "--save_steps", "5", "--log_steps", "5", "--batch_size", "32", "--shuffle_buffer_size", "64",
            "--block_out_channels", "[16,16,16,16]", "--layers_per_block", "1", "--norm_groups", "4", "--latent_dim", "8",
            "--learning_rate", "1e-3"]


def env(root: Path) -> dict:
    return {**os.environ, "OPENVLA_VQ_TOKENIZERS": str(root / "registry"), "OMP_NUM_THREADS": "2"}


def test_progressive_training_writes_a_registered_tokenizer(registry):
    done = subprocess.run([sys.executable, str(SCRIPT)] + cli(registry, "vq_two"), env=env(registry), cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = registry / "registry" / "vq_two"
    meta = json.loads((folder / "config.json").read_text())["metadata"]
    assert [s["name"] for s in meta["stages"]] == ["A", "A+B"] and meta["steps"] == 20
    assert set(meta["dataset_statistics"]) == {"maniskill_synth", "maniskill_heldout"}
    os.environ["OPENVLA_VQ_TOKENIZERS"] = str(registry / "registry")
    try:
        tok = load_action_tokenizer(str(folder))
    finally:
        del os.environ["OPENVLA_VQ_TOKENIZERS"]
    assert tok.encode(np.zeros((2, 5, 7), np.float32)).shape == (2, 4)


def test_sigkill_and_resume_end_with_the_same_weights(registry):
    reference = registry / "registry" / "vq_two" / "model.safetensors"
    if not reference.is_file():
        test_progressive_training_writes_a_registered_tokenizer(registry)
    args = cli(registry, "vq_killed")
    proc = subprocess.Popen([sys.executable, str(SCRIPT)] + args, env=env(registry), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    boundary = registry / "runs" / "vq_killed" / "checkpoints" / "step_00000010"  # end of stage A
    deadline = time.time() + 300
    while not boundary.is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert boundary.is_dir() and not (registry / "registry" / "vq_killed").exists()
    done = subprocess.run([sys.executable, str(SCRIPT)] + args + ["--resume", "true"], env=env(registry), cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = load_file(str(reference)), load_file(str(registry / "registry" / "vq_killed" / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_missing_data_is_a_one_line_error(registry):
    done = subprocess.run([sys.executable, str(SCRIPT)] + cli(registry, "vq_o", mixture="o"), env=env(registry), cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1
    assert "stage O of mixture o: no RLDS dataset 'fractal20220817_data'" in errors[0]


def test_bad_init_from_or_resume_is_one_line_without_traceback(registry, tmp_path):
    from bad_inputs import assert_one_line_error, disagreeing_tokenizer, truncate

    disagrees = disagreeing_tokenizer(tmp_path / "vq-disagrees")
    shutil.copytree(disagrees, tmp_path / "vq-truncated")
    truncate(tmp_path / "vq-truncated" / "model.safetensors")
    cases = {"nowhere": "no saved action tokenizer", "vq-disagrees": "shape mismatch",
             "vq-truncated": "vq-truncated/model.safetensors is not a readable safetensors file"}
    for folder, expected in cases.items():
        done = subprocess.run([sys.executable, str(SCRIPT)] + cli(registry, f"bad-{folder}") + ["--init_from", str(tmp_path / folder)],
                              env=env(registry), cwd=REPO, capture_output=True, text=True, timeout=300)
        assert_one_line_error(done, f"--init_from {tmp_path / folder}: ")
        assert_one_line_error(done, expected)
    # a run whose latest checkpoint was cut short: --resume names the file
    if not (registry / "runs" / "vq_two").is_dir():
        test_progressive_training_writes_a_registered_tokenizer(registry)
    cut = registry / "runs" / "vq_cut"
    shutil.copytree(registry / "runs" / "vq_two", cut)
    truncate(cut / "checkpoints" / (cut / "latest").read_text().strip() / "tokenizer" / "model.safetensors")
    done = subprocess.run([sys.executable, str(SCRIPT)] + cli(registry, "vq_cut") + ["--resume", "true"], env=env(registry),
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert_one_line_error(done, "model.safetensors is not a readable safetensors file")
