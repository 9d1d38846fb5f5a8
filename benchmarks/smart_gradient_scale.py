"""How large the SMART ascent gradient is on the embedded checkpoint at sigma = 1e-5 noise (dropout off in the
encoder and the SST head), and the divergence after one step of eta with an absolute vs a relative division guard.
Run by hand from the repository root: python benchmarks/smart_gradient_scale.py (prints; results quoted in
benchmarks/RESULTS.md)."""

import torch

from minbert.config import load_config
from minbert.multitask.config import TrainConfig
from minbert.multitask.data import make_batch
from minbert.multitask.run import build, load_data
from minbert.regularizers.divergence import divergence

cfg = load_config(
    TrainConfig,
    "configs/quickstart.yaml",
    [
        "encoder_dropout=0",
        "tasks.sst.dropout=0",
        "tasks.sst.train_limit=64",
        "tasks.quora.train_limit=64",
        "tasks.sts.train_limit=64",
    ],
)
model, tok = build(cfg, torch.device("cpu"))
data = load_data(cfg, tok, ("train",))
model.train()
for task, needs in (("sst", "logits"), ("quora", "logit"), ("sts", "score")):
    b = make_batch(data["train"][task], list(range(32)), tok.pad_id)
    out = model.task_output(task, b).detach()
    x = model.embedded(task, b).detach()
    for sigma in (1e-5,):
        d = (torch.randn_like(x) * sigma).requires_grad_()
        div = divergence(model.task_output(task, b, embedded=x + d), out, needs)
        (g,) = torch.autograd.grad(div, d)
        m = g.abs().amax(-1)
        print(task, "div", div.item(), "max|g| per token median", m[b.mask.bool()].median().item())
        for eta in (1e-3, 1e-2):
            for eps in (1e-6, 1e-12):
                delta = eta * g / (m[..., None] + eps)
                print(
                    "  eta",
                    eta,
                    "eps",
                    eps,
                    "D after",
                    divergence(model.task_output(task, b, embedded=x + delta), out, needs).item(),
                )
