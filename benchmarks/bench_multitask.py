"""Multitask throughput on the quickstart setup (SST, Quora, STS on the embedded checkpoint). Run by hand:

    python benchmarks/bench_multitask.py [--steps N] [--fixed-steps 30] [--sweep 8,16] [--sweep-steps 40]
        [--min-padding 1,32,64,128] [--fp32] [--record]

Reports, in one run: examples/s of round-robin training (forward, summed losses, backward, AdamW) over the
quickstart's epoch with the fused (unpadded) pass, with one pass per task (both sides of a pair stacked, as the
per-task path runs) and with one pass per sentence group (SST; each side of Quora and STS: five passes, as a
hand-written loop calls the encoder once per input), and one pass per task computed padded (the CPU encoder's
unpadding off, `varlen.MIN_PADDING` out of reach: every padding position computed), each step timed for all four on
the same batches, one after the other, so the machine's drift hits them alike; then, over fewer steps, every batch
padded to the fixed max_length and computed padded, and shuffled (unbucketed) batches; examples/s of a full dev
evaluation (each distinct sentence encoded once); and the padding fraction with and without bucketing. A second
table repeats the three passes at smaller batch sizes per task (--sweep), where the per-pass costs fusion removes
weigh more.
With --min-padding, a third table times the per-task passes with each of those values of `varlen.MIN_PADDING` (the
fewest padding tokens a batch must have for the CPU encoder to run it unpadded, model/fast/varlen.py) and computed
padded, at the --sweep batch sizes and the quickstart's, --sweep-steps steps each.
Prints the tables under its command (`--record`: also to benchmarks/log/, benchmarks/_record.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _record import add_record_flag, record  # benchmarks/_record.py (scripts run from the repository root)

from minbert.config import load_config
from minbert.model.fast import varlen
from minbert.multitask.config import TrainConfig
from minbert.multitask.data import BatchStream, make_batch, step_batches
from minbert.multitask.objective import Objective
from minbert.multitask.run import build, load_data
from minbert.multitask.runner import Runner
from minbert.multitask.stepper import Stepper
from minbert.optim import AdamW

ROOT = Path(__file__).resolve().parents[1]


class ShuffledStream(BatchStream):
    """Plain shuffled batches of the same size, no length sorting: the baseline bucketing is measured against."""

    def next(self):
        p, i = divmod(self.consumed, self.per_pass)
        if p != self._pass:
            order = list(range(len(self.lengths)))
            random.Random(f"{self.seed}/{self.name}/{p}").shuffle(order)
            self._pass, self._batches = (
                p,
                [order[j : j + self.batch_size] for j in range(0, len(order), self.batch_size)],
            )
        self.consumed += 1
        return self._batches[i]


def padding(data, streams, pad_id, n) -> float:
    pad = total = 0
    for name, s in streams.items():
        for _ in range(n):
            b = make_batch(data[name], s.next(), pad_id)
            pad += int((b.mask == 0).sum())
            total += b.mask.numel()
    return pad / total


def fixed_length(micro, length: int, pad_id: int):
    """The same micro-batches padded to `length` tokens, as a fixed-shape pipeline would feed them."""
    out = []
    for batches, fracs in micro:
        fixed = {}
        for n, b in batches.items():
            extra = length - b.ids.shape[1]
            fixed[n] = dataclasses.replace(
                b,
                ids=F.pad(b.ids, (0, extra), value=pad_id),
                mask=F.pad(b.mask, (0, extra)),
                types=None if b.types is None else F.pad(b.types, (0, extra)),
            )
        out.append((fixed, fracs))
    return out


class FivePasses(Objective):
    """The step's losses with one encoder pass per sentence group: a pair task encodes its first sentences, then
    its second ones, each padded to its own longest."""

    def forward(self, batches, fracs):
        outs, model = {}, self.model
        for n, b in batches.items():
            with self.autocast():
                sides = b.ids.chunk(2) if b.pair else (b.ids,)
                masks = b.mask.chunk(2) if b.pair else (b.mask,)
                emb = []
                for ids, mask in zip(sides, masks):
                    T = int(mask.sum(1).max())
                    emb.append(model.embed(n, ids[:, :T], mask[:, :T], None if b.types is None else b.types[:, :T]))
                outs[n] = model.head(n, torch.cat(emb), b.pair)  # (B', H) -> the head's output
        losses = {n: self.task_loss(n, b, outs[n]) for n, b in batches.items()}
        return sum(fracs[n] * loss for n, loss in losses.items()), losses, {}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=0, help="steps timed per setting (default: the quickstart's epoch)")
    ap.add_argument("--fixed-steps", type=int, default=30, help="steps timed with fixed-length padding (slow)")
    ap.add_argument("--sweep", default="8,16", help="batch sizes per task for the second table ('' for none)")
    ap.add_argument("--sweep-steps", type=int, default=40, help="steps timed per batch size in the second table")
    ap.add_argument(
        "--min-padding", default="", help="values of varlen.MIN_PADDING for a third table, e.g. 1,32,64,128 ('' none)"
    )
    ap.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    add_record_flag(ap)
    args = ap.parse_args()
    cfg = load_config(
        TrainConfig, ROOT / "configs" / "quickstart.yaml", [f"precision={'fp32' if args.fp32 else 'bf16'}"]
    )
    steps = args.steps or cfg.steps_per_epoch
    device = torch.device("cpu")
    torch.manual_seed(0)
    model, tok = build(cfg, device)
    data = load_data(cfg, tok, ("train", "dev"))
    opt = AdamW(model.parameters(), lr=cfg.lr)
    max_len = max(cfg.task(n).max_length for n in cfg.tasks)
    threshold = varlen.MIN_PADDING  # as shipped; "padded" puts it out of reach, "min_padding" sets another

    def examples_per_second(modes: dict[str, dict], cls=BatchStream, n=steps, fixed=False, batch=0) -> dict[str, float]:
        """Each mode {fused, five, padded, min_padding} timed on the same steps, interleaved step by step."""
        steppers = {}
        for name, m in modes.items():
            objective = FivePasses if m.get("five") else Objective
            steppers[name] = Stepper(
                objective(dataclasses.replace(cfg, fused=m.get("fused", False)), model, device), device
            )
        s = {n: cls(n, d.lengths, batch or cfg.task(n).batch_size, cfg.seed) for n, d in data["train"].items()}
        model.train()
        examples, elapsed = 0, dict.fromkeys(modes, 0.0)
        for i in range(n + 2):  # the first two steps warm up
            idx = {n: s[n].next() for n in cfg.tasks}
            micro = step_batches(data["train"], idx, tok.pad_id, device)
            if fixed:
                micro = fixed_length(micro, max_len, tok.pad_id)
            for name, stepper in steppers.items():
                m = modes[name]
                varlen.MIN_PADDING = 10**9 if m.get("padded") else m.get("min_padding", threshold)
                t = time.perf_counter()
                stepper.step(opt, micro, 0)
                if i >= 2:
                    elapsed[name] += time.perf_counter() - t
            if i >= 2:
                examples += sum(len(v) for v in idx.values())  # a pair counts as one example
        varlen.MIN_PADDING = threshold
        return {name: examples / e for name, e in elapsed.items()}

    three = {"fused": {"fused": True}, "per-task": {}, "five": {"five": True}}
    bucketed = examples_per_second({**three, "padded": {"padded": True}})
    fused, unfused, five, padded = (bucketed[k] for k in ("fused", "per-task", "five", "padded"))
    fixed = examples_per_second({"per-task": {"padded": True}}, n=args.fixed_steps, fixed=True)["per-task"]
    shuffled = examples_per_second({"fused": {"fused": True}, "per-task": {}}, ShuffledStream, n=args.fixed_steps)
    shuffled, shuffled_unfused = shuffled["fused"], shuffled["per-task"]
    sizes = [int(b) for b in filter(None, args.sweep.split(","))]
    sweep = {b: examples_per_second(three, n=args.sweep_steps, batch=b) for b in sizes}
    per_value = {f"MIN_PADDING {v}": {"min_padding": int(v)} for v in filter(None, args.min_padding.split(","))}
    thresholds = {
        b: examples_per_second({**per_value, "padded": {"padded": True}}, n=args.sweep_steps, batch=b)
        for b in ([*sizes, cfg.task("sst").batch_size] if per_value else [])
    }
    t = time.perf_counter()
    Runner(model, tok.pad_id, device, cfg.precision).evaluate(data["dev"])
    eval_time = time.perf_counter() - t
    n_dev = sum(len(d) for d in data["dev"].values())
    pad_b = padding(
        data["train"], {n: BatchStream(n, d.lengths, 32, cfg.seed) for n, d in data["train"].items()}, tok.pad_id, 200
    )
    pad_s = padding(
        data["train"],
        {n: ShuffledStream(n, d.lengths, 32, cfg.seed) for n, d in data["train"].items()},
        tok.pad_id,
        200,
    )

    precision = "fp32" if args.fp32 else "bf16"
    table = "\n".join(
        [
            f"| round-robin training ({precision}) | examples/s | vs fused + bucketed | fused speed-up |",
            "|---|---|---|---|",
            f"| fused pass (unpadded), length-bucketed batches, {steps} steps | {fused:.1f} | 1.00x | |",
            f"| one pass per task (3), unpadded, length-bucketed batches, same steps | {unfused:.1f} | {unfused / fused:.2f}x | {fused / unfused:.2f}x |",
            f"| one pass per sentence group (5), unpadded, length-bucketed batches, same steps | {five:.1f} | {five / fused:.2f}x | {fused / five:.2f}x |",
            f"| one pass per task (3) computed padded (unpad off), length-bucketed batches, same steps | {padded:.1f} | {padded / fused:.2f}x | {fused / padded:.2f}x |",
            f"| one pass per task, padded to {max_len} tokens (fixed length) and computed padded, {args.fixed_steps} steps | {fixed:.1f} | {fixed / fused:.2f}x | |",
            f"| fused pass, shuffled batches (no bucketing), {args.fixed_steps} steps | {shuffled:.1f} | {shuffled / fused:.2f}x | |",
            f"| one pass per task, unpadded, shuffled batches (no bucketing), {args.fixed_steps} steps | {shuffled_unfused:.1f} | {shuffled_unfused / fused:.2f}x | {shuffled / shuffled_unfused:.2f}x (shuffled) |",
            f"| dev evaluation ({n_dev} examples in {eval_time:.1f} s) | {n_dev / eval_time:.1f} | | |",
            "",
            f"Padding in training batches: {pad_b:.1%} length-bucketed, {pad_s:.1%} shuffled (200 batches per task).",
        ]
    )
    if sweep:
        table += "\n\n" + "\n".join(
            [
                f"| batch per task ({precision}, {args.sweep_steps} steps each) | fused examples/s | per task (3) | per sentence group (5) | fused speed-up vs 3 | vs 5 |",
                "|---|---|---|---|---|---|",
                *(
                    f"| {b} | {r['fused']:.1f} | {r['per-task']:.1f} | {r['five']:.1f} | {r['fused'] / r['per-task']:.2f}x | {r['fused'] / r['five']:.2f}x |"
                    for b, r in sweep.items()
                ),
                f"| {cfg.task('sst').batch_size} (table above) | {fused:.1f} | {unfused:.1f} | {five:.1f} | {fused / unfused:.2f}x | {fused / five:.2f}x |",
            ]
        )
    if thresholds:
        table += "\n\n" + "\n".join(
            [
                f"| per-task passes (3), batch per task ({precision}, {args.sweep_steps} steps each) | "
                + " | ".join(f"{k} examples/s" for k in per_value)
                + " | computed padded |",
                "|---" * (len(per_value) + 2) + "|",
                *(
                    f"| {b} | " + " | ".join(f"{r[k]:.1f}" for k in [*per_value, "padded"]) + " |"
                    for b, r in thresholds.items()
                ),
                "",
                f"`varlen.MIN_PADDING` as shipped: {threshold}.",
            ]
        )
    setup = (
        f"configs/quickstart.yaml (SST linear, Quora concat bi-encoder, STS cosine bi-encoder; batch 32 per task; "
        f"one epoch = {cfg.steps_per_epoch} steps), embedded checkpoint, summed losses, the same batches for every pass, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads. Settings in one block are timed step by step in turn, "
        f"after 2 warm-up steps."
    )
    record("bench_multitask", setup, table, write=args.record)


if __name__ == "__main__":
    main()
