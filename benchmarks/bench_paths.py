"""What each CPU fast path (model/fast) gains: the quickstart's training step and inference with every path on, and
with one path left out at a time, interleaved in one run.

    python benchmarks/bench_paths.py [--rounds 5] [--precisions fp32 bf16] [--workload quickstart|encoder] [--record]

`quickstart` (default): training, 4 pre-drawn quickstart steps (the fused multitask forward of 32 sentences or pairs
per task, backward, AdamW, and the heap trim the training loop does after each step under glibc's malloc); inference, the Runner's embeddings of the first 512 SST dev sentences in batches of 64.
`encoder`: bench_encoder.py's passes - 8 fine-tuning steps of the encoder alone (SST batches of 32, mean pooling, a
linear head, AdamW) and 1,024 SST dev sentences in batches of 64 through the Runner's inference copy. Each variant is a copy
of the same model with `fast.install(copy, "cpu", without={path})`; the inference copies (bf16 weights packed for
oneDNN, fp32 through oneDNN's linear op) are left out by turning their choice off. The table gives each variant's
median seconds and how much faster everything-on is than the variant (above 1: the path pays).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from _record import add_record_flag, record, runtime

from minbert.config import load_config
from minbert.model import fast
from minbert.model.fast import cpu, onednn
from minbert.multitask.config import TrainConfig
from minbert.multitask.data import BatchStream, step_batches
from minbert.multitask.objective import Objective
from minbert.multitask.run import build, load_data
from minbert.multitask.runner import Runner
from minbert.optim import AdamW
from minbert.runs import release_memory

# variant -> (replacements left out, inference copies allowed)
VARIANTS = {
    "all paths": (frozenset(), True),
    "without cpu.SelfAttention (and the unpadding encoder it serves)": (frozenset({cpu.SelfAttention, cpu.Encoder}), True),
    "without cpu.Encoder (padded batches)": (frozenset({cpu.Encoder}), True),
    "without cpu.Dropout": (frozenset({cpu.Dropout}), True),
    "without cpu.WordEmbedding (fresh gradient each step)": (frozenset({cpu.WordEmbedding}), True),
    "without the inference copy (oneDNN fp32 / packed bf16)": (frozenset(), False),
}  # fmt: skip


class Side:
    """One variant: its model copy, optimizer, objective and Runner."""

    def __init__(self, base, cfg, tok, without: frozenset, copies: bool, precision: str):
        self.model = copy.deepcopy(base)
        fast.install(self.model.bert, "cpu", without=without)
        self.cfg, self.copies = cfg, copies
        self.objective = Objective(cfg, self.model, torch.device("cpu"))
        self.opt = AdamW(self.model.param_groups(cfg.lr, cfg.head_lr_mult), lr=cfg.lr)
        saved = onednn.packs_bf16, onednn.faster_here
        if not copies:  # the Runner then runs the model itself (autocast in bf16, MKL's fp32 GEMM)
            onednn.packs_bf16 = onednn.faster_here = lambda: False
        try:
            self.runner = Runner(self.model, tok.pad_id, "cpu", precision)
            if not copies and precision == "bf16":
                self.runner.cast = None
        finally:
            onednn.packs_bf16, onednn.faster_here = saved

    def train(self, steps) -> None:
        self.model.train()
        for batches in steps:
            self.opt.zero_grad(set_to_none=True)
            total, _, _ = self.objective(batches, {n: 1.0 for n in batches})
            total.backward()
            self.opt.step()
            if self.cfg.trim_every:  # as the training loop does after every step by default (glibc's malloc)
                release_memory()

    def infer(self, sents) -> None:
        self.runner.sentences("sst", sents, 64)


def measure(precision: str, rounds: int) -> dict:
    torch.manual_seed(0)
    cfg = load_config(TrainConfig, "configs/quickstart.yaml", [f"precision={precision}", "seed=1"])
    base, tok = build(cfg, torch.device("cpu"))
    fast.install(base.bert, None)
    data = load_data(cfg, tok, ("train", "dev"))
    streams = {n: BatchStream(n, d.lengths, cfg.task(n).batch_size, 1) for n, d in data["train"].items()}
    steps = [
        step_batches(data["train"], {n: s.next() for n, s in streams.items()}, tok.pad_id, "cpu")[0][0]
        for _ in range(4)
    ]
    sents = data["dev"]["sst"].sentences[:512]
    sides = {name: Side(base, cfg, tok, without, copies, precision) for name, (without, copies) in VARIANTS.items()}
    fns = {}
    for name, side in sides.items():
        fns[("train", name)] = lambda side=side: side.train(steps)
        fns[("infer", name)] = lambda side=side: side.infer(sents)
    return interleave(fns, rounds)


def measure_encoder(precision: str, rounds: int) -> dict:
    """The same variants on bench_encoder.py's passes."""
    import bench_encoder as be

    from minbert.model import BertModel, default_checkpoint_dir

    ckpt, bf16 = default_checkpoint_dir(), precision == "bf16"
    train_data, infer_data = be.pass_data(ckpt)
    torch.manual_seed(0)
    base = BertModel.from_pretrained(ckpt)
    fns = {}
    for name, (without, copies) in VARIANTS.items():
        model = fast.install(copy.deepcopy(base), "cpu", without=without)
        head = torch.nn.Linear(model.config.hidden_size, 5)
        step = be.train_fn(
            model, head, AdamW([*model.parameters(), *head.parameters()], lr=1e-5), train_data, bf16, False
        )
        runs = be.runner_copy(model, bf16) if copies else model
        fns[("train", name)] = lambda step=step: [step() for _ in train_data]
        fns[("infer", name)] = be.infer_fn(runs, infer_data, bf16, False)
    return interleave(fns, rounds)


def interleave(fns: dict, rounds: int) -> dict:
    """Median seconds of each (workload, variant) call, after one warm-up call each; the variants' order rotates and
    reverses every round."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    names = list(VARIANTS)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for w in ("train", "infer"):
            for n in order if r % 2 == 0 else order[::-1]:
                t = time.perf_counter()
                fns[(w, n)]()
                times[(w, n)].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--workload", choices=["quickstart", "encoder"], default="quickstart")
    add_record_flag(ap)
    args = ap.parse_args()
    setup = f"{args.workload} workload, every CPU path and each one left out, {args.rounds} rounds; {runtime()}"
    lines = []
    for precision in args.precisions:
        med = (measure if args.workload == "quickstart" else measure_encoder)(precision, args.rounds)
        lines += [
            f"| {precision} | train s | all paths' speed-up | inference s | all paths' speed-up |",
            "|---|---|---|---|---|",
        ]
        for n in VARIANTS:
            t, i = med[("train", n)], med[("infer", n)]
            lines.append(
                f"| {n} | {t:.2f} | {t / med[('train', 'all paths')]:.2f}x | {i:.3f} | "
                f"{i / med[('infer', 'all paths')]:.2f}x |"
            )
        lines.append("")
    record("bench_paths", setup, "\n".join(lines), write=args.record)


if __name__ == "__main__":
    main()
