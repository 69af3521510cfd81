"""finetune/lora.py end to end on the tiny VLA and a tiny LIBERO-layout RLDS set (CPU)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from openvla_vq.action_tokenizers import VQActionTokenizer, VQConfig
from openvla_vq.action_tokenizers.fast import FastActionTokenizer, FastConfig, dct_symbols, train_bpe
from openvla_vq.model import ImageProcessor, PrismaticVLA
from openvla_vq.model.tiny import write_tiny_checkpoint
from openvla_vq.training.config import FinetuneConfig
from openvla_vq.training.finetune import PreflightError, lr_multiplier, preflight
from bad_inputs import assert_one_line_error, disagreeing_tokenizer, truncate
from interrupt import kill_after_checkpoint
from rlds_fixtures import write_libero_like

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "finetune" / "lora.py"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    write_libero_like(root / "data", episodes=6, length=12)
    write_tiny_checkpoint(root / "tiny-vla", base_vocab_size=1600)
    torch.manual_seed(0)
    VQActionTokenizer(VQConfig(block_out_channels=[16] * 4, norm_groups=4, layers_per_block=1, latent_dim=8), name="vq-tiny").save(root / "vq-tiny")
    symbols = dct_symbols(np.random.default_rng(0).normal(0, 0.3, (2000, 5, 7)), 10.0)  # a FAST fitted to noise-like actions
    low, high = int(symbols.min()), int(symbols.max())
    FastActionTokenizer(FastConfig(min_symbol=low, max_symbol=high), "fast-tiny",
                        bpe_json=train_bpe(symbols, low, high, 256)).save(root / "fast-tiny")
    return root


def args(root: Path, tokenizer: str, run_id: str, steps: int, *extra: str) -> list[str]:
    return ["--vla_path", str(root / "tiny-vla"), "--data_root_dir", str(root / "data"), "--run_root_dir", str(root / "runs"),
            "--tokenizer", tokenizer, "--run_id", run_id, "--batch_size", "2", "--max_steps", str(steps), "--save_steps", "10",
            "--log_steps", "5", "--shuffle_buffer_size", "40", *extra]


def run(cli: list[str], launcher: list[str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    return subprocess.run((launcher or [sys.executable]) + [str(SCRIPT)] + cli, capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


def adapter(root: Path, run_id: str, step: int) -> dict:
    return load_file(str(root / "runs" / run_id / "checkpoints" / f"step_{step:08d}" / "adapter" / "adapter_model.safetensors"))


def fixed_batch_loss(root: Path, tokenizer_path: str, adapter_state: dict | None) -> float:
    """Loss of base (+ adapter) on the same held-out batch, computed outside the training script."""
    from peft import set_peft_model_state_dict

    from openvla_vq import load_action_tokenizer
    from openvla_vq.data.collator import ActionChunkCollator
    from openvla_vq.model.text_tokenizer import load_text_tokenizer
    from openvla_vq.data.rlds_dataset import RLDSChunkDataset
    from openvla_vq.training.lora import add_lora

    model = PrismaticVLA.from_pretrained(root / "tiny-vla")
    tok = load_action_tokenizer(tokenizer_path).for_vocab(1600)
    samples = [s for _, s in zip(range(8), RLDSChunkDataset(root / "data", "libero_90_no_noops", chunk_len=tok.chunk_len, train=False))]
    batch = ActionChunkCollator(load_text_tokenizer(root / "tiny-vla"), tok, ImageProcessor(model.vision_backbone),
                                1600, 1024)(samples)
    model = add_lora(model, 32, 0.0)
    if adapter_state is not None:
        set_peft_model_state_dict(model, adapter_state)
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=batch["pixel_values"],
                     labels=batch["labels"]).loss.item()


@pytest.mark.parametrize("tokenizer", ["binning", "vq-tiny", "fast-tiny", "beast"])
def test_20_steps_lower_the_loss(setup, tokenizer):
    """Every kind of tokenizer unchanged through finetune/lora.py: fixed length (binning, VQ, BEAST) and variable (FAST)."""
    spec = tokenizer if tokenizer in ("binning", "beast") else str(setup / tokenizer)
    done = run(args(setup, spec, f"loss-{tokenizer}", 20))
    assert done.returncode == 0, done.stderr[-3000:]
    before = fixed_batch_loss(setup, spec, None)  # LoRA starts as the identity: the base model's loss
    after = fixed_batch_loss(setup, spec, adapter(setup, f"loss-{tokenizer}", 20))
    assert after < before - 0.05, (before, after)


def test_sigkill_then_resume_matches_an_uninterrupted_run_bitwise(setup):
    reference = setup / "runs" / "loss-binning"
    if not (reference / "checkpoints" / "step_00000020").is_dir():
        assert run(args(setup, "binning", "loss-binning", 20)).returncode == 0
    cli = args(setup, "binning", "killed", 20)
    first = setup / "runs" / "killed" / "checkpoints" / "step_00000010"
    kill_after_checkpoint([sys.executable, str(SCRIPT)] + cli, first, {**os.environ, "OMP_NUM_THREADS": "2"}, cwd=REPO,
                          timeout=300)
    assert first.is_dir() and not (setup / "runs" / "killed" / "checkpoints" / "step_00000020").exists()
    resumed = run(cli + ["--resume", "true"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = adapter(setup, "loss-binning", 20), adapter(setup, "killed", 20)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_processes_keep_identical_parameters(setup):
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    done = run(args(setup, "binning", "ddp", 4, "--save_steps", "2"), launcher=launcher)
    assert done.returncode == 0, done.stderr[-3000:]
    for step in (2, 4):
        state = torch.load(setup / "runs" / "ddp" / "checkpoints" / f"step_{step:08d}" / "training_state.pt", weights_only=True)
        assert state["num_processes"] == 2 and len(state["rank_digests"]) == 2 and len(set(state["rank_digests"])) == 1


def test_merge_gives_the_same_model_as_base_plus_adapter(setup):
    from peft import PeftModel

    from openvla_vq.training.merge import merge

    checkpoint = setup / "runs" / "loss-binning" / "checkpoints" / "step_00000020"
    if not checkpoint.is_dir():
        assert run(args(setup, "binning", "loss-binning", 20)).returncode == 0
    out = merge(checkpoint, setup / "merged")
    merged = PrismaticVLA.from_pretrained(out).eval()
    unmerged = PeftModel.from_pretrained(PrismaticVLA.from_pretrained(setup / "tiny-vla"), str(checkpoint / "adapter")).eval()
    batch = {"input_ids": torch.tensor([[1, 50, 60, 70, 1500, 1501]]), "attention_mask": torch.ones(1, 6, dtype=torch.long),
             "pixel_values": torch.randn(1, 6, 224, 224)}
    with torch.no_grad():
        assert torch.allclose(merged(**batch).logits, unmerged(**batch).logits, atol=1e-4)
    assert {"dataset_statistics.json", "action_tokenizer.json", "tokenizer_config.json"} <= {p.name for p in out.iterdir()}


def test_the_users_command_lines_parse(setup):
    launcher = [sys.executable, "-m", "accelerate.commands.launch"]
    vq = run(["--tokenizer", "vq_o+l+m"], launcher=launcher)
    assert vq.returncode != 0
    err = [line for line in vq.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "weights of action tokenizer 'vq_o+l+m' not found" in err[0] and "import_vqvla" in err[0]
    binning = run(["--tokenizer", "binning"])  # parses, then stops at the missing OpenVLA-7B folder
    assert binning.returncode == 2 and "vla_path 'openvla/openvla-7b' is not a checkpoint folder" in binning.stderr


def test_preflight_errors(setup):
    base = dict(vla_path=str(setup / "tiny-vla"), data_root_dir=setup / "data", run_root_dir=setup / "runs-preflight")
    with pytest.raises(PreflightError, match="no RLDS dataset 'libero_10_no_noops'"):
        preflight(FinetuneConfig(**base, dataset_name="libero_10_no_noops"))
    long_chunks = VQActionTokenizer(VQConfig(chunk_len=32, block_out_channels=[16] * 6, norm_groups=4, layers_per_block=1, latent_dim=8))
    long_chunks.save(setup / "vq-k32")
    with pytest.raises(PreflightError, match="needs 32-step chunks but the longest episode of libero_90_no_noops has 17 steps"):
        preflight(FinetuneConfig(**base, tokenizer=str(setup / "vq-k32")))
    slots = [list(range(1000 + 256 * i, 1256 + 256 * i)) for i in range(4)]
    VQActionTokenizer(VQConfig(block_out_channels=[16] * 4, norm_groups=4, layers_per_block=1, latent_dim=8,
                               slot_policy="least_used", slot_ids=slots)).save(setup / "vq-slots")
    with pytest.raises(PreflightError, match="cannot move"):
        preflight(FinetuneConfig(**base, tokenizer=str(setup / "vq-slots")))
    clash = [list(range(1 + 256 * i, 257 + 256 * i)) for i in range(4)]  # includes <s> = 1 and </s> = 2
    VQActionTokenizer(VQConfig(block_out_channels=[16] * 4, norm_groups=4, layers_per_block=1, latent_dim=8, special_ids=[], vocab_size=1600,
                               slot_policy="least_used", slot_ids=clash)).save(setup / "vq-clash")
    with pytest.raises(PreflightError, match=r"ids \[1, 2\] are special tokens of the LLM tokenizer"):
        preflight(FinetuneConfig(**base, tokenizer=str(setup / "vq-clash")))
    with pytest.raises(PreflightError, match="no checkpoint"):
        preflight(FinetuneConfig(**base, resume=True))
    with pytest.raises(PreflightError, match="--lr_schedule 'linear': pass constant"):
        preflight(FinetuneConfig(**base, lr_schedule="linear"))
    with pytest.raises(PreflightError, match=r"--warmup_steps 10: pass 0 \(none, OpenVLA's\) up to --max_steps - 1 \(9\)"):
        preflight(FinetuneConfig(**base, max_steps=10, warmup_steps=10))
    with pytest.raises(PreflightError, match="--max_grad_norm -1.0: pass 0"):
        preflight(FinetuneConfig(**base, max_grad_norm=-1.0))
    with pytest.raises(PreflightError, match="--cotrain_frames: no labelled frames in .* run python -m openvla_vq.sim.scene_frames"):
        preflight(FinetuneConfig(**base, cotrain_frames=setup / "no-frames"))
    with pytest.raises(PreflightError, match="--cotrain_batch_size 0, --cotrain_held_out 4: each must be at least 1"):
        preflight(FinetuneConfig(**base, cotrain_frames=setup / "no-frames", cotrain_batch_size=0))


def test_cotraining_frames_too_few_to_hold_out_stop_the_command_line_in_one_line(setup):
    """Found only once the frames load (after preflight): still the command line's one-line error, nothing written."""
    frames = setup / "one-episode-frames"
    frames.mkdir(exist_ok=True)
    np.savez(frames / "task47_ep000.npz", phase=np.zeros(1))
    done = run(args(setup, "binning", "cotrain-too-few", 2, "--cotrain_frames", str(frames)))
    assert done.returncode == 2, done.stderr[-2000:]
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")] == [
        f"error: --cotrain_frames: task 47 has 1 episodes in {frames}, not more than the 4 held out per task: generate "
        "more, or hold out fewer (--held_out; fine-tuning: --cotrain_held_out)"]
    assert "Traceback" not in done.stderr
    assert not (setup / "runs" / "cotrain-too-few").exists()


def test_learning_rate_warms_up_linearly_then_follows_the_schedule():
    """Written out by hand: 4 warm-up steps of 12, then a half cosine over the remaining 8 (or constant)."""
    cosine = FinetuneConfig(max_steps=12, warmup_steps=4, lr_schedule="cosine")
    assert [lr_multiplier(cosine, s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_multiplier(cosine, 4) == 1.0 and lr_multiplier(cosine, 8) == pytest.approx(0.5)
    assert lr_multiplier(cosine, 10) == pytest.approx(0.5 * (1 + np.cos(np.pi * 0.75)))
    assert lr_multiplier(cosine, 12) == pytest.approx(0.0) and lr_multiplier(cosine, 20) == pytest.approx(0.0)
    constant = FinetuneConfig(max_steps=12, warmup_steps=4)
    assert [lr_multiplier(constant, s) for s in (0, 3, 4, 11)] == [0.25, 1.0, 1.0, 1.0]
    plain = FinetuneConfig(max_steps=12, lr_schedule="cosine")  # no warm-up: the cosine from step 0, as before
    assert lr_multiplier(plain, 0) == 1.0 and lr_multiplier(plain, 6) == pytest.approx(0.5)


def test_warmup_and_gradient_clipping_run_and_log_the_norm(setup):
    from openvla_vq.evaluation.learning_report import training_curve

    done = run(args(setup, "binning", "clipped", 20, "--warmup_steps", "5", "--max_grad_norm", "0.01",
                    "--lr_schedule", "cosine"))
    assert done.returncode == 0, done.stderr[-3000:]
    norms = [value for _, value in training_curve(setup / "runs" / "clipped")["grad_norm"]]
    assert len(norms) == 4 and all(n > 0.01 for n in norms)  # the norm before clipping: every update was clipped
    assert fixed_batch_loss(setup, "binning", adapter(setup, "clipped", 20)) < fixed_batch_loss(setup, "binning", None) - 0.05


def test_fsdp_on_two_cpu_processes_resumes_after_sigkill_and_merges(setup):
    """The FSDP settings of finetune/accelerate_fsdp.yaml on 2 gloo processes: sharded optimizer state and a gathered
    adapter per checkpoint; a SIGKILLed run resumed with --resume true ends with the uninterrupted run's weights."""
    from openvla_vq.training.merge import merge

    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                str(REPO / "finetune" / "accelerate_fsdp_cpu2.yaml")]
    full = run(args(setup, "binning", "fsdp", 8, "--save_steps", "4"), launcher=launcher)
    assert full.returncode == 0, full.stderr[-3000:]
    step4 = setup / "runs" / "fsdp" / "checkpoints" / "step_00000004"
    assert sorted(p.name for p in (step4 / "optimizer_0").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert torch.load(step4 / "training_state.pt", weights_only=True)["num_processes"] == 2
    lora_b = [v for k, v in adapter(setup, "fsdp", 8).items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # gathered, trained weights (LoRA B starts at zero)

    cli = args(setup, "binning", "fsdp-killed", 8, "--save_steps", "4")
    first = setup / "runs" / "fsdp-killed" / "checkpoints" / "step_00000004"
    kill_after_checkpoint(launcher + [str(SCRIPT)] + cli, first, {**os.environ, "OMP_NUM_THREADS": "2"}, cwd=REPO,
                          whole_group=True, timeout=300)  # the launcher and both ranks, as when a node dies
    assert first.is_dir() and not (setup / "runs" / "fsdp-killed" / "checkpoints" / "step_00000008").exists()
    resumed = run(cli + ["--resume", "true"], launcher=launcher)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = adapter(setup, "fsdp", 8), adapter(setup, "fsdp-killed", 8)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    checkpoint = setup / "runs" / "fsdp" / "checkpoints" / "step_00000008"
    merged = PrismaticVLA.from_pretrained(merge(checkpoint, setup / "merged-fsdp")).eval()
    batch = {"input_ids": torch.tensor([[1, 50, 60, 70, 1500, 1501]]), "attention_mask": torch.ones(1, 6, dtype=torch.long),
             "pixel_values": torch.randn(1, 6, 224, 224)}
    from peft import PeftModel

    unmerged = PeftModel.from_pretrained(PrismaticVLA.from_pretrained(setup / "tiny-vla"), str(checkpoint / "adapter")).eval()
    with torch.no_grad():
        assert torch.allclose(merged(**batch).logits, unmerged(**batch).logits, atol=1e-4)


def test_bad_finetune_input_is_one_line_without_traceback(setup, tmp_path):
    import shutil

    (tmp_path / "empty").mkdir()
    shutil.copytree(setup / "tiny-vla", tmp_path / "vla-truncated")
    truncate(tmp_path / "vla-truncated" / "model.safetensors")
    shutil.copytree(setup / "vq-tiny", tmp_path / "vq-truncated")
    truncate(tmp_path / "vq-truncated" / "model.safetensors")
    finished = setup / "runs" / "loss-binning"
    if not (finished / "checkpoints" / "step_00000020").is_dir():
        assert run(args(setup, "binning", "loss-binning", 20)).returncode == 0
    shutil.copytree(finished, setup / "runs" / "adapter-truncated")
    truncate(setup / "runs" / "adapter-truncated" / "checkpoints" / "step_00000020" / "adapter" / "adapter_model.safetensors")
    vla = ["--vla_path", str(setup / "tiny-vla")]
    cases = {
        "is not a checkpoint folder with config.json": ["--vla_path", str(tmp_path / "empty")],
        "vla-truncated/model.safetensors is not a readable safetensors file": ["--vla_path", str(tmp_path / "vla-truncated")],
        "shape mismatch": vla + ["--tokenizer", str(disagreeing_tokenizer(tmp_path / "vq-disagrees"))],
        "vq-truncated/model.safetensors is not a readable safetensors file": vla + ["--tokenizer", str(tmp_path / "vq-truncated")],
        "adapter_model.safetensors is not a readable safetensors file": vla + ["--run_id", "adapter-truncated", "--resume", "true"],
    }
    for expected, cli in cases.items():
        base = args(setup, "binning", "bad-input", 2)
        assert_one_line_error(run(base + cli), expected)
