"""Compare evaluation runs (e.g. binning vs VQ): success with Wilson 95% intervals, actions/s, tokens per action.

    python eval/compare.py --runs eval_runs/binning,eval_runs/vq --out eval_runs/compare
"""

from __future__ import annotations

import json
from pathlib import Path

from openvla_vq.io import atomic_file, save_figure, write_json


def compare(runs: list[Path], out: Path) -> str:
    rows = []
    for run in runs:
        path = Path(run) / "results.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: evaluate that run first (eval/libero90.py --out_dir {run})")
        r = json.loads(path.read_text())
        o = r["overall"]
        rows.append({"run": Path(run).name, "tokenizer": r["tokenizer"]["name"], "episodes": o["episodes"],
                     "success_rate": o["success_rate"], "wilson95": o["wilson95"], "actions_per_s": o["actions_per_s"],
                     "queries_per_s": o["queries_per_s"], "tokens_per_action": r["tokenizer"]["tokens_per_action"]})
    lines = ["| run | tokenizer | episodes | success (Wilson 95%) | actions/s | queries/s | tokens/action |",
             "|---|---|---|---|---|---|---|"]
    for x in rows:
        lines.append(f"| {x['run']} | {x['tokenizer']} | {x['episodes']} | {x['success_rate']:.3f} "
                     f"[{x['wilson95'][0]:.3f}, {x['wilson95'][1]:.3f}] | {x['actions_per_s']:.1f} | {x['queries_per_s']:.1f} "
                     f"| {x['tokens_per_action']:.2f} |")
    table = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "compare.json", rows)
    with atomic_file(out / "compare.md") as f:
        f.write(table + "\n")
    plot_comparison(out / "compare.png", rows)
    return table


def plot_comparison(path: Path, rows: list[dict]) -> None:
    """Two panels: success with Wilson 95% intervals, and policy actions/s (tokens per action in the labels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [f"{x['run']}\n{x['tokens_per_action']:.2f} tok/action" for x in rows]
    rates = np.array([x["success_rate"] for x in rows])
    err = [rates - np.array([x["wilson95"][0] for x in rows]), np.array([x["wilson95"][1] for x in rows]) - rates]
    fig, (left, right) = plt.subplots(1, 2, figsize=(2.4 * len(rows) + 3, 3.4))
    left.bar(range(len(rows)), rates, yerr=err, capsize=4, color="tab:blue")
    left.set_ylim(0, 1)
    left.set_ylabel("LIBERO-90 success (Wilson 95%)")
    right.bar(range(len(rows)), [x["actions_per_s"] for x in rows], color="tab:orange")
    right.set_ylabel("policy actions / s")
    for ax in (left, right):
        ax.set_xticks(range(len(rows)), names, fontsize=7)
    save_figure(fig, path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", required=True, help="comma-separated evaluation folders")
    parser.add_argument("--out", type=Path, default=Path("eval_runs/compare"))
    args = parser.parse_args(argv)
    print(compare([Path(r) for r in args.runs.split(",")], args.out))
    print(f"written: {args.out}/compare.md, compare.json, compare.png")


if __name__ == "__main__":
    main()
