"""`minbert soup RUN_DIR... --out DIR [--greedy]`: one model from several runs fine-tuned from the same checkpoint,
by averaging their weights (Wortsman et al. 2022, "Model soups: averaging weights of multiple fine-tuned models
improves accuracy without increasing inference time"), at one model's cost where an ensemble (`minbert ensemble`)
runs every member.

Uniform soup: the mean of every run's best checkpoint. Greedy soup (the paper's Algorithm 1): the runs sorted by
their own dev overall, best first; each joins the soup only if the soup's dev overall does not fall with it. The
greedy soup is chosen on dev, so its dev number is optimistic, as any choice made on dev (the paper chooses on a
held-out split of the training data; the test predictions are the honest measure). Averaging needs the same
parameters in every run: the same checkpoint, tasks and heads; anything else is refused before the first weight
loads.

`--last K` averages one run's last K epoch checkpoints instead (kept when it trained with `keep_epochs: K`), the
averaging of the last checkpoints that fairseq's `average_checkpoints.py` does.

Writes a run folder - config.yaml (the first run's), a best checkpoint, summary.json, dev and test predictions - that
evaluate, predict, export, ensemble and compare take like any run.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch

from minbert.config import dump_yaml
from minbert.errors import MinbertError
from minbert.files import atomic_write_text, check_output, staged
from minbert.multitask.evaluate import results_table, write_task_predictions
from minbert.multitask.run import load_data, load_run, load_run_config
from minbert.multitask.state import save_snapshot


def check_ingredients(runs: list[Path], data_dir: str | None) -> list:
    """Each run's config, after checking that their weights can be averaged: the same checkpoint, the same tasks
    with the same heads, the same adapters (the shapes are compared again when the weights load)."""
    configs = [load_run_config(r, data_dir) for r in runs]
    first = configs[0]
    for run, cfg in zip(runs[1:], configs[1:]):
        for what, a, b in (
            ("checkpoint", first.checkpoint, cfg.checkpoint),
            ("tasks", list(first.tasks), list(cfg.tasks)),
            ("heads", [first.task(t).head for t in first.tasks], [cfg.task(t).head for t in cfg.tasks]),
            ("pals", first.pals, cfg.pals),
            ("lora", first.lora, cfg.lora),
        ):
            if a != b:
                raise MinbertError(
                    f"{run}: {what} {b} where {runs[0]} has {a}; a soup averages runs of one model fine-tuned from "
                    "one checkpoint"
                )
    return configs


def soup(
    runs: list[Path],
    out: Path,
    greedy: bool = False,
    data_dir: str | None = None,
    overwrite: bool = False,
    last: int = 0,
) -> dict:
    """`last`: average one run's last `last` epoch checkpoints (kept by `keep_epochs`) instead of several runs'
    best ones."""
    runs = [Path(r) for r in runs]
    if last and len(runs) != 1:
        raise MinbertError(f"--last {last}: averages one run's last epochs; give one run (or leave --last out)")
    if not last and len(runs) < 2:
        raise MinbertError("a soup needs two or more runs (fine-tuned from the same checkpoint), or --last K")
    if any(Path(out).resolve() == r.resolve() for r in runs):
        raise MinbertError(f"--out {out}: is one of the runs; the soup goes into a folder of its own")
    if len({r.resolve() for r in runs}) < len(runs):
        raise MinbertError("a run is named twice; a soup averages distinct runs")
    check_output(Path(out), overwrite, "soup")
    check_ingredients(runs, data_dir)
    start = time.time()
    base = load_run(runs[0], data_dir)  # the model the averages are evaluated in
    weights, own = epoch_ingredients(runs[0], last) if last else run_ingredients(runs, base, data_dir)
    data = load_data(base.cfg, base.tok, ("dev", "test"))

    def dev_overall(members: list[str]) -> float:
        base.model.load_state_dict(average([weights[m] for m in members]))
        return base.runner.evaluate(data["dev"])[0]["overall"]

    members = greedy_members(list(weights), own, dev_overall) if greedy else list(weights)
    base.model.load_state_dict(average([weights[m] for m in members]))
    metrics, dev_preds = base.runner.evaluate(data["dev"])
    _, test_preds = base.runner.evaluate(data["test"])
    summary = {
        "run_dir": str(out),
        "dev": metrics,
        "soup": "greedy" if greedy else "uniform",
        "members": members,
        "ingredients": own,
        "wall_time_s": round(time.time() - start, 1),
        "steps": None,
    }
    with staged(Path(out)) as tmp:  # all files or none
        dump_yaml(dataclasses.replace(base.cfg, out=str(out)), tmp / "config.yaml")
        save_snapshot(tmp, "best", 0, base.model, state={"epoch": 0, "dev": metrics, "soup": members})
        for split, preds in (("dev", dev_preds), ("test", test_preds)):
            write_task_predictions(
                tmp / "predictions", split, data[split], preds, base.model.specs, base.cfg.prediction_files
            )
        atomic_write_text(tmp / "summary.json", json.dumps(summary, indent=2))
    print(results_table({f"{summary['soup']} soup of {len(members)} of {len(own)}": metrics}, base.model.specs))
    return summary


def run_ingredients(runs: list[Path], base, data_dir: str | None) -> tuple[dict, dict]:
    """Each run's best weights and its own dev overall, by run; a run whose parameters differ from the first's
    (names or shapes) is refused."""
    weights, own = {}, {}
    expected = {k: v.shape for k, v in base.model.state_dict().items()}
    for r in runs:
        loaded = base if r == runs[0] else load_run(r, data_dir)
        state = {k: v.detach().clone() for k, v in loaded.model.state_dict().items()}
        if {k: v.shape for k, v in state.items()} != expected:
            raise MinbertError(f"{r}: its weights have other names or shapes than {runs[0]}'s; no average of them")
        weights[str(r)], own[str(r)] = state, loaded.best.get("dev", {}).get("overall", float("-inf"))
    return weights, own


def greedy_members(names: list[str], own: dict[str, float], dev_overall) -> list[str]:
    """Wortsman et al.'s Algorithm 1: the ingredients by their own dev overall, best first; each joins the soup if
    the soup's dev overall (`dev_overall(members)`) does not fall with it."""
    order = sorted(names, key=lambda r: -own[r])
    members, best = [order[0]], dev_overall(order[:1])
    for r in order[1:]:
        score = dev_overall(members + [r])
        verdict = "joins" if score >= best else "left out"
        print(f"{r}: a soup of {len(members) + 1} scores {score:.4f} on dev, against {best:.4f}: {verdict}")
        if score >= best:
            members, best = members + [r], score
    return members


def epoch_ingredients(run: Path, last: int) -> tuple[dict, dict]:
    """The run's newest `last` epoch checkpoints (checkpoints/epoch-*, kept by `keep_epochs`): weights and each
    one's dev overall (-inf where it was not evaluated on its own, as under `ema_decay`), by folder."""
    from minbert.multitask.state import candidates
    from minbert.runs import load_tensors

    try:
        entries = candidates(run, "epoch")[:last]
    except MinbertError:
        entries = []
    if last < 2 or len(entries) < last:
        raise MinbertError(
            f"--last {last}: {run} keeps {len(entries)} epoch checkpoint(s); averaging needs 2 or more, kept by "
            f"training with keep_epochs={max(last, 2)}"
        )
    weights, own = {}, {}
    for e in entries:
        folder = run / "checkpoints" / e["folder"]
        name = f"{run}/checkpoints/{e['folder']}"
        weights[name] = load_tensors(folder / "model.safetensors")
        dev = json.loads((folder / "state.json").read_text()).get("dev") or {}
        own[name] = dev.get("overall", float("-inf"))
    return weights, own


def average(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of state dicts (floating tensors in float64, then back to their dtype; integer
    buffers, such as position ids, are the same in every run and kept)."""
    out = {}
    for k, v in states[0].items():
        if v.is_floating_point():
            out[k] = (sum(s[k].double() for s in states) / len(states)).to(v.dtype)
        else:
            out[k] = v
    return out
