"""How far bf16 and int8 inference move a run's outputs from fp32's, per example (docs/SPEED.md, "Inference
precision"): class probabilities (SST), P(1) (Quora), scores (STS), and the cosine of sentence embeddings, on the
first N dev rows of each task. Accuracy, not speed: safe to run beside other work.

    python benchmarks/inference_agreement.py RUN_DIR [--rows 300]
    python benchmarks/inference_agreement.py RUN_DIR --speed   # sentences/s of SST soft outputs; a quiet machine only
"""

from __future__ import annotations

import argparse
import time

import torch

import minbert
from minbert.data import DATASETS, data_dir, load_split


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--speed", action="store_true", help="time SST soft outputs on 1,024 dev sentences, interleaved")
    args = ap.parse_args()
    if args.speed:
        return speed(args.run)
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


def speed(run: str) -> None:
    """Sentences per second of SST soft outputs for each precision (`interleaved_speed`)."""
    sst = [e.texts[0] for e in load_split(DATASETS["sst"], "dev", data_dir(), False)][:1024]
    models = {p: minbert.load(run, precision=p) for p in ("fp32", "bf16", "int8")}
    print(interleaved_speed({p: lambda task, texts, m=m: m.soft(task, texts) for p, m in models.items()}, sst))


def interleaved_speed(fns: dict, sst: list, rounds: int = 5) -> str:
    """`fns` ({name: (task, texts) -> soft outputs}) timed on the SST sentences `sst`, in sentences per second, best
    of `rounds`: each path warmed up on all the sentences first (oneDNN builds a kernel for each new batch shape on
    first sight), the order reversed every other round, and half a second's pause before each timing - ONNX
    Runtime's idle threads (onnx_int8.py) spin for a while after a run and take the cores from whatever runs next
    (in onnx_int8.py's first fixed order minbert fp32, always right after ONNX Runtime int8, came out slower:
    benchmarks/log/, "int8 against ONNX Runtime, re-measured")."""
    best = dict.fromkeys(fns, 0.0)
    for fn in fns.values():
        fn("sst", sst)
    order = list(fns)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            time.sleep(0.5)
            t = time.perf_counter()
            fns[name]("sst", sst)
            best[name] = max(best[name], len(sst) / (time.perf_counter() - t))
    return f"{torch.get_num_threads()} threads: " + ", ".join(f"{p} {v:.0f} sentences/s" for p, v in best.items())


if __name__ == "__main__":
    main()
