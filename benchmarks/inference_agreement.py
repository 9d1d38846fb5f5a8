"""How far bf16 and int8 inference move a run's outputs from fp32's, per example (docs/SPEED.md, "Inference
precision"): class probabilities (SST), P(1) (Quora), scores (STS), and the cosine of sentence embeddings, on the
first N dev rows of each task. Accuracy, not speed: safe to run beside other work.

    python benchmarks/inference_agreement.py RUN_DIR [--rows 300]
"""

from __future__ import annotations

import argparse

import torch

import minbert
from minbert.data import DATASETS, data_dir, load_split


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--rows", type=int, default=300)
    args = ap.parse_args()
    rows = {t: load_split(DATASETS[t], "dev", data_dir(), False)[: args.rows] for t in ("sst", "quora", "sts")}
    sst = [e.texts[0] for e in rows["sst"]]
    ref = minbert.load(args.run, precision="fp32")
    for precision in ("int8", "bf16"):
        m = minbert.load(args.run, precision=precision)
        parts = []
        for task in ("sst", "quora", "sts"):
            inputs = [e.texts[0] if task == "sst" else e.texts for e in rows[task]]
            d = (m.soft(task, inputs) - ref.soft(task, inputs)).abs()
            parts.append(f"{task} mean {d.mean():.4f} max {d.max():.4f}")
        cos = torch.nn.functional.cosine_similarity(m.embed(sst), ref.embed(sst), dim=-1)
        print(f"{precision}: " + " | ".join(parts) + f" | embedding cosine mean {cos.mean():.4f} min {cos.min():.4f}")


if __name__ == "__main__":
    main()
