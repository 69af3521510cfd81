"""`make learn-libero`: expert demonstrations -> a small VLA trained from scratch per tokenizer -> closed-loop
LIBERO-90 success on the demonstrations' own starting states and on the protocol's fixed init states -> one report.

Stages (each recorded in <out>/stages/<stage>.json when done, so a rerun reuses it; an interrupted one resumes):
  1. a tiny random VLA in OpenVLA's checkpoint layout and code path (no pretrained weights reach us), trained from
     scratch: LoRA as OpenVLA plus the output layer (lm_head) in full;
  2. expert demonstrations from random resets (sim/make_libero_rlds.py, parallel, resumable);
  3. for `vq_m+l`: vq_m trained further on the demonstrations' actions (the paper's progressive "+L" stage);
  4. fine-tuning through finetune/lora.py, once per tokenizer (same data, model, steps and seed), each followed by
  5. its evaluation through eval/libero90.py: (a) trained states (init_states.npz of the demonstrations) and
     (b) protocol states (LIBERO's fixed init states, never trained on);
  6. diagnostics per tokenizer: reconstruction error of the tokenizer on the demonstrations' action chunks and the
     model's action-token accuracy / action L1 / gripper errors per task on the training frames (teacher forced),
     and whether its action follows the image (image_dependence);
  7. the report: results.json, report.md, training curves, success plot, a few MP4s.
`make demo` runs the same path with few tasks, demonstrations and steps. Besides the scale (--tasks,
--episodes_per_task, --steps), flags vary the model (--vit_width, --llm_width, --position_embedding; --num_images 2 adds
the wrist camera), what trains in full next to LoRA (--train_modules), which episodes fine-tuning reads (--train_split),
whether it augments the images as OpenVLA does (--image_aug), and whether the vision towers, or the whole model
(--pretrain_target vla), are first pretrained on labelled simulator frames from other placements
(--pretrain_vision_episodes: stages 1b and 1c).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # for annotations only; the functions that use torch import it themselves
    import torch

REPO = Path(__file__).resolve().parents[1]
DATASET = "libero_90_experts"


class Stages:
    """Named, resumable stages: fn() runs once and its result (plus wall time) is kept for reruns."""

    def __init__(self, out: Path, prefix: str = "learn") -> None:
        self.folder, self.prefix = out / "stages", prefix
        self.folder.mkdir(parents=True, exist_ok=True)

    def run(self, name: str, fn, key: str | None = None, folders: tuple[Path, ...] = (),
            still_valid: Callable[[dict], bool] | None = None) -> dict:
        """`key` says what the stage is built from (downstream keys include upstream ones): a stage recorded with
        another key is redone, its output `folders` removed first (runs and evaluations would otherwise resume). A stage
        interrupted before its record was written keeps its folders for a rerun with the same key (fine-tunes resume
        from their last checkpoint, evaluations from their finished episodes), else they are removed.
        `still_valid(record)`: for output that lives outside `out` and something else may rewrite (a dataset in a
        shared data root), checked before a record is reused; False redoes the stage."""
        from openvla_vq.io import write_json

        marker, started = self.folder / f"{name}.json", self.folder / f"{name}.started"
        if marker.is_file():
            record = json.loads(marker.read_text())
            if record.get("key") == key and (still_valid is None or still_valid(record)):
                print(f"[{self.prefix}] {name}: done earlier, reused", flush=True)
                return record
            print(f"[{self.prefix}] {name}: " + ("built from other inputs" if record.get("key") != key
                                                  else "its output changed on disk since") + ", redone", flush=True)
            marker.unlink()
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)
        resumed = started.is_file() and json.loads(started.read_text()).get("key") == key
        if resumed:
            print(f"[{self.prefix}] {name}: interrupted earlier, resumed", flush=True)
        elif started.is_file():  # what an interrupted stage left was built from other inputs
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)
        write_json(started, {"key": key})
        print(f"[{self.prefix}] {name} ...", flush=True)
        start = time.perf_counter()
        result = fn() or {}
        result["wall_s"] = round(time.perf_counter() - start, 1)
        result["key"] = key
        if resumed:
            result["resumed"] = True  # wall_s counts the resumed part only
        write_json(marker, result)
        started.unlink()
        print(f"[{self.prefix}] {name}: {result['wall_s']} s", flush=True)
        return result

    def times(self) -> dict[str, float]:
        return {p.stem: json.loads(p.read_text()).get("wall_s") for p in sorted(self.folder.glob("*.json"))}


def _run(cmd: list[str], env: dict | None = None) -> None:
    subprocess.run(cmd, cwd=REPO, check=True, env={**os.environ, **(env or {})})


def parse_args(argv: list[str] | None, defaults: dict | None = None) -> argparse.Namespace:
    from openvla_vq.sim.experts import EXPERT_TASKS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/learn-libero"))
    parser.add_argument("--report", type=Path, default=Path("reports/learn-libero"), help="where the report is written")
    parser.add_argument("--data_root_dir", type=Path, default=Path("data/rlds/learn-libero"))
    parser.add_argument("--assets_dir", default=str(REPO.parent / "shared" / "libero90-assets" / "assets"))
    parser.add_argument("--tasks", default="0,20,47,56", help=f"LIBERO-90 tasks with an expert: {EXPERT_TASKS}")
    parser.add_argument("--episodes_per_task", type=int, default=10, help="expert demonstrations per task")
    parser.add_argument("--tokenizers", default="binning,vq_m,vq_m+l")
    parser.add_argument("--vit_width", type=int, default=32, help="the tiny VLA's ViT embedding size (both towers)")
    parser.add_argument("--llm_width", type=int, default=64, help="the tiny VLA's Llama hidden size")
    parser.add_argument("--position_embedding", choices=("random", "sincos"), default="random",
                        help="the ViTs' (frozen under LoRA) position table: timm's random init or 2-D sin-cos")
    parser.add_argument("--num_images", type=int, choices=(1, 2), default=1,
                        help="2: the model also reads the wrist camera (OpenVLA-OFT's second image)")
    parser.add_argument("--action_noise", type=float, default=0.0,
                        help="DART noise on the experts' executed actions (make_libero_rlds.py's)")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=3e-3)
    # Not OpenVLA's schedule (no warm-up, no clipping): from scratch at 3e-3 the +L tokenizer's fine-tune diverged
    # without them (reports/vq-m-l-probes: token acc. 0.06 -> 0.32).
    parser.add_argument("--warmup_steps", type=int, default=200,
                        help="linear learning-rate warm-up (finetune/lora.py's; 0: none, OpenVLA's)")
    parser.add_argument("--max_grad_norm", type=float, default=1.0, help="gradient clipping (0: none, OpenVLA's)")
    parser.add_argument("--train_modules", default="lm_head",
                        help="trained in full next to LoRA (from scratch, the output layer must learn), "
                             "e.g. lm_head,patch_embed")
    parser.add_argument("--image_aug", choices=("true", "false"), default="false",
                        help="OpenVLA's training augmentation (0.9-area random crop, colour jitter; the evaluation then "
                             "centre-crops): off by default, as in the committed report")
    parser.add_argument("--pretrain_vision_episodes", type=int, default=0,
                        help="per task, expert episodes (other placements than the demonstrations', with noise) whose "
                             "labelled frames pretrain the model before fine-tuning (sim/scene_frames.py, "
                             "--pretrain_target); 0: from scratch, as in the committed report")
    parser.add_argument("--pretrain_vision_steps", type=int, default=2000)
    parser.add_argument("--pretrain_target", choices=("towers", "vla"), default="towers",
                        help="what the labelled frames pretrain: towers = the vision towers and projector through "
                             "linear heads (training/pretrain_vision.py); vla = the whole model, answering where the "
                             "waypoints are in action-token bins (training/pretrain_vla.py)")
    parser.add_argument("--cotrain_batch_size", type=int, default=0,
                        help="with --pretrain_target vla: each fine-tuning step also asks the pretraining's question on "
                             "this many scene frames (finetune/lora.py --cotrain_frames), so that the fine-tune keeps "
                             "the answer; 0: none")
    parser.add_argument("--tokenizer_steps", type=int, default=500, help="+L stage steps")
    parser.add_argument("--train_split", choices=("train", "all"), default="train",
                        help="episodes fine-tuning reads: train = OpenVLA's first 95%%, all = every demonstration")
    parser.add_argument("--trained_trials", type=int, default=3,
                        help="per task, from its first demonstrations' starting states (all of them trained on)")
    parser.add_argument("--protocol_trials", type=int, default=4, help="per task, LIBERO's fixed init states 0..n-1")
    parser.add_argument("--eval_max_steps", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--videos", type=int, default=4, help="MP4s copied into the report")
    parser.set_defaults(**(defaults or {}))
    return parser.parse_args(argv)


def check_trained_trials(args: argparse.Namespace) -> None:
    """Trained-state trials replay each task's first demonstrations: with OpenVLA's split, fine-tuning never sees
    the dataset's last episodes (the last task's), so those must not be counted as trained."""
    from openvla_vq.data.rlds_dataset import held_out_episodes

    total = len(args.tasks.split(",")) * args.episodes_per_task
    held = held_out_episodes(total) if args.train_split == "train" else 0
    if args.trained_trials > args.episodes_per_task - held:
        raise SystemExit(f"error: --trained_trials {args.trained_trials} would replay demonstrations fine-tuning never "
                         f"reads (--train_split train holds out the last {held} of {total}): pass --trained_trials "
                         f"{max(0, args.episodes_per_task - held)} or fewer, or --train_split all")


def main(argv: list[str] | None = None, defaults: dict | None = None, prefix: str = "learn") -> dict:
    args = parse_args(argv, defaults)
    check_trained_trials(args)
    from openvla_vq.sim.make_libero_rlds import check_action_noise, expert_version
    from openvla_vq.training.pretrain_vision import HELD_OUT_EPISODES

    check_action_noise(args.action_noise)
    if args.pretrain_vision_episodes and not args.pretrain_vision_episodes > HELD_OUT_EPISODES:
        raise SystemExit(f"error: --pretrain_vision_episodes {args.pretrain_vision_episodes}: pretraining holds out "
                         f"{HELD_OUT_EPISODES} episodes per task for its report; pass more (e.g. 50) or 0 for none")
    if args.cotrain_batch_size and not (args.pretrain_vision_episodes and args.pretrain_target == "vla"):
        raise SystemExit(f"error: --cotrain_batch_size {args.cotrain_batch_size} asks the VLA pretraining's question: "
                         f"pass --pretrain_vision_episodes 50 --pretrain_target vla too, or --cotrain_batch_size 0")
    out, data = args.out.resolve(), args.data_root_dir.resolve()
    stages, py = Stages(out, prefix), sys.executable
    libero_env = {"LIBERO_CONFIG_PATH": str(out / "libero_config")}
    tokenizers = args.tokenizers.split(",")
    dataset_folder = data / DATASET / "1.0.0"

    def tiny_vla() -> dict:
        from openvla_vq.model.tiny import write_tiny_checkpoint

        return {"folder": str(write_tiny_checkpoint(out / "vla", vit_width=args.vit_width, llm_width=args.llm_width,
                                                    num_images=args.num_images, position_embedding=args.position_embedding))}

    def scene_frames() -> dict:
        _run([py, "-m", "openvla_vq.sim.scene_frames", "--out", str(out / "scene_frames"), "--tasks", args.tasks,
              "--episodes_per_task", str(args.pretrain_vision_episodes), "--workers", str(args.workers),
              "--assets_dir", args.assets_dir], env=libero_env)
        return {"folder": str(out / "scene_frames")}

    def pretrained_vla() -> dict:
        module = {"towers": "pretrain_vision", "vla": "pretrain_vla"}[args.pretrain_target]
        _run([py, "-m", f"openvla_vq.training.{module}", "--vla", str(out / "vla"), "--frames",
              str(out / "scene_frames"), "--out", str(out / "vla-pretrained"), "--steps", str(args.pretrain_vision_steps)])
        return {"folder": str(out / "vla-pretrained"),
                "held_out": json.loads((out / "vla-pretrained" / "pretrain_report.json").read_text())["held_out"]}

    def demonstrations() -> dict:
        _run([py, "-m", "openvla_vq.sim.make_libero_rlds", "--out", str(data), "--tasks", args.tasks, "--episodes_per_task",
              str(args.episodes_per_task), "--workers", str(args.workers), "--assets_dir", args.assets_dir,
              "--action_noise", str(args.action_noise)], env=libero_env)
        experts = json.loads((dataset_folder / "generation_report.json").read_text())["experts"]
        return {**experts, "dataset_digest": rlds_digest(dataset_folder)}

    def plus_l() -> dict:  # vq_m trained further on the demonstrations (VQ-VLA's progressive "+L" stage)
        from openvla_vq.action_tokenizers import load_action_tokenizer

        folder = out / "tokenizers" / "vq_m+l"
        _run([py, "tokenizers/train.py", "--mixture", "m+l", "--name", "vq_m+l", "--init_from", "vq_m", "--data_root_dir",
              str(data), "--out", str(folder), "--run_root_dir", str(out / "tokenizer_runs"), "--steps_per_stage",
              str(args.tokenizer_steps), "--batch_size", "256", "--learning_rate", "1e-4", "--min_learning_rate", "1e-5",
              "--shuffle_buffer_size", "20000", "--save_steps", str(args.tokenizer_steps)] + vq_m_architecture())
        return {"folder": str(folder), "fingerprint": load_action_tokenizer(str(folder)).fingerprint()}

    def finetune(tok: str) -> dict:
        from openvla_vq.training.checkpoint import latest_checkpoint

        run_dir = out / "runs" / tok  # checkpoints every 1,000 steps: an interrupted fine-tune resumes from the last
        resume = latest_checkpoint(run_dir) is not None
        _run([py, "finetune/lora.py", "--vla_path", str(vla_folder), "--data_root_dir", str(data), "--dataset_name", DATASET,
              "--tokenizer", tokenizer_spec(tok), "--run_root_dir", str(out / "runs"), "--run_id", tok,
              "--batch_size", str(args.batch_size), "--max_steps", str(args.steps), "--save_steps", str(min(args.steps, 1000)),
              "--log_steps", "50", "--learning_rate", str(args.learning_rate), "--shuffle_buffer_size", "20000",
              # from scratch: the output layer must learn too, and a decaying rate lets the memorisation settle
              "--image_aug", args.image_aug, "--train_modules", args.train_modules, "--lr_schedule", "cosine",
              "--train_split", args.train_split, "--warmup_steps", str(args.warmup_steps),
              "--max_grad_norm", str(args.max_grad_norm), "--resume", str(resume).lower()]
             + (["--cotrain_frames", str(out / "scene_frames"), "--cotrain_batch_size", str(args.cotrain_batch_size)]
                if args.cotrain_batch_size else []))
        return {"checkpoint": str(run_dir / "checkpoints" / f"step_{args.steps:08d}")}

    def evaluate(tok: str, which: str) -> dict:
        trials = args.trained_trials if which == "trained" else args.protocol_trials
        cmd = [py, "eval/libero90.py", "--checkpoint", runs[tok]["checkpoint"], "--tasks", args.tasks, "--trials", str(trials),
               "--max_steps", str(args.eval_max_steps), "--out_dir", str(out / "eval" / f"{tok}-{which}"),
               "--assets_dir", args.assets_dir, "--envs_per_process", "2", "--videos_per_task", "1",
               "--save_actions", "true"]  # kept to find where replays leave their demonstration, and how episodes fail
        if which == "trained":
            cmd += ["--init_states_file", str(dataset_folder / "init_states.npz")]
        _run(cmd, env=libero_env)
        return {"results": str(out / "eval" / f"{tok}-{which}" / "results.json")}

    def tokenizer_spec(tok: str) -> str:
        return str(out / "tokenizers" / "vq_m+l") if tok == "vq_m+l" else tok

    from openvla_vq.action_tokenizers import load_action_tokenizer
    from openvla_vq.evaluation.learning_report import write_learning_report

    vla = stages.run("1_vla", tiny_vla, key=f"tiny-vit{args.vit_width}-llm{args.llm_width}-images{args.num_images}"
                                            + ("-sincos" if args.position_embedding == "sincos" else ""),
                     folders=(out / "vla",))
    if args.pretrain_vision_episodes:
        # frames-2: the recorder keeps each episode's instruction
        frames_key = f"{args.tasks}x{args.pretrain_vision_episodes}/experts-{expert_version()}/frames-2"
        stages.run("1b_scene_frames", scene_frames, key=frames_key, folders=(out / "scene_frames",))
        vla = stages.run("1c_pretrain_vision", pretrained_vla, key=f"{vla['key']}/frames-{frames_key}/"
                         f"{args.pretrain_vision_steps}" + ("/vla" if args.pretrain_target == "vla" else ""),
                         folders=(out / "vla-pretrained",))
    vla_folder = out / ("vla-pretrained" if args.pretrain_vision_episodes else "vla")
    # the dataset lies in a data root other runs may share (another --tasks rewrites it): reused only while the
    # episodes on disk are still the ones recorded, since every later key is built from their digest
    experts = stages.run("2_demonstrations", demonstrations,
                         key=f"{args.tasks}x{args.episodes_per_task}/experts-{expert_version()}"
                             + (f"/noise{args.action_noise:g}" if args.action_noise else ""),
                         still_valid=lambda record: dataset_folder.is_dir()
                         and record.get("dataset_digest") == rlds_digest(dataset_folder))
    data_key = f"{vla['key']}/{args.tasks}x{args.episodes_per_task}/data-{experts['dataset_digest']}"
    if "vq_m+l" in tokenizers:
        stages.run("3_tokenizer_vq_m+l", plus_l, key=f"{data_key}/{args.tokenizer_steps}",
                   folders=(out / "tokenizers" / "vq_m+l", out / "tokenizer_runs" / "vq_m+l"))
    runs, keys = {}, {}
    for tok in tokenizers:
        keys[tok] = f"{data_key}/{load_action_tokenizer(tokenizer_spec(tok)).fingerprint()}/{args.steps}x{args.batch_size}" \
                    f"@{args.learning_rate}/{args.train_modules}/{args.train_split}" \
                    + (f"/warmup{args.warmup_steps}/clip{args.max_grad_norm}" if args.warmup_steps or args.max_grad_norm else "")
        keys[tok] += "/image_aug" if args.image_aug == "true" else ""
        keys[tok] += f"/cotrain{args.cotrain_batch_size}" if args.cotrain_batch_size else ""
        runs[tok] = stages.run(f"4_finetune_{tok}", lambda tok=tok: finetune(tok), key=keys[tok], folders=(out / "runs" / tok,))
        for which in ("trained", "protocol"):
            stages.run(f"5_eval_{tok}_{which}", lambda tok=tok, which=which: evaluate(tok, which),
                       key=f"{keys[tok]}/{args.trained_trials}/{args.protocol_trials}/{args.eval_max_steps}"
                           + ("/actions" if which == "trained" else ""),
                       folders=(out / "eval" / f"{tok}-{which}",))
    diagnostics = {tok: stages.run(f"6_diagnostics_{tok}", lambda tok=tok: diagnose(Path(runs[tok]["checkpoint"]), data),
                                   key=keys[tok]) for tok in tokenizers}
    for tok in tokenizers:
        diagnostics[tok] = {**diagnostics[tok], "replays": replays(out / "eval" / f"{tok}-trained", data)}
    return write_learning_report(args.report, out, tokenizers, experts, diagnostics, stages.times(), args.videos)


def rlds_digest(folder: Path) -> str:
    """What training reads, so that identical episodes keep later stages valid. Over the parsed records: the bytes
    tfds writes differ between two writes of the same episodes (protobuf serializes a feature map in any order)."""
    import hashlib

    from openvla_vq.data.tf_env import tf

    digest = hashlib.sha256()
    for record in sorted(folder.glob("*.tfrecord*")):
        for raw in tf.data.TFRecordDataset(str(record)).as_numpy_iterator():
            digest.update(tf.train.Example.FromString(raw).SerializeToString(deterministic=True))
    return digest.hexdigest()[:12]


def vq_m_architecture() -> list[str]:
    """The shipped vq_m's architecture flags (its config.json), so +L continues the same network."""
    from openvla_vq.action_tokenizers.registry import tokenizers_dir

    cfg = json.loads((tokenizers_dir() / "vq_m.json").read_text())["tokenizer"]
    return ["--block_out_channels", json.dumps(cfg["block_out_channels"]), "--layers_per_block", str(cfg["layers_per_block"]),
            "--norm_groups", str(cfg["norm_groups"]), "--latent_dim", str(cfg["latent_dim"]),
            "--codebook_update", cfg["codebook_update"], "--ema_decay", str(cfg["ema_decay"])]


def replays(eval_dir: Path, data_root: Path) -> list[dict]:
    """Per trained-state episode: how long closed loop followed its own demonstration (see `followed_steps`)."""
    import numpy as np

    from openvla_vq.evaluation.learning_report import followed_steps
    from openvla_vq.evaluation.records import read_records
    from openvla_vq.sim.make_libero_rlds import work_dir

    generation = json.loads((data_root / DATASET / "1.0.0" / "generation_report.json").read_text())
    work = work_dir(data_root, DATASET, generation.get("action_noise", 0.0), generation["expert_version"])
    demos: dict[int, list[np.ndarray]] = {}  # actions per task in dataset order, as init_states.npz and the eval's trials
    for row in generation["attempts"]:
        if row["success"]:
            with np.load(work / row["file"]) as z:
                demos.setdefault(row["task_index"], []).append(z["actions"])
    rows = []
    for record in sorted(read_records(eval_dir / "episodes"), key=lambda r: (r["task"], r["trial"])):
        executed = np.load(eval_dir / "actions" / f"task{record['task']:02d}_trial{record['trial']:02d}.npy")
        task_demos = demos[record["task"]]
        demo, others = task_demos[record["trial"]], task_demos[:record["trial"]] + task_demos[record["trial"] + 1:]
        rows.append({"task": record["task"], "trial": record["trial"], "success": record["success"],
                     **followed_steps(executed, demo, others)})
    return rows


def diagnose(checkpoint: Path, data_root: Path, max_frames: int = 512) -> dict:
    """Tokenizer round-trip error on the demonstrations' action chunks, and the trained model's greedy (constrained)
    action-token accuracy and action L1 on training frames (all in normalized action space)."""
    import numpy as np
    import torch

    from openvla_vq.data.rlds_dataset import RLDSChunkDataset
    from openvla_vq.policy import load_policy

    policy, info = load_policy(checkpoint)
    images_of = eval_images(info["image_aug"])
    tok = policy.action_tokenizer
    frames = RLDSChunkDataset(data_root, DATASET, chunk_len=tok.chunk_len, split="all", train=False,
                              wrist_images=policy.num_images > 1)
    total = frames.statistics["num_transitions"]  # every frame of the dataset, known before one is read
    # runs of 16 consecutive frames spread over every task's demonstrations (neighbours stay consecutive steps);
    # only those frames are kept, so memory stays bounded however large the dataset
    starts = range(0, total, max(16, total // (max_frames // 16)))
    wanted = {i for start in starts for i in range(start, min(start + 16, total))}
    by_index = dependence_frames(data_root)
    samples, picked = [], {}  # one pass over the dataset for both diagnostics
    for i, frame in enumerate(frames):
        if i in wanted and len(samples) < max_frames:
            samples.append(frame)
        if i in by_index:
            picked[by_index[i]] = frame
    actions = torch.tensor(np.stack([s["actions"] for s in samples]), dtype=torch.float32)
    ids = tok.encode(actions)
    recon = tok.decode(ids)
    predicted_ids = []
    for i in range(0, len(samples), 32):
        block = samples[i:i + 32]
        predicted = policy.predict_ids([images_of(s) for s in block], [s["instruction"] for s in block]).cpu()
        predicted_ids.append(predicted)
    predicted = torch.cat([torch.nn.functional.pad(p, (0, ids.shape[1] - p.shape[1]), value=tok.end_id or 0)
                           for p in predicted_ids])  # generation stops early once every row of a block has ended
    lengths = torch.tensor([len(row) for row in tok.token_rows(ids)])
    inside = torch.arange(ids.shape[1])[None] < lengths[:, None]  # each gold sequence, its end marker included
    accuracy = (predicted == ids)[inside].float().mean().item()
    l1 = (tok.decode(predicted) - actions).abs().mean().item()
    per_dim = (recon - actions).abs().mean(dim=(0, 1))
    return {"frames": len(samples), "tokenizer_recon_l1": float((recon - actions).abs().mean()),
            "tokenizer_recon_l1_per_dim": [round(float(x), 5) for x in per_dim],
            "greedy_token_accuracy": accuracy, "predicted_action_l1": l1, **token_predictability(ids, inside),
            "gripper_errors": gripper_errors(tok.decode(predicted)[:, 0, -1], actions[:, 0, -1],
                                             [s["instruction"] for s in samples]),
            "image_dependence": image_dependence(policy, picked, images_of)}


def eval_images(centre_crop: bool) -> Callable[[dict], tuple]:
    """A dataset frame's images as the evaluation gives them to the model: a checkpoint trained with augmentation
    sees the 0.9-area centre crop (data/preprocess.py), one trained without sees the frame as it is."""
    from openvla_vq.data.collator import sample_images

    if not centre_crop:
        return sample_images
    from openvla_vq.data.images import center_crop
    from openvla_vq.data.tf_env import tf

    return lambda sample: tuple(center_crop(tf.convert_to_tensor(image)).numpy() for image in sample_images(sample))


def dependence_frames(data_root: Path, steps: tuple[int, ...] = (0, 10, 20)) -> dict[int, tuple[int, str, int]]:
    """Dataset frame index -> (task, episode file, step) for steps k of every demonstration (image_dependence's frames)."""
    generation = json.loads((data_root / DATASET / "1.0.0" / "generation_report.json").read_text())
    rows = {row["file"]: row for row in generation["attempts"]}
    index, start = {}, 0  # episodes lie in the dataset in dataset_episodes' order
    for file in generation["dataset_episodes"]:
        index.update({start + k: (rows[file]["task_index"], file, k) for k in steps if k < rows[file]["steps"]})
        start += rows[file]["steps"]
    return index


def image_dependence(policy, picked: dict[tuple[int, str, int], dict], images_of: Callable[[dict], tuple]) -> dict[str, dict]:
    """Per task: does the trained model act on where things are? At steps k of every demonstration (`picked`, from
    dependence_frames), the model sees frame k once with its own image and once with the image of the task's next
    demonstration at step k (same instruction, other placement). First action of the chunk, arm dimensions,
    normalized units, means over frames: `demos_differ` |a_i - a_j| (what the image must tell apart), `own_error`
    |pred(own image) - a_i|, `swap_changes` |pred(own image) - pred(other image)|. A model that reads the scene
    changes its action about as much as the demonstrations differ; one that acts by phase alone hardly changes it."""
    import numpy as np
    import torch

    tok = policy.action_tokenizer
    steps = sorted({k for _, _, k in picked})
    result = {}
    for task in sorted({t for t, _, _ in picked}):
        episodes = list(dict.fromkeys(f for t, f, _ in picked if t == task))
        pairs = [(picked[task, e, k], picked[task, o, k]) for e, o in zip(episodes, episodes[1:] + episodes[:1])
                 for k in steps if e != o and (task, e, k) in picked and (task, o, k) in picked]
        if not pairs:
            continue
        own, other = ([pair[i] for pair in pairs] for i in (0, 1))
        texts = [s["instruction"] for s in own]

        def act(images):
            return tok.decode(policy.predict_ids(images, texts).cpu())[:, 0, :6]

        with_own, with_other = act([images_of(s) for s in own]), act([images_of(s) for s in other])
        gold = (torch.from_numpy(np.stack([s["actions"][0, :6] for s in own])),
                torch.from_numpy(np.stack([s["actions"][0, :6] for s in other])))
        result[texts[0]] = {"frames": len(pairs), "demos_differ": float((gold[0] - gold[1]).abs().mean()),
                            "own_error": float((with_own - gold[0]).abs().mean()),
                            "swap_changes": float((with_own - with_other).abs().mean())}
    return result


def gripper_errors(predicted: torch.Tensor, gold: torch.Tensor, instructions: list[str]) -> dict[str, float]:
    """Per instruction, the share of training frames whose predicted gripper command (first action of the chunk) is
    the other state than the demonstration's: a policy that mistakes one phase for another (an open hand going
    down for a closed hand going up) shows here, teacher-forced, before any rollout."""
    middle = (gold.min() + gold.max()) / 2  # gripper targets are binary (OpenVLA's normalization leaves them be)
    wrong = ((predicted > middle) != (gold > middle)).float()
    return {text: round(float(wrong[[i for i, t in enumerate(instructions) if t == text]].mean()), 3)
            for text in sorted(set(instructions))}


def token_predictability(ids: torch.Tensor, inside: torch.Tensor) -> dict:
    """How hard the gold tokens are to predict from frames that look alike: the entropy of each token position over
    the frames (bits, averaged over positions) and how often a frame's token equals the next frame's at the same
    position (frames in dataset order, so neighbours are consecutive steps of one demonstration)."""
    import numpy as np

    entropies = []
    for position in range(ids.shape[1]):
        _, counts = np.unique(ids[inside[:, position], position].numpy(), return_counts=True)
        if not len(counts):  # past every sequence's end
            continue
        p = counts / counts.sum()
        entropies.append(float(-(p * np.log2(p)).sum()))
    both = inside[1:] & inside[:-1]
    same = (ids[1:] == ids[:-1])[both].float().mean().item()
    return {"token_entropy_bits": float(np.mean(entropies)), "same_token_as_next_frame": same}


if __name__ == "__main__":
    main()
