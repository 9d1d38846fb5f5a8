"""The CUDA path checked end to end by one prepared command (issue 24). On a machine with a GPU, from the repository
root, with the checkpoint and data brought along (the GPU machine has no internet and receives the working tree plus
at most 64 MiB: `--prepare` writes both, the checkpoint in fp16):

    python benchmarks/gpu_check.py --prepare gpu_carry            # here, once: gpu_carry/checkpoint, gpu_carry/data
    PYTHONPATH=src python benchmarks/gpu_check.py --checkpoint gpu_carry/checkpoint --data-dir gpu_carry/data

It installs nothing, runs each check on its own (one failing does not stop the others), prints a table and writes
it to $OUT/gpu_check.md (when $OUT is set), and with `--record` appends it to benchmarks/log/; exit status
1 when any check failed. Checks: parity with transformers (fp32 within 1e-4, bf16 within a stated bound; padded, and
unpadded through the fused multitask pass); training in bf16 and in fp16 with the gradient scaler, fused pass on, a
short multitask run to completion (evaluation, prediction files); resume after a kill, compared with the run never
stopped; torchrun with one process (NCCL on CUDA); `compile: inductor`; export of the run (hf, and onnx where
onnxruntime is installed) checked against PyTorch; throughput against transformers (same batches, interleaved) on
the checkpoint and on a random 12 x 768 encoder, training and inference, with peak GPU memory; issue 44's: the jagged
flat layout against the buckets (states and time), the host syncs left in a training step, traced to our code, and
the real multitask step's sentences against transformers (real tokens/s, MFU where the device's peak is known, peak
memory, a profile of the top kernels in $OUT/profile-multitask.txt and the share of the step the GPU is busy).

`--device cpu --quick` runs the same checks on a tiny random encoder in about a minute: CI's smoke test
(tests/test_gpu_check.py), so the script cannot rot. It leaves out the two that other tests run on CPU and that cost
the most there: ONNX (tests/test_export.py) and compile (tests/test_switches.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
TASKS = ("sst", "quora", "sts")


def budget(quick: bool) -> list[str]:
    """A short multitask run: enough steps to checkpoint, evaluate and predict, small enough for minutes."""
    n, steps = (48, 4) if quick else (512, 40)
    return ["epochs=2", f"steps_per_epoch={steps}", f"checkpoint_every={steps // 2}", "log_every=1"] + [
        f"tasks.{t}.{k}={v}"
        for t in TASKS
        for k, v in (("train_limit", n), ("eval_limit", n), ("batch_size", 8 if quick else 32), ("max_length", 64))
    ]


# -- setup ----------------------------------------------------------------------------------------------------------


def prepare(dest: Path, rows: int = 3000) -> None:
    """Write what the GPU machine needs into `dest`: the embedded checkpoint in fp16 (under 64 MiB with the data)
    and the first `rows` rows of each CS224N file."""
    from safetensors.torch import load_file, save_file

    from minbert.data import data_dir
    from minbert.model import default_checkpoint_dir

    src, ck, data = default_checkpoint_dir(), dest / "checkpoint", dest / "data"
    ck.mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    weights = {
        k: v.half() if v.is_floating_point() else v for k, v in load_file(str(src / "model.safetensors")).items()
    }
    save_file(weights, str(ck / "model.safetensors"))
    for f in ("config.json", "vocab.txt", "tokenizer_config.json"):
        if (src / f).is_file():
            shutil.copy(src / f, ck / f)
    for f in sorted(data_dir().glob("*.csv")):
        lines = f.read_text(encoding="utf-8").splitlines(keepends=True)
        (data / f.name).write_text("".join(lines[: rows + 1]), encoding="utf-8")
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"{dest}: {size / 2**20:.1f} MiB: carry it to the GPU machine (the device tool's carry=['{dest}'])")


def tiny_checkpoint(dest: Path) -> Path:
    """A random 2-layer encoder in Hugging Face layout with the embedded checkpoint's vocabulary (for --quick)."""
    from minbert.model import BertConfig, BertModel, default_checkpoint_dir
    from minbert.runs import save_tensors

    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    dest.mkdir(parents=True, exist_ok=True)
    save_tensors(dest / "model.safetensors", BertModel(cfg).state_dict())
    (dest / "config.json").write_text(cfg.to_json())
    shutil.copy(default_checkpoint_dir() / "vocab.txt", dest / "vocab.txt")
    return dest


def train(args, out: Path, *extra: str, torchrun: bool = False, wait: bool = True):
    # torch.distributed.run is torchrun without relying on the script being on PATH (the GPU image's venv)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1", "-m"]
    launcher = launcher if torchrun else [sys.executable, "-m"]
    cmd = [*launcher, "minbert", "train", str(QUICKSTART), *budget(args.quick), f"device={args.device}",
           f"checkpoint={args.checkpoint}", f"data_dir={args.data_dir}", f"out={out}", *extra]  # fmt: skip
    env = child_env()
    if not wait:  # its output to a file beside the run: a pipe nobody reads would fill and stop it
        with open(out.with_name(out.name + ".log"), "w") as log:
            return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # fmt: skip
    try:
        out_, err = proc.communicate(timeout=left())
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise RuntimeError(
            f"minbert train did not end before the check's deadline (--time-limit {args.time_limit:g} s)"
        )
    if proc.returncode:
        failure(f"minbert train {out.name}", err)
        raise RuntimeError(f"minbert train exited {proc.returncode}: {err.strip().splitlines()[-1:]}")
    return out_ + err


def child_env() -> dict:
    """The environment of the commands the checks start: this checkout's src first on the path."""
    return {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}


def run_minbert(*argv: str) -> subprocess.CompletedProcess:
    """`python -m minbert ARGV` to its end (or the deadline); a failure's stderr goes to failures.txt, then fails
    the check with its last line."""
    done = subprocess.run([sys.executable, "-m", "minbert", *argv], capture_output=True, text=True, env=child_env(),
                          timeout=left())  # fmt: skip
    if done.returncode:
        failure(f"minbert {' '.join(argv[:2])}", done.stderr)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]
    return done


def failure(what: str, err: str) -> None:
    """A failed command's stderr, its last 40 lines, to $OUT/failures.txt: the table has room for one line."""
    if os.environ.get("OUT"):
        tail = "\n".join(err.strip().splitlines()[-40:])
        with open(Path(os.environ["OUT"], "failures.txt"), "a") as f:
            f.write(f"== {what}\n{tail}\n\n")


def finished(run: Path) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    assert all(v == v for v in summary["dev"].values()), f"non-finite dev metrics {summary['dev']}"
    files = sorted(p.name for p in (run / "predictions").glob("*.csv"))
    assert files, "no prediction files"
    return summary


# -- checks ---------------------------------------------------------------------------------------------------------


def check_parity(args, work: Path) -> str:
    """Our encoder against transformers.BertModel on the same weights and sentences: fp32 and bf16 autocast,
    padded (model.forward) and unpadded (the fused multitask pass's flat layout)."""
    import transformers

    from minbert.data import Tokenizer, pad
    from minbert.model import BertModel, fast

    dev = torch.device(args.device)
    ours = fast.install(BertModel.from_pretrained(args.checkpoint).float().to(dev), dev.type).eval()
    theirs = transformers.BertModel.from_pretrained(args.checkpoint).float().to(dev).eval()
    tok = Tokenizer.from_pretrained(args.checkpoint)
    texts = ["a gorgeous, witty film", "a tedious mess that never finds its footing, and a long one at that", "ok"]
    ids, mask = (t.to(dev) for t in pad(tok.encode(texts, 64), tok.pad_id))
    real = mask.bool()
    rows = []
    for name, dtype, bound in (("fp32", None, 1e-4), ("bf16", torch.bfloat16, 0.1)):
        ctx = torch.autocast(dev.type, dtype=dtype) if dtype else torch.autocast(dev.type, enabled=False)
        with torch.no_grad(), ctx:
            a = ours(ids, mask)[0].float()
            b = theirs(input_ids=ids, attention_mask=mask).last_hidden_state.float()
            flat = unpadded(ours, ids, mask)
        if dtype is None:
            ref = b[real]  # bf16 is compared with fp32 transformers: its own rounding is the bound's point
        d_pad, d_flat = (a[real] - ref).abs().max().item(), (flat - ref).abs().max().item()
        assert d_pad <= bound and d_flat <= bound, f"{name}: max |diff| padded {d_pad:.2e}, unpadded {d_flat:.2e}"
        rows.append(f"{name} padded {d_pad:.1e}, unpadded {d_flat:.1e} (bound {bound:g})")
    return "; ".join(rows)


def unpadded(model, ids, mask) -> torch.Tensor:
    """The real tokens' states (N, H) through the flat varlen layout the fused multitask pass uses
    (model/fast/varlen.py), forced by extra padding whatever the batch."""
    from minbert.model.fast import varlen

    with_padding = torch.nn.functional.pad(mask, (0, varlen.MIN_PADDING))  # (B, T + pad): enough padding to unpad
    v, real = varlen.unpad(with_padding)
    ids = torch.nn.functional.pad(ids, (0, varlen.MIN_PADDING))  # (B, T + pad), padded with id 0
    x = model.embeddings(ids)  # (B, T', H)
    B, T, H = x.shape
    y = model.encoder(x.reshape(B * T, H).index_select(0, real), v).float()  # (N, H), the layout's order
    grid = y.new_zeros(B * T, H).index_copy(0, real, y).view(B, T, H)  # (B, T', H)
    return grid[:, : mask.shape[1]][mask.bool()]  # (N, H) in row order, as a padded batch's real tokens


def check_train(args, work: Path, precision: str) -> str:
    """A short multitask run to completion with the fused pass. The bf16 run leaves the device to `auto`, and on a
    GPU with bf16 the precision too, and checks what they chose (the log names both)."""
    run = work / f"train-{precision}"
    if precision != "bf16":
        log = train(args, run, f"precision={precision}", "fused=true")
    else:
        auto = args.device == "cuda" and torch.cuda.is_bf16_supported()  # a CPU's auto may rightly pick fp32
        log = train(args, run, "device=auto", f"precision={'auto' if auto else 'bf16'}", "fused=true")
        assert f"device {args.device}" in log, f"device=auto did not pick {args.device}"
        assert f"precision bf16{' (auto)' if auto else ''}" in log, "the run's log names another precision"
    s = finished(run)
    state = json.loads(next((run / "checkpoints").glob("last-*/state.json")).read_text())
    if precision == "fp16":
        scale = state["techniques"]["scaler"].get("scale", 0)
        assert scale > 0, "fp16 without a gradient scaler state"
    return f"{s['steps']} steps, dev overall {s['dev']['overall']:.4f}, {s['wall_time_s']:.0f} s"


def check_resume(args, work: Path, deterministic: bool = False) -> str:
    """A run killed after its first checkpoint and resumed ends with the weights of the run never stopped (on CUDA
    bit-exact only if its kernels are deterministic: the largest difference is reported; `deterministic` runs both
    with torch.use_deterministic_algorithms). The two runs go side by side."""
    from safetensors.torch import load_file

    if deterministic and args.device == "cpu":
        return "skipped on CPU: its kernels are deterministic already (the check above)"
    tag = "-deterministic" if deterministic else ""
    full, killed = work / f"resume-full{tag}", work / f"resume-killed{tag}"
    extra = ("precision=fp32", *(("deterministic=true",) if deterministic else ()))
    whole = train(args, full, *extra, wait=False)
    proc = train(args, killed, *extra, wait=False)
    while not (killed / "last.json").is_file():
        if left() <= 1:
            os.killpg(proc.pid, signal.SIGKILL)
        assert proc.poll() is None, "the run ended (or met the deadline) before its first checkpoint"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists(), "the kill came after the run ended"
    run_minbert("train", "--resume", str(killed))
    whole.wait(timeout=left())
    err = full.with_name(full.name + ".log").read_text()
    if whole.returncode:
        failure(f"minbert train {full.name}", err)
    assert whole.returncode == 0, f"the run never stopped exited {whole.returncode}: {err.strip().splitlines()[-1:]}"

    def weights(run):
        return load_file(str(sorted((run / "checkpoints").glob("last-*"))[-1] / "model.safetensors"))

    a, b = weights(full), weights(killed)
    diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    exact = all(torch.equal(a[k], b[k]) for k in a)
    assert diff < 1e-3, f"resumed weights differ by {diff:.2e}"
    return "bit-exact" if exact else f"max |diff| {diff:.1e} (not bit-exact: nondeterministic kernels)"


def check_torchrun(args, work: Path) -> str:
    log = train(args, work / "torchrun", "precision=fp32", torchrun=True)
    backend = "nccl" if args.device == "cuda" else "gloo"
    assert f"backend {backend}" in log, f"the log does not name backend {backend}"
    finished(work / "torchrun")
    return f"1 process, backend {backend}"


def check_compile(args, work: Path) -> str:
    if args.quick and args.device == "cpu":  # tests/test_switches.py checks compile on CPU, where dynamo's tracing
        return "compile skipped (--quick on CPU)"  # of each new shape makes it the smoke's slowest check
    backend = "inductor" if args.device == "cuda" else "eager"  # inductor on CPU needs a C++ toolchain
    log = train(args, work / "compile", "precision=fp32", f"compile={backend}")
    assert "running eagerly" not in log and "leaves the layers eager" not in log, "compile fell back to eager"
    s = finished(work / "compile")
    return f"compile={backend}: {s['steps']} steps, {s['wall_time_s']:.0f} s"


def check_export(args, work: Path) -> str:
    """The bf16 run exported for transformers (and ONNX where onnxruntime is installed) predicts what it does."""
    import importlib.util

    import transformers

    import minbert
    from minbert.data import pad

    run = work / "train-bf16"
    assert run.is_dir(), "needs the train-bf16 check's run"
    run_minbert("export", str(run), str(work / "hf"), "--format", "hf")
    m = minbert.load(run, device="cpu")
    texts = ["a gorgeous, witty film", "a tedious mess"]
    exported = transformers.AutoModel.from_pretrained(work / "hf").eval()
    ids, mask = pad(m.run.tok.encode(texts, 64), m.run.tok.pad_id)
    with torch.no_grad():
        hf = exported(input_ids=ids, attention_mask=mask).last_hidden_state
        ours = m.run.model.bert.float()(ids, mask)[0]
    d = (hf - ours)[mask.bool()].abs().max().item()
    assert d < 1e-4, f"hf export differs by {d:.1e}"
    result = f"hf max |diff| {d:.1e}"
    if args.quick:  # tests/test_export.py checks ONNX on CPU; the smoke keeps to seconds
        return result + "; onnx skipped (--quick)"
    if importlib.util.find_spec("onnxruntime") is None:
        return result + "; onnx skipped (onnxruntime not installed)"
    run_minbert("export", str(run), str(work / "onnx"), "--format", "onnx")
    return result + "; onnx checked against PyTorch by the export itself"


def timed_pair(fa, fb, iters: int, sync) -> tuple[float, float]:
    """Median seconds per call of fa and fb, interleaved (alternating which goes first)."""
    for _ in range(2):
        fa(), fb()
    sync()
    ta, tb = [], []
    for i in range(iters):
        for f, acc in ((fa, ta), (fb, tb)) if i % 2 == 0 else ((fb, tb), (fa, ta)):
            t = time.perf_counter()
            f()
            sync()
            acc.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb)


def check_speed(args, work: Path) -> str:
    """Ours against transformers on the same batches: a training step (forward, backward, AdamW) and inference,
    bf16 autocast where the device has it, on the checkpoint and on a random 12 x 768 encoder."""
    import transformers

    from minbert.model import BertConfig, BertModel

    dev = torch.device(args.device)
    dtype = torch.bfloat16 if (dev.type == "cpu" or torch.cuda.is_bf16_supported()) else torch.float16
    batch, length, iters = (4, 16, 3) if args.quick else (64, 128, 10)
    rows = []
    for name, cfg in [("checkpoint", None)] + ([] if args.quick else [("12x768 random", BertConfig())]):
        if cfg is None:
            ours = BertModel.from_pretrained(args.checkpoint).float()
            theirs = transformers.BertModel.from_pretrained(args.checkpoint).float()
        else:
            ours = BertModel(cfg)
            theirs = transformers.BertModel(transformers.BertConfig(**json.loads(cfg.to_json())))
        rows.append(f"{name}: " + speed_row(ours.to(dev), theirs.to(dev), dev, dtype, batch, length, iters))
    return "; ".join(rows) + f" ({str(dtype).removeprefix('torch.')}, batch {batch} x {length})"


def timing_batch(vocab_size: int, batch: int, length: int, dev) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids (batch, length) and their mask, half the batch padded to half its length."""
    ids = torch.randint(1000, vocab_size, (batch, length), device=dev)
    mask = torch.ones_like(ids)
    mask[: batch // 2, length // 2 :] = 0
    return ids, mask


def train_step(model, opt, ids, mask, dtype, hf: bool = False) -> None:
    """One timed training step: forward under autocast, a mean loss, backward, the optimizer's step."""
    with torch.autocast(ids.device.type, dtype=dtype):
        h = model(input_ids=ids, attention_mask=mask).last_hidden_state if hf else model(ids, mask)[0]
    h.float().mean().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def speed_row(ours, theirs, dev, dtype, batch: int, length: int, iters: int) -> str:
    from minbert.model import fast
    from minbert.optim import AdamW

    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    fast.install(ours, dev.type)
    ids, mask = timing_batch(ours.config.vocab_size, batch, length, dev)
    opt_a = AdamW(ours.parameters(), lr=1e-5)
    opt_b = torch.optim.AdamW(theirs.parameters(), lr=1e-5, fused=cuda)

    def step(model, opt, hf):
        train_step(model, opt, ids, mask, dtype, hf)

    def infer(model, hf):
        with torch.inference_mode(), torch.autocast(dev.type, dtype=dtype):
            model(input_ids=ids, attention_mask=mask) if hf else model(ids, mask)

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    ours.train(), theirs.train()
    ta, tb = timed_pair(lambda: step(ours, opt_a, False), lambda: step(theirs, opt_b, True), iters, sync)
    ours.eval(), theirs.eval()
    ia, ib = timed_pair(lambda: infer(ours, False), lambda: infer(theirs, True), iters, sync)
    peak = f", peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if cuda else ""
    return (f"train {batch / ta:.0f} vs {batch / tb:.0f} ex/s ({tb / ta:.2f}x), "
            f"inference {batch / ia:.0f} vs {batch / ib:.0f} ex/s ({ib / ia:.2f}x){peak}")  # fmt: skip


PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16, by the device name's model


def encoder_flops_per_token(c, tokens_per_sentence: float) -> float:
    """Issue 44's count for a training step: 3 x (2 L (4 H^2 + 2 H I) + 4 L T H) per token, T the mean sentence
    length (attention's scores and mixing)."""
    L, H, inner = c.num_hidden_layers, c.hidden_size, c.intermediate_size
    return 3 * (2 * L * (4 * H * H + 2 * H * inner) + 4 * L * tokens_per_sentence * H)


def check_multitask_speed(args, work: Path) -> str:
    """The workload that matters (issue 44): a real multitask step's sentences (the quickstart's three task batches
    of 32) through the encoder, forward and backward under bf16 autocast with AdamW - ours by the fused flat pass,
    transformers.BertModel on each task's padded batch with torch.optim.AdamW(fused) - interleaved, on the
    checkpoint and (not --quick) a random 12 x 768 encoder; real tokens per second, model FLOPs utilization on real
    tokens where the device's peak is known, peak memory, and a torch.profiler table of ours (top kernels, the
    share of the step the device is busy) in $OUT/profile-multitask.txt."""
    import transformers

    from minbert.config import load_config
    from minbert.model import BertConfig, BertModel, fast
    from minbert.model.fast import varlen
    from minbert.model.multitask import flatten
    from minbert.multitask.config import TrainConfig
    from minbert.multitask.data import BatchStream, step_batches
    from minbert.multitask.run import load_data
    from minbert.optim import AdamW

    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    dtype = torch.bfloat16 if (not cuda or torch.cuda.is_bf16_supported()) else torch.float16
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    cfg = load_config(TrainConfig, QUICKSTART, budget(args.quick) + [f"data_dir={args.data_dir}"]).validate()
    from minbert.data import Tokenizer

    tok = Tokenizer.from_pretrained(args.checkpoint)
    data = load_data(cfg, tok, ("train",))["train"]
    streams = {n: BatchStream(n, d.lengths, cfg.task(n).batch_size, cfg.seed) for n, d in data.items()}
    steps = [step_batches(data, {n: s.next() for n, s in streams.items()}, tok.pad_id, dev)[0][0] for _ in range(4)]
    flats = [flatten(b) for b in steps]
    real = sum(int(b.on_host().mask.sum()) for batches in steps for b in batches.values()) / len(steps)
    sentences = sum(b.on_host().mask.shape[0] for batches in steps for b in batches.values()) / len(steps)
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if cuda and k in torch.cuda.get_device_name()), None)
    iters = 3 if args.quick else 10
    rows = []
    encoders = [("checkpoint", None)] + ([] if args.quick else [("12x768 random", BertConfig())])
    for name, c in encoders:
        if c is None:
            ours, theirs = (
                BertModel.from_pretrained(args.checkpoint),
                transformers.BertModel.from_pretrained(args.checkpoint),
            )
        else:
            ours = BertModel(c)
            theirs = transformers.BertModel(transformers.BertConfig(**json.loads(c.to_json())))
        ours = fast.install(ours.float().to(dev), dev.type).train()
        theirs = theirs.float().to(dev).train()
        opt_a, opt_b = AdamW(ours.parameters(), lr=1e-5), torch.optim.AdamW(theirs.parameters(), lr=1e-5, fused=cuda)
        k = [0]

        def ours_step():
            f = flats[k[0] % len(flats)]
            k[0] += 1
            with torch.autocast(dev.type, dtype=dtype):
                h = ours.encoder(ours.embeddings(f.ids, f.types, f.layout.positions), f.layout)
            h.float().mean().backward()
            opt_a.step()
            opt_a.zero_grad(set_to_none=True)

        j = [0]

        def theirs_step():
            batches = steps[j[0] % len(steps)]
            j[0] += 1
            with torch.autocast(dev.type, dtype=dtype):
                loss = sum(
                    theirs(input_ids=b.ids, attention_mask=b.mask, token_type_ids=b.types)
                    .last_hidden_state.float()
                    .mean()
                    for b in batches.values()
                )
            loss.backward()
            opt_b.step()
            opt_b.zero_grad(set_to_none=True)

        if cuda:
            torch.cuda.reset_peak_memory_stats()
        ta, tb = timed_pair(ours_step, theirs_step, iters, sync)
        mem = f", peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if cuda else ""
        mfu = ""
        if peak:
            flops = encoder_flops_per_token(ours.config, real / sentences) * real / ta
            mfu = f", MFU {flops / (peak * 1e12):.1%} on real tokens"
        rows.append(f"{name}: {real / ta:,.0f} vs {real / tb:,.0f} real tokens/s ({tb / ta:.2f}x){mfu}{mem}")
        if name == "checkpoint" and os.environ.get("OUT"):
            activities = [torch.profiler.ProfilerActivity.CPU] + (
                [torch.profiler.ProfilerActivity.CUDA] if cuda else []
            )
            sync()
            t = time.perf_counter()
            with torch.profiler.profile(activities=activities) as prof:
                for _ in range(3):
                    ours_step()
                sync()
            wall = time.perf_counter() - t
            table = prof.key_averages().table(sort_by="cuda_time_total" if cuda else "cpu_time_total", row_limit=15)
            Path(os.environ["OUT"], "profile-multitask.txt").write_text(table)
            if cuda:  # the kernels' own time against the wall clock: what is left is launch and host overhead
                busy = sum(getattr(e, "self_device_time_total", 0) for e in prof.key_averages()) / 1e6 / wall
                rows[-1] += f", GPU busy {busy:.0%} of the profiled steps"
    varlen_note = "jagged" if varlen.JAGGED_DEVICES else "buckets"
    precision = str(dtype).removeprefix("torch.")
    return (
        "; ".join(rows) + f" ({real:.0f} real tokens in {sentences:.0f} sentences a step, {varlen_note}, {precision})"
    )


def check_compile_speed(args, work: Path) -> str:
    """Does compiling pay once compiled? A training step of the checkpoint with its layers compiled as `compile:
    inductor` compiles them (model/compile.py), and with the whole encoder compiled as one graph (issue 44: fewer,
    larger kernels; static shapes here, the synthetic padded batch), each against the eager step, same batches,
    interleaved, after the compiled models' first steps (which the detail gives: the compile time a run pays once).
    On a CPU the same steps, small, with dynamo's "eager" backend: the code path, no timing worth reading. A graph
    that fails to compile runs eagerly (model/compile.py turns on dynamo's suppress_errors): a ratio near 1 with
    first steps as fast as eager ones means nothing was compiled."""
    import copy

    from minbert.model import BertModel, fast
    from minbert.model.compile import compile_layers
    from minbert.optim import AdamW

    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    dtype = torch.bfloat16 if not cuda or torch.cuda.is_bf16_supported() else torch.float16
    backend = "inductor" if cuda else "eager"  # inductor on a CPU needs a C++ toolchain (tests/test_switches.py)
    batch, length, iters = (64, 128, 10) if cuda and not args.quick else (4, 16, 2)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    eager = fast.install(BertModel.from_pretrained(args.checkpoint).float().to(dev), dev.type).train()
    layers, whole = copy.deepcopy(eager), copy.deepcopy(eager)
    assert compile_layers(layers, backend), "compile_layers fell back to eager"
    whole.encoder.compile(backend=backend, dynamic=False)
    ids, mask = timing_batch(eager.config.vocab_size, batch, length, dev)  # as the throughput check's
    opts = {id(m): AdamW(m.parameters(), lr=1e-5) for m in (eager, layers, whole)}

    def step(model):
        train_step(model, opts[id(model)], ids, mask, dtype)

    rows = []
    for name, model in (("layers compiled", layers), ("encoder compiled whole", whole)):
        t = time.perf_counter()
        for _ in range(3):
            step(model)
        sync()
        first = time.perf_counter() - t
        tc, te = timed_pair(lambda: step(model), lambda: step(eager), iters, sync)  # noqa: B023 (called here)
        rows.append(
            f"{name} {batch / tc:.0f} vs eager {batch / te:.0f} ex/s ({te / tc:.2f}x), first 3 steps {first:.0f} s"
        )
    return "; ".join(rows) + f" ({backend}, {str(dtype).removeprefix('torch.')}, batch {batch} x {length})"


# (name, check, phase): the checks of a phase run side by side (--jobs), the phases one after another: export reads
# the bf16 run, and the throughput checks have the device to themselves
def check_syncs(args, work: Path) -> str:
    """Host syncs in a training step (issue 44: a GPU step has none): the quickstart's fused bf16 step - the
    sync-free step of multitask/stepper.py - after two warm-up steps, two steps under
    torch.cuda.set_sync_debug_mode("warn"), each synchronizing call traced to the innermost line of minbert's own code;
    fails where there is any. On a CPU the same steps run, with nothing to count."""
    import warnings

    from _step import step_runner  # benchmarks/_step.py

    from minbert.config import load_config
    from minbert.multitask.config import TrainConfig
    from minbert.multitask.run import build

    dev = torch.device(args.device)
    extra = [f"checkpoint={args.checkpoint}", f"data_dir={args.data_dir}", "precision=bf16", "fused=true"]
    cfg = load_config(TrainConfig, QUICKSTART, budget(args.quick) + extra).validate()
    model, tok = build(cfg, dev)
    step = step_runner(cfg, model, tok, dev)
    step(0), step(1)
    if dev.type != "cuda":
        step(2), step(3)
        return "CUDA only: on the CPU the fused bf16 steps ran, with no device to sync"
    src = str(ROOT / "src" / "minbert")
    where: dict[str, int] = {}
    shown = warnings.showwarning

    def trace(message, category, filename, lineno, file=None, line=None):
        ours = [f for f in traceback.extract_stack() if f.filename.startswith(src)]
        key = f"{Path(ours[-1].filename).relative_to(src)}:{ours[-1].lineno} {ours[-1].name}" if ours else filename
        where[key] = where.get(key, 0) + 1

    torch.cuda.synchronize()
    warnings.showwarning = trace
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = trace
            step(2), step(3)
    finally:
        torch.cuda.set_sync_debug_mode("default")
        warnings.showwarning = shown
    listed = ", ".join(f"{k} x{v}" for k, v in sorted(where.items(), key=lambda kv: -kv[1]))
    if where:
        raise AssertionError(f"{sum(where.values())} syncs in 2 steps: {listed}")
    return "no sync in 2 steps (the sync-free step)"


def check_jagged(args, work: Path) -> str:
    """The jagged flat layout (nested-jagged SDPA over the whole run, model/fast/varlen.py; issue 44) against the
    buckets the flat pass uses today: the same states, and the encoder's forward + backward on the sentence lengths
    of a multitask step (3 tasks x 32 sentences of 8-47 tokens), interleaved, bf16 autocast where the device has it."""
    from minbert.model import BertModel, fast
    from minbert.model.fast import varlen

    dev = torch.device(args.device)
    dtype = torch.bfloat16 if (dev.type == "cpu" or torch.cuda.is_bf16_supported()) else torch.float16
    model = fast.install(BertModel.from_pretrained(args.checkpoint).float().to(dev), dev.type)
    g = torch.Generator().manual_seed(0)
    lengths = sorted(torch.randint(8, 48, (96,), generator=g).tolist(), reverse=True)
    ids = torch.randint(1000, 2000, (sum(lengths),), generator=g).to(dev)
    layouts = {k: varlen.layout(lengths, dev, jagged=k == "jagged") for k in ("buckets", "jagged")}

    def encode(v):
        return model.encoder(model.embeddings(ids, None, v.positions), v)

    model.eval()
    with torch.no_grad():
        d = (encode(layouts["buckets"]) - encode(layouts["jagged"])).abs().max().item()
    assert d <= 1e-4, f"fp32 states: max |diff| {d:.2e}"
    model.train()

    def step(v):
        with torch.autocast(dev.type, dtype=dtype):
            y = encode(v)
        y.float().square().mean().backward()

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    iters = 3 if args.quick else 20
    tb, tj = timed_pair(lambda: step(layouts["buckets"]), lambda: step(layouts["jagged"]), iters, sync)
    return (
        f"fp32 states max |diff| {d:.1e}; forward + backward {tb * 1e3:.1f} ms buckets, {tj * 1e3:.1f} ms jagged "
        f"({tb / tj:.2f}x), {sum(lengths)} tokens in {len(lengths)} sentences, {str(dtype).removeprefix('torch.')}"
    )


CHECKS = [
    ("parity with transformers", check_parity, 0),
    ("jagged layout vs buckets", check_jagged, 4),  # phases of their own: a timing, and a global debug mode
    ("host syncs in a step", check_syncs, 5),
    ("train bf16, fused", lambda a, w: check_train(a, w, "bf16"), 0),
    ("train fp16 + GradScaler, fused", lambda a, w: check_train(a, w, "fp16"), 0),
    ("resume after a kill", check_resume, 0),
    ("resume, deterministic algorithms", lambda a, w: check_resume(a, w, deterministic=True), 0),
    ("torchrun, 1 process", check_torchrun, 0),
    ("torch.compile", check_compile, 0),
    ("export hf / onnx", check_export, 1),
    ("throughput vs transformers", check_speed, 2),
    ("multitask step vs transformers", check_multitask_speed, 6),
    ("compiled step vs eager", check_compile_speed, 3),
]

DEADLINE = float("inf")  # set by main from --time-limit


def left() -> float:
    """Seconds to the script's deadline, for the subprocesses' timeouts (at least 1)."""
    return max(1.0, DEADLINE - time.monotonic())


def environment(args) -> str:
    if args.device == "cuda":
        p = torch.cuda.get_device_properties(0)
        return (f"{p.name}, {p.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}, torch {torch.__version__}, "
                f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}")  # fmt: skip
    return f"CPU ({os.cpu_count()} cores), torch {torch.__version__}"


def main(argv=None) -> int:
    sys.path.insert(0, str(Path(__file__).parent))
    from _record import add_record_flag, record  # benchmarks/_record.py

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cuda", "cpu"))
    p.add_argument("--quick", action="store_true", help="a tiny random encoder and a few steps (CI's smoke test)")
    p.add_argument("--checkpoint", help="a Hugging Face BERT folder (default: the embedded one; --quick: a tiny one)")
    p.add_argument("--data-dir", help="the CS224N files (default: minbert's data folder)")
    p.add_argument("--only", nargs="*", help="run only the checks whose name starts with one of these words")
    add_record_flag(p)
    p.add_argument("--jobs", type=int, help="checks run side by side within a phase (default: 4 on cuda, 1 on cpu)")
    p.add_argument(
        "--time-limit",
        type=float,
        default=900.0,
        help="seconds for all checks: a check not started by then is skipped, a run past it stopped",
    )
    p.add_argument("--prepare", metavar="DIR", help="write the fp16 checkpoint and data subsets to carry, and stop")
    args = p.parse_args(argv)
    args.jobs = args.jobs or (4 if args.device == "cuda" else 1)
    if args.prepare:
        prepare(Path(args.prepare))
        return 0
    from minbert.data import data_dir
    from minbert.model import default_checkpoint_dir

    work = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    args.checkpoint = str(
        args.checkpoint or (tiny_checkpoint(work / "tiny") if args.quick else default_checkpoint_dir())
    )
    args.data_dir = str(args.data_dir or data_dir())
    global DEADLINE
    DEADLINE = time.monotonic() + args.time_limit
    chosen = [c for c in CHECKS if not args.only or any(c[0].startswith(w) for w in args.only)]
    rows: dict[str, str] = {}
    lock = threading.Lock()
    setup = f"{environment(args)}; checkpoint {args.checkpoint}; {'quick' if args.quick else 'full'} budget"
    setup += f"; checks of a phase side by side, --jobs {args.jobs}"

    def run_one(name, fn) -> bool:
        t = time.perf_counter()
        if DEADLINE - time.monotonic() < 5:
            result, ok = f"not started: the --time-limit of {args.time_limit:g} s was spent", "SKIPPED"
        else:
            try:
                result, ok = fn(args, work), "ok"
            except Exception as e:  # each check on its own: report it and go on
                result, ok = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}", "FAILED"
                traceback.print_exc()
        with lock:
            rows[name] = f"| {name} | {ok} | {result} | {time.perf_counter() - t:.0f} s |"
            print(rows[name], flush=True)
            write_table()  # after every check: a run stopped from outside still leaves the rows it finished
        return ok == "ok"

    def write_table() -> str:
        body = [rows[n] for n, _, _ in chosen if n in rows]
        table = "\n".join(["| check | result | detail | time |", "|---|---|---|---|", *body])
        if os.environ.get("OUT"):
            Path(os.environ["OUT"], "gpu_check.md").write_text(f"{setup}\n\n{table}\n")
        return table

    results = []
    for phase in sorted({c[2] for c in chosen}):
        group = [(n, fn) for n, fn, ph in chosen if ph == phase]
        with ThreadPoolExecutor(max_workers=max(1, min(args.jobs, len(group)))) as pool:
            results += list(pool.map(lambda c: run_one(*c), group))
    failed = results.count(False)
    table = write_table()
    record("GPU check", setup, table, write=args.record)
    shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
