"""What many test files share: the quickstart config, a tiny budget for it, running `minbert train`; a tiny random
multitask model and batch for technique tests."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from minbert.model import BertConfig, BertModel
from minbert.model.multitask import MultitaskModel
from minbert.multitask.config import PalsConfig, TaskConfig
from minbert.multitask.data import Batch
from minbert.multitask.state import snapshot_folder

QUICKSTART = Path(__file__).parents[1] / "configs" / "quickstart.yaml"
# Checkpoints at epoch ends only: a resumable checkpoint of the MiniLM is ~270 MB, about a third of a tiny run's time;
# the tests that kill or resume mid-epoch add RESUMABLE.
TINY = ["epochs=2", "steps_per_epoch=6", "checkpoint_every=0", "log_every=1", "precision=fp32", "device=cpu"] + [
    f"tasks.{t}.{k}={v}"
    for t in ("sst", "quora", "sts")
    for k, v in (("train_limit", 96), ("eval_limit", 48), ("batch_size", 8), ("max_length", 24))
]
RESUMABLE = ["checkpoint_every=2"]  # a checkpoint every two steps: a kill lands between two of them


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


TINY_BERT = BertConfig(
    vocab_size=50,
    hidden_size=24,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=32,
    max_position_embeddings=32,
)
QUIET_BERT = dataclasses.replace(TINY_BERT, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def tiny_model(pals=False, seed=0, config=TINY_BERT, dropout=0.1):
    torch.manual_seed(seed)
    tasks = {
        "sst": TaskConfig(head="linear", loss="ce", dropout=dropout),
        "sts": TaskConfig(head="cosine", loss="mse", cosine_scale=5.0),
    }
    model = MultitaskModel(BertModel(config), tasks, PalsConfig(enabled=pals, size=12, heads=3))
    return model.run_on("cpu")  # the CPU's fast paths, as a run on this machine has them (model/fast)


def sst_batch():
    ids = torch.randint(1, 50, (4, 7))
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    return Batch(ids, mask, None, torch.tensor([0, 1, 2, 4]), pair=False)
