"""How often text uses the ids an action tokenizer takes over: the default top-of-vocabulary slots (binning's
31744-31999, VQ-VLA's 30976-31999) next to the `least_used` policy's choice, on a corpus assembled offline.

The policy is given counts measured on one half of the package text (even lines) and the LIBERO prompts; its
choice is then scored, like the defaults, on the other half (odd lines), so the comparison is not circular.
The chosen ids are written beside the report (`least_used_ids.json`, [4][256]) for a VQ config's `slot_ids`.

    python -m openvla_vq.evaluation.slot_report --tokenizer ../shared/llama2-tokenizer --out reports/llama2-slots

Corpus: every LIBERO instruction hf-libero ships (all suites' BDDL files), each also as OpenVLA's full prompt;
and English text in installed packages (.md/.rst/.txt files and Python sources with their docstrings and
comments) up to `--max_mb`. OXE instructions cannot be reached offline. Encoding uses the tokenizer.json as
OpenVLA's transformers 4.40 did (the raw HF `tokenizers` model, BOS included).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import torch

from openvla_vq.action_tokenizers.slots import least_used_ids, top_of_vocab_ids
from openvla_vq.io import write_json
from openvla_vq.model.prompt import PROMPT
TEXT_SUFFIXES = (".md", ".rst", ".txt", ".py")


def libero_instructions() -> list[str]:
    """The `(:language ...)` of every BDDL file in the installed hf-libero, all suites, sorted and unique."""
    spec = importlib.util.find_spec("libero")
    if spec is None:
        return []
    root = Path(spec.submodule_search_locations[0]) / "libero" / "bddl_files"
    found = {m.group(1).strip() for p in root.rglob("*.bddl")
             for m in re.finditer(r"\(:language\s+([^)]*)\)", p.read_text(errors="ignore"))}
    return sorted(found)


def package_text(max_bytes: int) -> list[str]:
    """Lines of text files in site-packages, in sorted path order, until max_bytes."""
    site = Path(torch.__file__).resolve().parents[1]
    lines, total = [], 0
    for path in sorted(site.rglob("*")):
        if path.suffix not in TEXT_SUFFIXES or not path.is_file():
            continue
        text = path.read_text(errors="ignore")
        lines.extend(line for line in text.splitlines() if line.strip())
        total += len(text.encode())
        if total >= max_bytes:
            break
    return lines


def occurrences(ids: np.ndarray, slots: np.ndarray) -> dict:
    hit = np.isin(ids, slots)
    return {"occurrences": int(hit.sum()), "per_million_tokens": round(1e6 * float(hit.mean()), 3) if len(ids) else 0.0,
            "distinct_ids_seen": int(len(np.unique(ids[hit])))}


def slot_report(tokenizer_dir: Path, max_bytes: int) -> dict:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    base = tok.get_vocab_size(with_added_tokens=False)  # 32000 for Llama-2: <PAD> is an added token

    def encode(lines: list[str]) -> np.ndarray:
        return np.concatenate([np.asarray(e.ids, np.int64) for e in tok.encode_batch(lines)]) if lines else np.zeros(0, np.int64)

    instructions = libero_instructions()
    prompts = [PROMPT.format(instruction=i.lower()) for i in instructions]
    text = package_text(max_bytes)
    counts = np.bincount(np.concatenate([encode(text[0::2]), encode(prompts)]), minlength=tok.get_vocab_size())
    least_used = least_used_ids(tokenizer_dir / "tokenizer.json", 4, 256, counts=counts)
    slots = {
        "binning_top256": top_of_vocab_ids(base, 1, 256).flatten().numpy(),
        "vq_vla_top1024": top_of_vocab_ids(base, 4, 256).flatten().numpy(),
        "least_used_1024": least_used.flatten().numpy(),
    }
    corpora = {"libero_instructions": instructions, "libero_prompts": prompts, "package_text_held_out": text[1::2]}
    report = {"tokenizer": str(tokenizer_dir), "base_vocab_size": base,
              "slots": {name: {"min_id": int(s.min()), "max_id": int(s.max()), "count": len(s)} for name, s in slots.items()},
              "least_used_chosen_from": {"lines": len(text[0::2]) + len(prompts), "tokens": int(counts.sum()),
                                         "ids_never_seen": int((counts[:base] == 0).sum())},
              "corpora": {}}
    for name, lines in corpora.items():
        ids = encode(lines)
        report["corpora"][name] = {"lines": len(lines), "bytes": sum(len(x.encode()) for x in lines), "tokens": int(len(ids)),
                                   **{slot: occurrences(ids, s) for slot, s in slots.items()}}
    return report, least_used


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "llama2-tokenizer")
    parser.add_argument("--out", type=Path, default=Path("reports/llama2-slots"))
    parser.add_argument("--max_mb", type=float, default=30.0)
    args = parser.parse_args(argv)
    if not (args.tokenizer / "tokenizer.json").is_file():
        sys.exit(f"error: {args.tokenizer}/tokenizer.json not found: pass --tokenizer DIR (e.g. ../shared/llama2-tokenizer)")
    report, least_used = slot_report(args.tokenizer, int(args.max_mb * 2**20))
    write_json(args.out / "report.json", report)
    write_json(args.out / "least_used_ids.json", least_used.tolist())
    for corpus, row in report["corpora"].items():
        cells = ", ".join(f"{slot} {row[slot]['occurrences']} ({row[slot]['per_million_tokens']}/M)" for slot in report["slots"])
        print(f"{corpus}: {row['lines']} lines, {row['tokens']} tokens; {cells}")
    print(f"wrote {args.out / 'report.json'}")


if __name__ == "__main__":
    main()
