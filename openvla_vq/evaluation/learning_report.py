"""The `make learn-libero` report: expert success, closed-loop success per tokenizer on trained and protocol
states (per task, Wilson intervals), actions/s, tokens per action, training curves, diagnostics, a few MP4s."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from openvla_vq.evaluation.report import wilson_error_bars, wilson_interval
from openvla_vq.io import atomic_file, save_figure, write_json

STATE_SETS = {"trained": "trained_states", "protocol": "protocol_states"}


def training_curve(run_dir: Path) -> dict[str, list]:
    """Scalars logged by finetune/lora.py (tensorboard event files), tag -> [[step, value], ...]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curves: dict[str, list] = {}
    for events in sorted(run_dir.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            curves.setdefault(tag, []).extend([[e.step, round(e.value, 5)] for e in acc.Scalars(tag)])
    return {tag: sorted(points) for tag, points in curves.items()}


def _counts(summary: dict) -> dict:
    return {"episodes": summary["episodes"], "successes": summary["successes"],
            "wilson95": [round(x, 4) for x in wilson_interval(summary["successes"], summary["episodes"])]}


REPLAY_TOLERANCE = 0.1  # per arm dimension, in LIBERO's action units (1.0 = 5 cm or 0.5 rad per step)


def _matches(action: np.ndarray, demonstrated: np.ndarray, tolerance: float) -> np.ndarray:
    """Which rows of `action` are the demonstrated ones: every arm dimension within `tolerance`, the same gripper sign."""
    return (np.abs(action[..., :6] - demonstrated[..., :6]).max(axis=-1) <= tolerance) & \
        (np.sign(action[..., 6]) == np.sign(demonstrated[..., 6]))


def followed_steps(executed: np.ndarray, demo: np.ndarray, others: list[np.ndarray] = (),
                   tolerance: float = REPLAY_TOLERANCE) -> dict:
    """How long a closed-loop episode from a demonstration's own start kept doing what the demonstration did: steps
    until an executed action first differs from the demonstrated one at the same step (an arm dimension by more than
    `tolerance`, or the gripper's sign), out of the demonstration's length; whether the demonstration's gripper was
    closed there (pick-and-place: before the grasp, or while carrying); and whether the action taken there is what
    one of the `others` (the task's other demonstrations) did at that step: a policy that cannot tell its starts
    apart replays the wrong demonstration."""
    steps = min(len(executed), len(demo))
    parted = np.flatnonzero(~_matches(executed[:steps], demo[:steps], tolerance))
    followed = int(parted[0]) if len(parted) else steps
    onto_other = followed < steps and any(followed < len(o) and _matches(executed[followed], o[followed], tolerance)
                                          for o in others)
    return {"followed": followed, "demo_steps": int(len(demo)),
            "demo_gripper_closed_there": bool(demo[min(followed, len(demo) - 1), 6] > 0),
            "onto_other_demonstration": bool(onto_other)}


def write_learning_report(report: Path, out: Path, tokenizers: list[str], experts: dict, diagnostics: dict,
                          stage_times: dict, videos: int = 4) -> dict:
    report.mkdir(parents=True, exist_ok=True)
    runs, curves = {}, {}
    for tok in tokenizers:
        run = {}
        for which, key in STATE_SETS.items():
            results = json.loads((out / "eval" / f"{tok}-{which}" / "results.json").read_text())
            run[key] = {**_counts(results["overall"]), "actions_per_s": round(results["overall"]["actions_per_s"], 2),
                        "tasks": {t: _counts(v) for t, v in results["tasks"].items()}}
            run["tokens_per_action"] = results["tokenizer"]["tokens_per_action"]
        run["diagnostics"] = {k: v for k, v in diagnostics[tok].items() if k not in ("wall_s", "key")}
        runs[tok] = run
        curves[tok] = training_curve(out / "runs" / tok)
    results = {"experts": {t: {"attempts": v["attempts"], "successes": v["successes"]} for t, v in experts.items()
                           if isinstance(v, dict)},
               "runs": runs, "stage_wall_s": stage_times}
    write_json(report / "results.json", results)
    write_json(report / "training_curves.json", curves)
    _plot_curves(report / "training_curves.png", curves)
    _plot_success(report / "success.png", runs)
    _copy_videos(report / "videos", out, tokenizers, videos)
    text = _markdown(results)
    with atomic_file(report / "report.md") as f:
        f.write(text)
    print(text)
    return results


def _markdown(results: dict) -> str:
    lines = ["# make learn-libero", "", "## Experts (random resets, LIBERO-90 asset pack)", "",
             "| task | attempts | successes |", "|---|---|---|"]
    lines += [f"| {t} | {v['attempts']} | {v['successes']} |" for t, v in results["experts"].items()]
    lines += ["", "## Closed-loop success", "",
              "| tokenizer | trained states | protocol states | actions/s | tokens/action | token acc. (train frames) | "
              "tokenizer recon. L1 |", "|---|---|---|---|---|---|---|"]
    for tok, run in results["runs"].items():
        cells = []
        for key in STATE_SETS.values():
            s = run[key]
            cells.append(f"{s['successes']}/{s['episodes']} [{s['wilson95'][0]:.2f}, {s['wilson95'][1]:.2f}]")
        d = run["diagnostics"]
        lines.append(f"| {tok} | {cells[0]} | {cells[1]} | {run['trained_states']['actions_per_s']:.1f} | "
                     f"{run['tokens_per_action']:.2f} | {d['greedy_token_accuracy']:.3f} | {d['tokenizer_recon_l1']:.4f} |")
    lines += ["", "## How predictable the tokens are (the demonstrations' chunks)", "",
              "A model that sees nearly the same image at consecutive steps learns tokens that stay put between them; "
              "tokens spread over many codes that change from step to step are harder to learn from few frames.", "",
              "| tokenizer | entropy per token position (bits) | same token as the next frame |", "|---|---|---|"]
    for tok, run in results["runs"].items():
        d = run["diagnostics"]
        if "token_entropy_bits" in d:
            lines.append(f"| {tok} | {d['token_entropy_bits']:.2f} | {d['same_token_as_next_frame']:.2f} |")
    errors = {tok: run["diagnostics"].get("gripper_errors", {}) for tok, run in results["runs"].items()}
    instructions = sorted({text for per_tok in errors.values() for text in per_tok})
    if instructions:
        lines += ["", "## Gripper command wrong on training frames (teacher-forced, share of frames)", "",
                  "A phase mistaken for another (an open hand going down for a closed hand going up) shows here "
                  "before any rollout.", "", "| tokenizer | " + " | ".join(instructions) + " |",
                  "|---|" + "---|" * len(instructions)]
        lines += [f"| {tok} | " + " | ".join(f"{per_tok[t]:.3f}" if t in per_tok else "-" for t in instructions) + " |"
                  for tok, per_tok in errors.items()]
    dependence = {tok: run["diagnostics"].get("image_dependence", {}) for tok, run in results["runs"].items()}
    if any(dependence.values()):
        lines += ["", "## Does the action follow the image? (training frames, first action, arm dims, normalized)", "",
                  "Each demonstration's frames at steps 0, 10, 20 with its own image and with another demonstration's "
                  "image at that step (same task): how much the demonstrations' actions differ there, the prediction's "
                  "error with its own image, and how much the prediction changes when the image is swapped.", "",
                  "| tokenizer | task | frames | demonstrations differ | error, own image | change, swapped image |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {tok} | {task} | {d['frames']} | {d['demos_differ']:.3f} | {d['own_error']:.3f} | "
                  f"{d['swap_changes']:.3f} |" for tok, per_task in dependence.items() for task, d in per_task.items()]
    lines += ["", "## Per task (successes / episodes)", "",
              "| tokenizer | states | " + " | ".join(next(iter(results["runs"].values()))["trained_states"]["tasks"]) + " |",
              "|---|---|" + "---|" * len(next(iter(results["runs"].values()))["trained_states"]["tasks"])]
    for tok, run in results["runs"].items():
        for key in STATE_SETS.values():
            lines.append(f"| {tok} | {key} | " + " | ".join(f"{v['successes']}/{v['episodes']}" for v in run[key]["tasks"].values())
                         + " |")
    lines += ["", "## Where replays leave their demonstration (trained states)", "",
              f"Steps until an executed action first differs from the demonstration's at the same step (an arm dimension "
              f"by more than {REPLAY_TOLERANCE}, or the gripper's sign), as a share of the demonstration's length.", "",
              "| tokenizer | successes: median share followed | failures: median share followed | failures parting with "
              "the demonstration's gripper open / closed | failures parting onto another demonstration of the task (its "
              "action at that step) |", "|---|---|---|---|---|"]
    for tok, run in results["runs"].items():
        replays = run["diagnostics"].get("replays", [])
        shares = {ok: [r["followed"] / r["demo_steps"] for r in replays if r["success"] == ok] for ok in (True, False)}
        failed = [r for r in replays if not r["success"]]
        closed = sum(r["demo_gripper_closed_there"] for r in failed)
        cells = [f"{np.median(v):.2f} ({len(v)})" if v else "-" for v in (shares[True], shares[False])]
        onto_other = sum(r.get("onto_other_demonstration", False) for r in failed)
        lines.append(f"| {tok} | {cells[0]} | {cells[1]} | {len(failed) - closed} / {closed} | {onto_other} / {len(failed)} |")
    lines += ["", "## Stage wall time (s)", ""] + [f"- {k}: {v}" for k, v in results["stage_wall_s"].items()]
    return "\n".join(lines) + "\n"


def _plot_curves(path: Path, curves: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tags = ["train_loss", "action_accuracy", "l1_loss"]
    fig, axes = plt.subplots(1, len(tags), figsize=(4 * len(tags), 3))
    for ax, tag in zip(axes, tags):
        for tok, c in curves.items():
            if tag in c:
                ax.plot([p[0] for p in c[tag]], [p[1] for p in c[tag]], label=tok)
        ax.set_title(tag, fontsize=9)
        ax.set_xlabel("step")
    axes[0].legend(fontsize=7)
    save_figure(fig, path, dpi=110)


def _plot_success(path: Path, runs: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    width = 0.8 / max(1, len(runs))
    for i, (tok, run) in enumerate(runs.items()):
        keys = list(STATE_SETS.values())
        rates = np.array([run[k]["successes"] / max(1, run[k]["episodes"]) for k in keys])
        ax.bar(np.arange(len(keys)) + i * width, rates, width, yerr=wilson_error_bars(rates, [run[k]["wilson95"] for k in keys]),
               capsize=3, label=tok)
    ax.set_xticks(np.arange(len(STATE_SETS)) + width * (len(runs) - 1) / 2, list(STATE_SETS.values()))
    ax.set_ylim(0, 1)
    ax.set_ylabel("success (Wilson 95%)")
    ax.legend(fontsize=7)
    save_figure(fig, path, dpi=110)


def _copy_videos(folder: Path, out: Path, tokenizers: list[str], count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.mp4"):  # an earlier run's videos would otherwise sit next to this run's
        stale.unlink()
    picked = []
    for which in STATE_SETS:
        for tok in tokenizers:
            picked += [(tok, which, p) for p in sorted((out / "eval" / f"{tok}-{which}" / "videos").glob("*.mp4"))[:1]]
    for tok, which, path in picked[:count]:
        shutil.copy(path, folder / f"{tok}-{which}-{path.name}")
