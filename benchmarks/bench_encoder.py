"""Our BERT against transformers.BertModel on real SST sentences, and against the matmul peak of the same run.

    python benchmarks/bench_encoder.py [--iters 20] [--profile] [--record]

Training: a fine-tuning step (mean pooling, a 5-way linear head, cross-entropy, backward, AdamW) on shuffled SST
training batches of 32; ours with minbert.optim.AdamW, the reference with torch.optim.AdamW(fused=True). Inference:
1,024 SST dev sentences in dev order, batches of 64, mean-pooled embeddings; also ONNX Runtime in fp32 on the same
batches, with its graph optimizations and with its BERT fusions (onnxruntime.transformers.optimizer). Every pair of
sides is interleaved call by call (the VM's speed drifts by tens of percent over minutes), and the matmul peak is
measured between the calls at the encoder's own shapes: (1536 x 384) @ (384 x 1536) and (1536 x 1536) @ (1536 x 384),
as many rows as a batch of real tokens, in the threads the steps use.

GFLOP/s count the matmul work on real tokens only (the projections, the FFN, and attention per sentence over its own
length; a training step is 3x the forward), so the share of peak says how much of the step is matrix work at full
speed. `--profile` also writes torch.profiler's operator table for each of our passes to benchmarks/profiles/.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import functools
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from _record import add_record_flag, record  # benchmarks/_record.py (scripts run from the repository root)

from minbert.data import DATASETS, data_dir, load_split, pad
from minbert.data.tokenizer import Tokenizer
from minbert.model import BertModel, default_checkpoint_dir, fast
from minbert.model.fast import cpu, varlen
from minbert.model.fast.cast import CastCopy
from minbert.model.fast.onednn import OneDNNCopy, PackedCopy, faster_here, packs_bf16
from minbert.optim import AdamW

PROFILES = Path(__file__).parent / "profiles"


def peak_fn(dtype, kernels: dict | None = None):
    """The matmul peak at the encoder's shapes: the best of PyTorch's default kernel (in fp32 MKL, which on AMD CPUs
    runs at about half of oneDNN's, model/onednn.py), oneDNN's linear op and the same from a weight packed once into
    its blocked layout (what bf16 inference runs, model/onednn.py's PackedCopy). `kernels`: each kernel's best, kept."""
    a, b = torch.randn(1536, 384, dtype=dtype), torch.randn(384, 1536, dtype=dtype)
    c = torch.randn(1536, 1536, dtype=dtype)
    bt, at = b.t().contiguous(), a.t().contiguous()  # (out, in) weights: a @ b = linear(a, b^T), c @ a = linear(c, a^T)
    lin = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    pack = getattr(torch.ops.mkldnn, "_reorder_linear_weight", None)
    fns = {"torch.mm" + (" (MKL)" if dtype == torch.float32 else ""): lambda: (a @ b, c @ a)}
    if lin is not None:
        fns["oneDNN linear"] = lambda: (lin(a, bt, None, "none", [], ""), lin(c, at, None, "none", [], ""))
    if lin is not None and pack is not None:
        bp, ap = pack(bt, 1536), pack(at, 1536)
        fns["oneDNN linear, packed weight"] = lambda: (
            lin(a, bp, None, "none", [], ""),
            lin(c, ap, None, "none", [], ""),
        )
    kernels = {} if kernels is None else kernels

    def run(reps=8):
        for name, f in fns.items():
            t = time.perf_counter()
            for _ in range(reps):
                f()
            g = 2 * 2 * 1536 * 384 * 1536 * reps / (time.perf_counter() - t) / 1e9  # GFLOP/s
            kernels[name] = max(kernels.get(name, 0.0), g)
        return max(kernels[name] for name in fns)

    return run


def real_flops(cfg, lengths: list[int], train: bool) -> float:
    """Matmul FLOPs on real tokens (2 per multiply-add): per layer the q, k, v, output and FFN projections of every
    token and q k^T and (probabilities) v within each sentence; a training step costs 3x the forward."""
    H, I, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    per_layer = sum(2 * (4 * H * H + 2 * H * I) * n + 2 * 2 * n * n * H for n in lengths)
    return L * per_layer * (3 if train else 1)


def interleaved(fns: dict, iters: int, peak) -> tuple[dict, float]:
    """Median seconds per call of each function, calls interleaved (order rotating), and the matmul peak (the best
    of the measurements between them)."""
    for f in fns.values():
        f()
    times, peaks, names = {k: [] for k in fns}, [], list(fns)
    for i in range(iters):
        for k in names[i % len(names) :] + names[: i % len(names)]:
            t = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t)
        peaks.append(peak())
    return {k: statistics.median(v) for k, v in times.items()}, max(peaks)


def batches(tok, split: str, size: int, count: int, shuffle: bool):
    rows = load_split(DATASETS["sst"], split, data_dir(), False)
    if shuffle:
        random.Random(0).shuffle(rows)
    out = []
    for i in range(0, size * count, size):
        part = rows[i : i + size]
        ids, mask = pad(tok.encode([e.texts[0] for e in part], 128), tok.pad_id)
        out.append((ids, mask, torch.tensor([e.label for e in part])))
    return out


def pass_data(ckpt) -> tuple[list, list]:
    """The batches every pass here runs: 8 shuffled SST train batches of 32 for training, the first 1,024 SST dev
    sentences in dev order, batches of 64, for inference."""
    tok = Tokenizer.from_pretrained(ckpt)
    return batches(tok, "train", 32, 8, shuffle=True), batches(tok, "dev", 64, 16, shuffle=False)


def runner_copy(model: BertModel, bf16: bool) -> BertModel:
    """The encoder as `Runner` runs it for inference: in bf16 a bf16 copy of its weights (model/fast/cast.py), its
    linear layers from packed weights where bf16 is native; in fp32 its linear layers through oneDNN where that is
    faster (both model/fast/onednn.py)."""
    wrapped = torch.nn.ModuleDict({"bert": model})
    if bf16:
        return (PackedCopy if packs_bf16() else CastCopy)(wrapped, ("bert",), torch.bfloat16).get()["bert"]
    return OneDNNCopy(wrapped, ("bert",)).get()["bert"] if faster_here() else model


def mean_pool(hidden, mask):
    m = mask[..., None].to(hidden.dtype)  # (B, T, 1)
    return (hidden * m).sum(1) / m.sum(1)


def train_fn(model, head, opt, data, bf16: bool, hf: bool):
    state = {"i": 0}

    def step():
        ids, mask, y = data[state["i"] % len(data)]
        state["i"] += 1
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if hf:
                e = mean_pool(model(input_ids=ids, attention_mask=mask).last_hidden_state, mask)
            else:
                e = model.sentence_embedding(ids, mask, pooling="mean")
            loss = F.cross_entropy(head(e).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def infer_fn(model, data, bf16: bool, hf: bool):
    @torch.inference_mode()
    def run():
        for ids, mask, _ in data:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                if hf:
                    mean_pool(model(input_ids=ids, attention_mask=mask).last_hidden_state, mask)
                else:
                    model.sentence_embedding(ids, mask, pooling="mean")

    return run


def infer_sides(ours, ref, data, bf16: bool, ort: dict) -> dict:
    """Inference as the product runs it (`Runner`: in bf16, the encoder from a bf16 copy of its weights,
    model/fast/cast.py, its linear layers from packed weights where bf16 is native; in fp32 on AMD CPUs, its linear
    layers through oneDNN; both model/fast/onednn.py) and without those copies (bf16: autocast over fp32 weights and
    the textbook attention, PyTorch's SDPA, and the bf16 copy with plain weights; fp32: F.linear); transformers under
    autocast and, in bf16, also with its weights cast; ONNX Runtime in fp32."""
    before = copy.deepcopy(ours).eval()
    for layer in before.encoder.layer:  # the textbook attention (SDPA), over the same flat tokens
        layer.attention.self.__class__ = varlen.SelfAttention
    if not bf16:
        return {
            "ours": infer_fn(runner_copy(ours, False), data, False, False),
            "plain": infer_fn(before, data, False, False),
            "transformers": infer_fn(ref, data, False, True),
            **ort,
        }
    cast = CastCopy(torch.nn.ModuleDict({"bert": ours}), ("bert",), torch.bfloat16).get()["bert"]
    return {
        "ours": infer_fn(runner_copy(ours, True), data, True, False),
        "unpacked": infer_fn(cast, data, True, False),
        "plain": infer_fn(before, data, True, False),
        "transformers": infer_fn(ref, data, True, True),
        "transformers, bf16 weights": infer_fn(copy.deepcopy(ref).to(torch.bfloat16).eval(), data, True, True),
    }


class _EmbedGraph(torch.nn.Module):
    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask):
        return self.bert.sentence_embedding(input_ids, attention_mask, pooling="mean")


def onnx_fns(ckpt, data, tmp: Path) -> dict:
    """ONNX Runtime sessions over our encoder exported from its static graph: graph optimizations on (ORT_ENABLE_ALL),
    and the same after onnxruntime.transformers' BERT fusions (attention, LayerNorm, GELU). {} without onnxruntime."""
    try:
        import onnxruntime as ort
        from onnxruntime.transformers.optimizer import optimize_model

        from minbert.export.onnx_files import onnx_file
    except ImportError:
        return {}
    bert = BertModel.from_pretrained(ckpt).eval()  # the textbook model: no branch on the data
    ids, mask, _ = data[0]
    path = onnx_file(
        _EmbedGraph(bert), {"input_ids": ids, "attention_mask": mask}, tmp / "embed.onnx", "sentence_embedding"
    )
    cfg = bert.config
    fused = tmp / "embed-fused.onnx"
    optimize_model(str(path), "bert", cfg.num_attention_heads, cfg.hidden_size).save_model_to_file(str(fused))
    fns = {}
    for name, file in (("onnxruntime", path), ("onnxruntime + BERT fusions", fused)):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(file), opts, providers=["CPUExecutionProvider"])
        feeds = [{"input_ids": i.numpy(), "attention_mask": m.numpy()} for i, m, _ in data]
        fns[name] = lambda s=session, f=feeds: [s.run(None, x) for x in f]
    return fns


def zeroing(weight) -> tuple[float, float]:
    """Milliseconds to get a zeroed gradient for `weight`: freshly allocated, and an already-mapped buffer zeroed."""
    buf, fresh, reuse = torch.zeros_like(weight), [], []
    for _ in range(20):
        t = time.perf_counter()
        torch.zeros_like(weight)
        fresh.append(time.perf_counter() - t)
        t = time.perf_counter()
        buf.zero_()
        reuse.append(time.perf_counter() - t)
    return statistics.median(fresh) * 1e3, statistics.median(reuse) * 1e3


def profile(fn, label: str, steps: int = 8) -> str:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as p:
        for _ in range(steps):
            fn()
    table = p.key_averages().table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=44)
    PROFILES.mkdir(exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    path = PROFILES / f"{stamp}-{label}.txt"
    path.write_text(f"torch.profiler, {steps} calls of {label}, sorted by self CPU time\n\n{table}\n")
    return str(path)


def top_ops(path: str, n: int = 8) -> str:
    """The profile's n largest operators as 'name share' text, for the results table."""
    lines = [
        ln
        for ln in Path(path).read_text().splitlines()
        if ln.strip().startswith(("aten::", "mkldnn::", "Optimizer", "autograd"))
    ]
    return ", ".join(f"{ln.split()[0]} {ln.split()[1]}" for ln in lines[:n])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--profile", action="store_true", help="write torch.profiler tables to benchmarks/profiles/")
    add_record_flag(ap)
    args = ap.parse_args()
    torch.manual_seed(0)
    ckpt = default_checkpoint_dir()
    train_data, infer_data = pass_data(ckpt)
    lengths = {
        k: [int(n) for _, m, _ in d for n in m.sum(1)] for k, d in (("train", train_data), ("infer", infer_data))
    }
    per_step = {"train": len(lengths["train"]) / len(train_data), "infer": len(lengths["infer"])}  # sentences per call
    ours = fast.install(BertModel.from_pretrained(ckpt), "cpu")
    # ours without the reused gradient buffer: PyTorch's embedding backward, a fresh gradient each step
    plain = fast.install(BertModel.from_pretrained(ckpt), "cpu", without=frozenset({cpu.WordEmbedding}))
    ref = transformers.BertModel.from_pretrained(ckpt, add_pooling_layer=False)
    flops = {
        k: real_flops(ours.config, lengths[k], k == "train") / (len(train_data) if k == "train" else 1) for k in lengths
    }
    rows, profiles, ort_rows, before, infer_rows, fp32_rows = [], [], [], [], [], []
    kernels = {"fp32": {}, "bf16": {}}
    zeros = zeroing(ours.embeddings.word_embeddings.weight)
    with tempfile.TemporaryDirectory() as tmp:
        ort = onnx_fns(ckpt, infer_data, Path(tmp))
        for precision in ("fp32", "bf16"):
            bf16 = precision == "bf16"
            peak = peak_fn(torch.bfloat16 if bf16 else torch.float32, kernels[precision])
            head = torch.nn.Linear(ours.config.hidden_size, 5)
            fns = {"train": {}}
            for name, model, opt, hf in (
                ("ours", ours, AdamW, False),
                ("transformers", ref, functools.partial(torch.optim.AdamW, fused=True), True),
                ("plain", plain, AdamW, False),
            ):
                h = copy.deepcopy(head)  # every side starts from the same head
                fns["train"][name] = train_fn(
                    model, h, opt([*model.parameters(), *h.parameters()], lr=1e-5), train_data, bf16, hf
                )
            for kind in ("train", "infer"):
                for m in (ours, ref, plain):
                    m.train(kind == "train")
                if kind == "infer":  # after the training steps, which moved ours: its bf16 copy is of these weights
                    fns["infer"] = infer_sides(ours, ref, infer_data, bf16, ort)
                t, p = interleaved(fns[kind], args.iters if kind == "train" else max(3, args.iters // 2), peak)
                o, r = t["ours"], t["transformers"]
                g = flops[kind] / o / 1e9
                rows.append(
                    f"| {precision} | {kind} | {per_step[kind] / o:.1f} | {per_step[kind] / r:.1f} | **{r / o:.2f}x** "
                    f"| {g:.0f} | {p:.0f} | **{g / p:.0%}** | {flops[kind] / r / 1e9 / p:.0%} |"
                )
                for name in ort if kind == "infer" and not bf16 else ():
                    ort_rows.append(f"| {name} | {per_step['infer'] / t[name]:.1f} | {t[name] / o:.2f}x |")
                # ours before -> after: sentences/s both ways and the ratio
                change = f"| {per_step[kind] / t['plain']:.1f} | {per_step[kind] / o:.1f} | **{t['plain'] / o:.2f}x** |"
                if kind == "train":
                    before.append(f"| {precision} {change}")
                elif not bf16:
                    fp32_rows.append(change)
                else:
                    w, u = t["transformers, bf16 weights"], t["unpacked"]
                    infer_rows.append(
                        f"| {per_step[kind] / t['plain']:.1f} | {per_step[kind] / u:.1f} | {per_step[kind] / o:.1f} "
                        f"| **{t['plain'] / o:.2f}x** | **{u / o:.2f}x** | {per_step[kind] / r:.1f} "
                        f"| {per_step[kind] / w:.1f} | **{min(r, w) / o:.2f}x** |"
                    )
                for name in ("ours", "plain") if args.profile else ():
                    if name in fns[kind]:
                        label = f"{precision}-{kind}{'-before' if name == 'plain' else ''}"
                        path = profile(fns[kind][name], label, 8 if kind == "train" else 2)
                        profiles.append(f"| {label} | `{os.path.relpath(path)}` | {top_ops(path)} |")
    table = [
        "| precision | pass | ours sentences/s | transformers sentences/s | ratio | ours GFLOP/s (real tokens) | matmul peak GFLOP/s | ours share of peak | transformers share |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    table += [
        "",
        "GEMM at the encoder's shapes, each kernel's best of the measurements between the calls (the peak is the "
        "best kernel's): "
        + "; ".join(
            f"{p} " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in kernels[p].items()) for p in ("fp32", "bf16")
        ),
    ]
    table += [
        "",
        "Training step, our encoder before and after reusing the word table's gradient buffer (same run, interleaved):",
        "",
        "| precision | before sentences/s | after | after / before |",
        "|---|---|---|---|",
        *before,
        "",
        f"The table's gradient ({tuple(ours.embeddings.word_embeddings.weight.shape)} fp32) in this run: a fresh `torch.zeros` "
        f"{zeros[0]:.1f} ms, zeroing an already-mapped buffer {zeros[1]:.1f} ms (medians of 20).",
    ]
    if infer_rows:
        table += [
            "",
            "bf16 inference, same run: ours before (autocast over fp32 weights, PyTorch's SDPA kernel), from the bf16 "
            "copy of its weights with plain weights (model/cast.py's CastCopy, attention with an fp32 softmax) and "
            "after (as `Runner` runs it: the same copy with its linear layers from weights packed for oneDNN where "
            f"model/onednn.py's `packs_bf16()` holds - here {packs_bf16()}), and transformers both ways a user runs "
            "it in bf16 (autocast; weights cast with `.to(torch.bfloat16)`):",
            "",
            "| ours before | bf16 copy, plain weights | ours after | after / before | after / plain weights | transformers, autocast | transformers, bf16 weights | ours vs transformers' faster |",
            "|---|---|---|---|---|---|---|---|",
            *infer_rows,
        ]
    if fp32_rows:
        table += [
            "",
            "fp32 inference, same run: ours before (F.linear, PyTorch's default fp32 GEMM: MKL) and after (as `Runner` "
            f"runs it: the linear layers through oneDNN where model/onednn.py's `faster_here()` holds - here {faster_here()}):",
            "",
            "| before sentences/s | after | after / before |",
            "|---|---|---|",
            *fp32_rows,
        ]
    if ort_rows:
        table += [
            "",
            "Inference in fp32 against ONNX Runtime (same batches, interleaved with the rows above):",
            "",
            "| | sentences/s | ours is faster by |",
            "|---|---|---|",
            *ort_rows,
        ]
    if profiles:
        table += [
            "",
            "Profiles of our passes (top operators by self CPU time, share of the profiled total):",
            "",
            "| pass | file | top operators |",
            "|---|---|---|",
            *profiles,
        ]
    setup = (
        f"embedded checkpoint (all-MiniLM-L6-v2, 6x384); training on 8 shuffled SST train batches of 32 "
        f"({sum(lengths['train']) // len(train_data)} real tokens a batch on average, padded to each batch's longest), "
        f"inference on 1,024 SST dev sentences in batches of 64; medians of {args.iters} training steps and "
        f"{max(3, args.iters // 2)} inference passes; torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
        ". "
        "Ours: unpadded (real tokens only), its CPU dropout and attention paths, minbert.optim.AdamW (fused kernel); "
        "the reference: transformers' BertModel (SDPA attention) with torch.optim.AdamW(fused=True). The matmul peak "
        "is the best of PyTorch's default kernel (in fp32 MKL), oneDNN's linear op and the same from a packed weight, "
        "at the same shapes."
    )
    record("bench_encoder", setup, "\n".join(table), write=args.record)


if __name__ == "__main__":
    main()
