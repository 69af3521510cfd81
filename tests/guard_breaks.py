"""Break the evaluation side once per train/eval mismatch and show which learning-guard check catches it.

    .venv/bin/python -m pytest tests/test_learning_guard.py --basetemp=/tmp/guard   # memorises, keeps the folders
    .venv/bin/python tests/guard_breaks.py /tmp/guard

For each mismatch, a patched copy of the library (one edit, evaluation side only; training data and checkpoint
stay) replays the memorised demonstration through eval/libero90.py, then the guard's checks
(tests/test_learning_guard.py) run on that evaluation. Prints a markdown table; the README's is this output.
"""

from __future__ import annotations

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
    ("no JPEG round trip", ("evaluation/preprocess.py",
                            "tf.io.decode_image(tf.io.encode_jpeg(tf.convert_to_tensor(image)), expand_animations=False, channels=3)",
                            "tf.convert_to_tensor(image)"), []),
    ("bilinear instead of lanczos resize", ("evaluation/preprocess.py", "x = resize_uint8(x, size)",
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

CHECKS = {
    "replay": guard.test_a_memorised_demonstration_replays_to_success_closed_loop,
    "first image": guard.test_the_first_image_the_evaluation_gives_the_model_is_the_training_image_pixel_for_pixel,
    "first chunk": guard.test_the_first_query_executes_the_taught_chunk_exactly,
}


def patched_library(work: Path, edit: tuple[str, str, str] | None) -> Path:
    """A copy of openvla_vq/ with one edit; returns the folder to put first on PYTHONPATH."""
    root = work / "lib"
    shutil.copytree(REPO / "openvla_vq", root / "openvla_vq", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "tokenizers").symlink_to(REPO / "tokenizers")  # the registry's configs sit beside the package
    if edit is not None:
        file, text, replacement = edit
        path = root / "openvla_vq" / file
        source = path.read_text()
        if text not in source:
            sys.exit(f"error: {file} no longer contains {text!r}: update BREAKS in {Path(__file__).name}")
        path.write_text(source.replace(text, replacement, 1))
    return root


def run_break(memorised: Path, work: Path, edit, flags: list[str]) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
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


def main() -> None:
    base = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/guard")
    memorised = {json.loads((folder / "runs" / "guard" / "checkpoints" / "step_00001000" / "action_tokenizer.json").read_text())
                 ["spec"]: folder for folder in sorted(base.glob("guard*"))}
    if not memorised:
        sys.exit(f"error: no memorised guard runs under {base}: run pytest tests/test_learning_guard.py --basetemp={base}")
    print("| tokenizer | evaluation-side mismatch | success | " + " | ".join(CHECKS) + " |")
    print("|---" * (3 + len(CHECKS)) + "|")
    for tokenizer, folder in memorised.items():
        for i, (name, edit, flags) in enumerate(BREAKS):
            row = run_break(folder, base / "breaks" / f"{tokenizer}-{i}", edit, flags)
            cells = [row["error"]] if "error" in row else [f"{row['success']}/1"] + [row[c] for c in CHECKS]
            print(f"| {tokenizer} | {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
