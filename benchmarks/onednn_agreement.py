"""fp32 inference through oneDNN (model/fast/onednn.py) against PyTorch's default fp32 path (MKL), every dev example of
SST, Quora and STS: how many predictions are the same and how far the soft outputs move. Accuracy, not speed.

    python benchmarks/onednn_agreement.py RUN_DIR
"""

from __future__ import annotations

import argparse

import minbert
import minbert.model.fast.onednn as onednn
from minbert.data import DATASETS, data_dir, load_split


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    args = ap.parse_args()
    fast = minbert.load(args.run, precision="fp32")
    fast.run.runner  # built now, while faster_here() is what this machine says
    faster_here = onednn.faster_here
    onednn.faster_here = lambda: False
    try:
        plain = minbert.load(args.run, precision="fp32")
        plain.run.runner
    finally:
        onednn.faster_here = faster_here
    if fast.run.runner.cast is None:
        print("this machine keeps MKL for fp32 (model/fast/onednn.py's faster_here() is False): nothing to compare")
        return
    for task in ("sst", "quora", "sts"):
        rows = load_split(DATASETS[task], "dev", data_dir(fast.run.cfg.data_dir), False)
        inputs = [e.texts[0] if len(e.texts) == 1 else tuple(e.texts) for e in rows]
        a, b = fast.soft(task, inputs), plain.soft(task, inputs)
        spec = fast.specs[task]
        same = "" if spec.regression else f", the same prediction for {int((spec.hard(a) == spec.hard(b)).sum())}"
        print(f"{task}: {len(inputs)} examples{same}; soft outputs within {(a - b).abs().max():.1e}")


if __name__ == "__main__":
    main()
