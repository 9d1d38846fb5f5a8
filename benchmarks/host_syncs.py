"""Every value a training step reads back from its device, found without a GPU (issue 44: a GPU step should read
none). The quickstart's model and batches are moved to PyTorch's meta device - shapes without values, so that each
read of a value (`Tensor.item`, `bool(tensor)`, `float(tensor)`, `.tolist()`) is one a GPU would make the host
wait for - with the classes a CUDA device gets (model/fast), and one step runs with those reads answered by a
stand-in value and counted by the line of minbert's code that made them, and so is each blocking copy from the
host to the device (a copy without non_blocking=True, which on a GPU waits for the device). Run from the repository root:

    python benchmarks/host_syncs.py [key=value ...]      # e.g. combiner=pcgrad, weighting=uw, fused=false

A read the meta device cannot answer at all (a copy of a tensor to the CPU, as the aggregators' solvers make) ends
the step there and is named. On a GPU, benchmarks/gpu_check.py's "host syncs in a step" counts the real ones.
"""

from __future__ import annotations

import collections
import sys
import traceback
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
SRC = str(ROOT / "src" / "minbert")


def ours() -> str:
    """The innermost line of minbert's code on the stack."""
    frames = [f for f in traceback.extract_stack() if f.filename.startswith(SRC)]
    if not frames:
        return "?"
    f = frames[-1]
    return f"{Path(f.filename).relative_to(SRC)}:{f.lineno} {f.name}: {f.line}"


class BlockingCopies(TorchDispatchMode):
    """Counts each copy of a CPU tensor to the (meta) device made without non_blocking=True, by our line of code."""

    def __init__(self, reads: collections.Counter):
        super().__init__()
        self.reads = reads

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._to_copy.default:
            src, dst, blocking = args[0], kwargs.get("device"), not kwargs.get("non_blocking", False)
        elif func is torch.ops.aten.copy_.default:
            dst, src = args[0].device, args[1]
            blocking = not (args[2] if len(args) > 2 else kwargs.get("non_blocking", False))
        else:
            src = dst = None
        if dst is not None and torch.device(dst).type == "meta" and src.device.type == "cpu" and blocking:
            self.reads[f"blocking copy to the device at {ours()}"] += 1
        return func(*args, **kwargs)


def main(argv: list[str]) -> int:
    from _step import step_runner  # benchmarks/_step.py (the script's folder is on sys.path)

    import minbert.multitask.stepper as stepper
    from minbert.config import load_config
    from minbert.multitask.config import TrainConfig
    from minbert.multitask.run import build

    small = ["epochs=1", "steps_per_epoch=1"] + [f"tasks.{t}.train_limit=64" for t in ("sst", "quora", "sts")]
    cfg = load_config(TrainConfig, ROOT / "configs" / "quickstart.yaml", small + ["fused=true", *argv]).validate()
    model, tok = build(cfg, torch.device("cpu"))
    meta = torch.device("meta")
    model.to(meta).run_on("cuda")  # the classes a CUDA device gets
    stepper.SYNC_FREE_DEVICES.add("meta")  # and the step a CUDA device gets (multitask/stepper.py)
    step = step_runner(cfg, model, tok, meta)

    reads: collections.Counter[str] = collections.Counter()
    real = {k: getattr(torch.Tensor, k) for k in ("item", "__bool__", "__float__", "tolist")}
    stand_in = {"item": 0.5, "__bool__": True, "__float__": 0.5}

    def counted(kind):
        def read(self):
            if self.device.type != "meta":
                return real[kind](self)
            reads[f"{kind.strip('_')} at {ours()}"] += 1
            return stand_in[kind] if kind in stand_in else torch.zeros(self.shape).tolist()

        return read

    for kind in real:
        setattr(torch.Tensor, kind, counted(kind))
    stopped = ""
    copies = BlockingCopies(reads)
    try:
        with copies:
            step(0)
    except (RuntimeError, NotImplementedError) as e:
        stopped = f"stopped at {ours_of(e)}: {e}"
    finally:
        for kind, f in real.items():
            setattr(torch.Tensor, kind, f)
    what = " ".join(argv) or "the quickstart, fused"
    print(f"{sum(reads.values())} reads of device values or blocking copies to it in one step ({what}):")
    for site, n in reads.most_common():
        print(f"  {n} x {site}")
    if stopped:
        print(stopped)
    return 0


def ours_of(e: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename.startswith(SRC)]
    return f"{Path(frames[-1].filename).relative_to(SRC)}:{frames[-1].lineno} {frames[-1].name}" if frames else "?"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
