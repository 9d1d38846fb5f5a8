"""A run's dev metrics and inference speed five ways: minbert in fp32, bf16 and int8 (`--precision`), and its ONNX
export (`minbert export RUN OUT --format onnx --int8`) in ONNX Runtime, fp32 and int8 (docs/SPEED.md, "Inference
precision"). Every dev example of SST, Quora and STS; ONNX Runtime gets the same token ids as minbert, batched the
same way (`bucket_batches`: sorted by length, batches of 64), and its outputs become predictions through the same Task.soft/hard.

    minbert export RUN OUT --format onnx --int8
    python benchmarks/onnx_int8.py RUN OUT            # dev metrics, and how far each path moves SST probabilities
    python benchmarks/onnx_int8.py RUN OUT --speed    # sentences/s of SST soft outputs; a quiet machine only
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from inference_agreement import interleaved_speed  # benchmarks/ (scripts run from the repository root)

import minbert
from minbert.data import DATASETS, bucket_batches, data_dir, load_split, pad
from minbert.model.outputs import HeadOutput
from minbert.tasks.base import overall_score

TASKS = ("sst", "quora", "sts")


class OnnxTask:
    """One task's exported file in an ONNX Runtime session: soft outputs for examples, as Model.soft gives them."""

    def __init__(self, model: minbert.api.Model, out: Path, task: str, int8: bool):
        entry = json.loads((out / "minbert_export.json").read_text())["tasks"][task]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        file = out / (entry["int8"]["file"] if int8 else entry["file"])
        self.session = ort.InferenceSession(str(file), opts, providers=["CPUExecutionProvider"])
        self.model, self.task, self.inputs, self.output = model, task, entry["inputs"], entry["output"]

    def feeds(self, texts: list, max_length: int) -> list[list[np.ndarray]]:
        """One list of input arrays per example (unpadded): the export's input order."""
        tok = self.model.run.tok
        if self.inputs[0] == "input_ids_a":  # a bi-encoder: each side alone
            a, b = tok.encode([t[0] for t in texts], max_length), tok.encode([t[1] for t in texts], max_length)
            return [[x, y] for x, y in zip(a, b)]
        if len(texts[0]) == 2:
            ids, types = tok.encode_pairs([t[0] for t in texts], [t[1] for t in texts], max_length)
            return [[i, t] for i, t in zip(ids, types)]
        return [[i, [0] * len(i)] for i in tok.encode([t[0] for t in texts], max_length)]

    def soft(self, texts: list, batch_size: int = 64) -> torch.Tensor:
        spec, cfg = self.model.specs[self.task], self.model.run.cfg.task(self.task)
        rows, pad_id = self.feeds(texts, cfg.max_length), self.model.run.tok.pad_id
        outs = [None] * len(rows)
        for idx in bucket_batches([sum(len(x) for x in r) for r in rows], batch_size):  # minbert's own batching
            part = [rows[i] for i in idx]
            feed = {}
            if self.inputs[0] == "input_ids_a":
                for k, side in (("a", 0), ("b", 1)):
                    ids, mask = pad([r[side] for r in part], pad_id)  # (B, T) each side
                    feed[f"input_ids_{k}"], feed[f"attention_mask_{k}"] = ids.numpy(), mask.numpy()
            else:
                ids, mask = pad([r[0] for r in part], pad_id)
                types, _ = pad([r[1] for r in part], 0)
                feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": types.numpy()}
            got = torch.from_numpy(self.session.run(None, feed)[0])
            for i, g in zip(idx, got):
                outs[i] = g
        out = torch.stack(outs)
        head = HeadOutput(logits=out) if self.output == "logits" else HeadOutput(score=out)
        return spec.soft(head, self.model.run.model.cosine_scale(self.task))


def paths(run: str, out: Path) -> tuple[dict, minbert.api.Model]:
    """({name: (task, texts) -> soft outputs} for the five inference paths, minbert in fp32)."""
    found, models = {}, {p: minbert.load(run, precision=p) for p in ("fp32", "bf16", "int8")}
    for p, m in models.items():
        found[f"minbert {p}"] = lambda task, texts, m=m: m.soft(
            task, [tuple(t) if len(t) == 2 else t[0] for t in texts]
        )
    ref = models["fp32"]
    for int8 in (False, True):
        sessions = {t: OnnxTask(ref, out, t, int8) for t in TASKS}
        found[f"onnxruntime {'int8' if int8 else 'fp32'}"] = lambda task, texts, s=sessions: s[task].soft(texts)
    return found, ref


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("export", type=Path, help="the folder `minbert export RUN OUT --format onnx --int8` wrote")
    ap.add_argument("--speed", action="store_true")
    args = ap.parse_args()
    fns, ref = paths(args.run, args.export)
    dev = {t: load_split(DATASETS[t], "dev", data_dir(ref.run.cfg.data_dir), False) for t in TASKS}
    if args.speed:
        print(interleaved_speed(fns, [e.texts for e in dev["sst"]][:1024]))
        return
    print("| inference | SST acc | Quora acc | STS r | overall | SST probabilities vs minbert fp32, mean / max |")
    print("|---|---|---|---|---|---|")
    base = None
    for name, fn in fns.items():
        metrics, sst = {}, None
        for t in TASKS:
            spec = ref.specs[t]
            soft = fn(t, [e.texts for e in dev[t]])
            sst = soft if t == "sst" else sst
            labels = torch.tensor([e.label for e in dev[t]])
            metrics[f"{t}/{spec.metric_name}"] = spec.metric(spec.hard(soft), labels)
        base = sst if base is None else base
        d = (sst - base).abs()
        overall = overall_score(metrics, ref.specs)
        cells = " | ".join(f"{v:.4f}" for v in metrics.values())
        print(f"| {name} | {cells} | {overall:.4f} | {d.mean():.4f} / {d.max():.4f} |", flush=True)


if __name__ == "__main__":
    main()
