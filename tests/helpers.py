"""What many test files share: the quickstart config, a tiny budget for it, running `minbert train`."""

import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

from minbert.multitask.state import snapshot_folder

QUICKSTART = Path(__file__).parents[1] / "configs" / "quickstart.yaml"
TINY = ["epochs=2", "steps_per_epoch=6", "checkpoint_every=2", "log_every=1", "precision=fp32", "device=cpu"] + [
    f"tasks.{t}.{k}={v}"
    for t in ("sst", "quora", "sts")
    for k, v in (("train_limit", 96), ("eval_limit", 48), ("batch_size", 8), ("max_length", 24))
]


def run_cli(*args, wait=True):
    cmd = [sys.executable, "-m", "minbert", "train", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if wait:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out
        return out
    return proc


def final_weights(run: Path) -> dict:
    return load_file(str(snapshot_folder(run, "last") / "model.safetensors"))
