"""Break the evaluation side once per train/eval mismatch and show which learning-guard check catches it.

    .venv/bin/python -m pytest tests/test_learning_guard.py --basetemp=/tmp/guard   # memorises, keeps the folders
    .venv/bin/python tests/guard_breaks.py /tmp/guard [--tables eval,bf16]

For each mismatch, a patched copy of the library (one edit, evaluation side only; training data and checkpoint
stay) replays the memorised demonstration through eval/libero90.py, then the guard's checks
(tests/test_learning_guard.py) run on that evaluation. A second table breaks the bfloat16 path only (float32 is
untouched) and runs the guard's bfloat16 check against each. Prints markdown tables; the README's are this output.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import test_learning_guard as guard  # noqa: E402

# name -> (file under openvla_vq/, text, replacement) or None for no edit; extra eval flags
BREAKS: list[tuple[str, tuple[str, str, str] | None, list[str]]] = [
    ("none (the shipped code)", None, []),
    ("frames not rotated by 180 degrees",
     ("sim/libero_env.py", "np.ascontiguousarray(image[::-1, ::-1])", "np.ascontiguousarray(image)"), []),
    ("centre crop on (trained without augmentation)", None, ["--center_crop", "true"]),
    ("no JPEG round trip", ("data/preprocess.py",
                            "tf.io.decode_image(tf.io.encode_jpeg(tf.convert_to_tensor(image)), expand_animations=False, channels=3)",
                            "tf.convert_to_tensor(image)"), []),
    ("bilinear instead of lanczos resize", ("data/preprocess.py", "x = resize_uint8(x, size)",
                                            "x = tf.cast(tf.clip_by_value(tf.round(tf.image.resize(x, (size, size), "
                                            "method='bilinear')), 0, 255), tf.uint8)"), []),
    ("min/max instead of q01/q99 statistics", ("data/normalization.py", "0.5 * (x + 1) * (q99 - q01) + q01",
                                               "0.5 * (x + 1) * (np.asarray(stats.get('action', stats)['max']) - "
                                               "np.asarray(stats.get('action', stats)['min'])) + "
                                               "np.asarray(stats.get('action', stats)['min'])"), []),
    ("gripper not inverted (`gripper_to_env`)", ("sim/protocol.py", "out[..., -1] = -np.sign(", "out[..., -1] = np.sign("), []),
    ("each chunk executed in reverse order", ("evaluation/libero90.py", "[active[s].instruction for s in slots]))",
                                              "[active[s].instruction for s in slots]))[:, ::-1]"), []),
]

# name -> (file under openvla_vq/, text, replacement): each edit changes what a bfloat16 policy computes, never float32's
BF16_BREAKS: list[tuple[str, tuple[str, str, str] | None]] = [
    ("none (the shipped code)", None),
    ("weights truncated to bfloat16, not rounded", (
        "model/prismatic.py", "{k: v.to(dtype) if v.is_floating_point()",
        "{k: ((v.float().view(torch.int32) & -65536).view(torch.float32).to(dtype) if dtype == torch.bfloat16 "
        "else v.to(dtype)) if v.is_floating_point()")),
    ("argmax over bfloat16 logits (no float32 upcast)", (
        "model/prismatic.py", "logits = out.logits[:, -1].float()", "logits = out.logits[:, -1]")),
    ("image inputs halved in bfloat16 (a lost scale)", (
        "model/prismatic.py", "self.vision_backbone(pixel_values.to(weight.device, weight.dtype))",
        "self.vision_backbone((pixel_values * (0.5 if weight.dtype == torch.bfloat16 else 1.0)).to(weight.device, weight.dtype))")),
    ("LoRA adapter not merged in bfloat16", (
        "training/merge.py", "return PeftModel.from_pretrained(base, str(checkpoint / \"adapter\")).merge_and_unload()",
        "return base if dtype == torch.bfloat16 else PeftModel.from_pretrained(base, str(checkpoint / \"adapter\")).merge_and_unload()")),
]
BF16_CHECK = guard.test_the_eval_policy_call_in_bf16_chooses_the_same_ids_on_the_trained_checkpoint

CHECKS = {
    "replay": guard.test_a_memorised_demonstration_replays_to_success_closed_loop,
    "first image": guard.test_the_first_image_the_evaluation_gives_the_model_is_the_training_image_pixel_for_pixel,
    "first chunk": guard.test_the_first_query_executes_the_taught_chunk_exactly,
}


def patched_library(work: Path, edit: tuple[str, str, str] | None) -> Path:
    """A fresh `work` folder holding a copy of openvla_vq/ with one edit; returns the folder to put first on
    PYTHONPATH."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    root = work / "lib"
    shutil.copytree(REPO / "openvla_vq", root / "openvla_vq", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "tokenizers").symlink_to(REPO / "tokenizers")  # the registry's configs sit beside the package
    if edit is not None:
        file, text, replacement = edit
        path = root / "openvla_vq" / file
        source = path.read_text()
        if text not in source:
            sys.exit(f"error: {file} no longer contains {text!r}: update BREAKS or BF16_BREAKS in {Path(__file__).name}")
        path.write_text(source.replace(text, replacement, 1))
    return root


def run_break(memorised: Path, work: Path, edit, flags: list[str]) -> dict:
    lib = patched_library(work, edit)
    for name in ("data", "runs"):  # the memorised run, unchanged; only the evaluation is redone
        (work / name).symlink_to(memorised / name)
    checkpoint = memorised / "runs" / "guard" / "checkpoints" / "step_00001000"
    env = {**os.environ, "PYTHONPATH": str(lib), "LIBERO_CONFIG_PATH": str(work / "libero_config")}
    done = subprocess.run(
        [sys.executable, str(REPO / "eval" / "libero90.py"), "--checkpoint", str(checkpoint), "--tasks", str(guard.TASK),
         "--trials", "1", "--init_states_file", str(memorised / "data" / "libero_90_experts" / "1.0.0" / "init_states.npz"),
         "--max_steps", "200", "--out_dir", str(work / "eval"), "--assets_dir", str(guard.ASSETS), "--videos_per_task", "0",
         "--save_actions", "true", "--save_first_inputs", "true", *flags], capture_output=True, text=True, env=env,
        cwd=work)  # not the repository: `python -m` env workers put their working folder first on sys.path
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1]}
    row = {"success": json.loads((work / "eval" / "results.json").read_text())["tasks"][str(guard.TASK)]["successes"]}
    for name, check in CHECKS.items():
        try:
            check(work)
            row[name] = "passes"
        except AssertionError as e:
            row[name] = "**fails**: " + str(e).strip().splitlines()[0][:80]
    return row


def run_bf16_break(memorised: Path, work: Path, edit) -> str:
    """The guard's bfloat16 check, in a fresh process whose library has the edit."""
    lib = patched_library(work, edit)
    check = (f"import sys; from pathlib import Path; import test_learning_guard as g; "
             f"g.{BF16_CHECK.__name__}(Path(sys.argv[1]))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(lib), str(REPO / "tests")])}
    done = subprocess.run([sys.executable, "-c", check, str(memorised)], capture_output=True, text=True, env=env, cwd=work)
    if done.returncode == 0:
        return "passes"
    last = done.stderr.strip().splitlines()[-1]
    return ("**fails**: " if "AssertionError" in last else "error: ") + last.partition(": ")[2][:100]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", type=Path, nargs="?", default=Path("/tmp/guard"), help="pytest's --basetemp")
    parser.add_argument("--tables", default="eval,bf16", help="which breaks: eval (evaluation side), bf16 (bfloat16 path)")
    args = parser.parse_args()
    base, tables = args.base, args.tables.split(",")
    memorised = {json.loads((folder / "runs" / "guard" / "checkpoints" / "step_00001000" / "action_tokenizer.json").read_text())
                 ["spec"]: folder for folder in sorted(base.glob("guard*"))}
    if not memorised:
        sys.exit(f"error: no memorised guard runs under {base}: run pytest tests/test_learning_guard.py --basetemp={base}")
    if "eval" in tables:
        print("| tokenizer | evaluation-side mismatch | success | " + " | ".join(CHECKS) + " |")
        print("|---" * (3 + len(CHECKS)) + "|")
        for tokenizer, folder in memorised.items():
            for i, (name, edit, flags) in enumerate(BREAKS):
                row = run_break(folder, base / "breaks" / f"{tokenizer}-{i}", edit, flags)
                cells = [row["error"]] if "error" in row else [f"{row['success']}/1"] + [row[c] for c in CHECKS]
                print(f"| {tokenizer} | {name} | " + " | ".join(cells) + " |", flush=True)
    if "bf16" in tables:
        print("\n| tokenizer | bfloat16-path break | bfloat16 check |\n|---|---|---|")
        for tokenizer, folder in memorised.items():
            for i, (name, edit) in enumerate(BF16_BREAKS):
                outcome = run_bf16_break(folder, base / "bf16-breaks" / f"{tokenizer}-{i}", edit)
                print(f"| {tokenizer} | {name} | {outcome} |", flush=True)


if __name__ == "__main__":
    main()
