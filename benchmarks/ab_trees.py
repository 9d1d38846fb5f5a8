"""Two source trees of minbert timed against each other on the same workloads, interleaved: whether a change made a
path slower. Each tree runs in its own worker process (its `src` first on the path), the parent asks them in turn,
the order swapped every round, so both see the same machine state.

    git worktree add ../before HEAD~3
    python benchmarks/ab_trees.py ../before . --rounds 7

Workloads, each in fp32 and, where the CPU has native bf16, bf16: bench_encoder.py's, through each tree's own
benchmarks/bench_encoder.py (`encoder-train`: 8 fine-tuning steps of the encoder alone, SST batches of 32, mean
pooling, a linear head, AdamW; `encoder-infer`: 1,024 SST dev sentences in batches of 64 through the Runner's
inference copy) and the quickstart's, through the multitask API both trees have (`quickstart-train`: 8 pre-drawn
steps of the fused multitask forward, backward and AdamW, 32 per task; `quickstart-infer`: the Runner's embeddings
of the first 1,024 SST dev sentences). Prints each workload's median seconds per tree and the ratio (before / after:
above 1, the after tree is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

WORKER = r"""
import json, sys, time
import torch
sys.path.insert(0, sys.argv[2] + "/benchmarks")
import bench_encoder as be
from minbert.model import BertModel, default_checkpoint_dir
from minbert.config import load_config
from minbert.multitask.config import TrainConfig
from minbert.multitask.data import BatchStream, step_batches
from minbert.multitask.objective import Objective
from minbert.multitask.run import build, load_data
from minbert.multitask.runner import Runner
from minbert.optim import AdamW

torch.set_num_threads(int(sys.argv[1]))
cpu = torch.device("cpu")
setups = {}
def setup(precision):
    if precision not in setups:
        torch.manual_seed(0)
        cfg = load_config(TrainConfig, "configs/quickstart.yaml", [f"precision={precision}", "seed=1"])
        model, tok = build(cfg, cpu)
        data = load_data(cfg, tok, ("train", "dev"))
        streams = {n: BatchStream(n, d.lengths, cfg.task(n).batch_size, 1) for n, d in data["train"].items()}
        steps = [step_batches(data["train"], {n: s.next() for n, s in streams.items()}, tok.pad_id, cpu)[0][0]
                 for _ in range(8)]
        sents = data["dev"]["sst"].sentences[:1024]
        opt = AdamW(model.param_groups(cfg.lr, cfg.head_lr_mult), lr=cfg.lr)
        setups[precision] = (cfg, model, Objective(cfg, model, cpu), opt, steps, Runner(model, tok.pad_id, cpu, precision), sents)
    return setups[precision]
def train(precision):
    cfg, model, objective, opt, steps, _, _ = setup(precision)
    model.train()
    for batches in steps:
        opt.zero_grad(set_to_none=True)
        total, _, _ = objective(batches, {n: 1.0 for n in batches})
        total.backward()
        opt.step()
def infer(precision):
    *_, runner, sents = setup(precision)
    runner.sentences("sst", sents, 64)
encoders = {}
def encoder(precision):
    if precision not in encoders:
        torch.manual_seed(0)
        ckpt = default_checkpoint_dir()
        model = BertModel.from_pretrained(ckpt)
        try:
            from minbert.model import fast
            fast.install(model, "cpu")
        except ImportError:  # a tree from before the seam: its model has the CPU paths from the start
            pass
        train_data, infer_data = be.pass_data(ckpt)
        head = torch.nn.Linear(model.config.hidden_size, 5)
        opt = AdamW(list(model.parameters()) + list(head.parameters()), lr=1e-5)
        bf16 = precision == "bf16"
        step = be.train_fn(model, head, opt, train_data, bf16, False)
        run = be.infer_fn(be.runner_copy(model, bf16), infer_data, bf16, False)
        encoders[precision] = (lambda: [step() for _ in train_data], run)
    return encoders[precision]
WORK = {
    "quickstart-train": train,
    "quickstart-infer": infer,
    "encoder-train": lambda p: encoder(p)[0](),
    "encoder-infer": lambda p: encoder(p)[1](),
}
for line in sys.stdin:
    workload, precision = line.split()
    fn = WORK[workload]
    if (workload, precision) not in setups:
        fn(precision)  # warm-up: copies made, first allocations done
        setups[(workload, precision)] = True
    t = time.perf_counter()
    fn(precision)
    print(json.dumps(time.perf_counter() - t), flush=True)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path, help="a minbert checkout (its src/ is imported)")
    ap.add_argument("after", type=Path)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precisions", nargs="+", default=None, help="default: fp32, and bf16 where it is native")
    ap.add_argument(
        "--workloads", nargs="+", default=["encoder-train", "encoder-infer", "quickstart-train", "quickstart-infer"]
    )
    args = ap.parse_args()
    if args.precisions is None:
        flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
        args.precisions = ["fp32"] + (["bf16"] if "avx512_bf16" in flags or "amx_bf16" in flags else [])
    root = Path(__file__).resolve().parents[1]
    workers = {}
    for side in ("before", "after"):
        src = str(getattr(args, side).resolve() / "src")
        env = {**os.environ, "PYTHONPATH": src}
        workers[side] = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(args.threads), str(getattr(args, side).resolve())],
            cwd=root, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
    loads = [(w, p) for p in args.precisions for w in args.workloads]
    times = {(side, w, p): [] for side in workers for w, p in loads}
    for r in range(args.rounds):
        for w, p in loads:
            order = ("before", "after") if r % 2 == 0 else ("after", "before")
            for side in order:
                proc = workers[side]
                proc.stdin.write(f"{w} {p}\n")
                proc.stdin.flush()
                times[(side, w, p)].append(json.loads(proc.stdout.readline()))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    for proc in workers.values():
        proc.stdin.close()
        proc.wait()
    print(f"| workload | before (s, median of {args.rounds}) | after | after / before speed |")
    print("|---|---|---|---|")
    for w, p in loads:
        b, a = (statistics.median(times[(side, w, p)]) for side in ("before", "after"))
        print(f"| {w} {p} | {b:.3f} | {a:.3f} | {b / a:.3f}x |")


if __name__ == "__main__":
    main()
