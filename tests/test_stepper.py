"""The sync-free step a GPU takes (multitask/stepper.py, issue 44) against the ordinary step, on the CPU: the same
weights, the same logged losses and the same skipped updates, with the step's losses and skips read back once per
log window instead of once per step; and the AdamW it ends in (`step(found_inf=...)`) against the ordinary update."""

import json

import pytest
import torch
from safetensors.torch import load_file

import minbert.multitask.stepper as stepper_module
from minbert.cli import main
from minbert.multitask.state import snapshot_folder
from minbert.optim import AdamW
from tests.helpers import QUICKSTART, TINY


def test_adamw_skips_on_the_device_exactly_as_the_ordinary_step_skips():
    torch.manual_seed(0)
    init = [torch.randn(5, 3) for _ in range(3)]
    a, b = ([x.clone().requires_grad_() for x in init] for _ in range(2))
    groups = lambda ps: [{"params": ps[:2]}, {"params": ps[2:], "lr": 1e-2}]  # noqa: E731
    on_device, ordinary = AdamW(groups(a), lr=1e-3, weight_decay=0.01), AdamW(groups(b), lr=1e-3, weight_decay=0.01)
    for i in range(6):
        grads = [torch.randn(5, 3) for _ in init]
        bad = i in (1, 2)
        if bad:
            grads[1][0, 0] = float("nan")
        for ps in (a, b):
            for p, g in zip(ps, grads):
                p.grad = g.clone()
        on_device.step(found_inf=torch.tensor(float(bad)))
        if not bad:
            ordinary.step()
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert [float(on_device.state[p]["step"]) for p in a] == [4.0] * 3  # the skipped steps not counted
    for ps in (a, b):  # back to the ordinary step: the count an int again, the updates still equal
        for p in ps:
            p.grad = torch.ones(5, 3)
    on_device.step(), ordinary.step()
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and on_device.state[a[0]]["step"] == 5


def train(run, monkeypatch, encoder, sync_free: bool, bad_steps=(), extra=()):
    """A tiny quickstart run on a tiny random encoder (the mechanics, not the MiniLM's numbers), its steps sync-free
    or ordinary; the gradient made NaN at `bad_steps` (0-based)."""
    monkeypatch.setattr(stepper_module, "SYNC_FREE_DEVICES", {"cpu", "cuda"} if sync_free else {"cuda"})
    summed = stepper_module.Stepper.summed_backward
    chosen = []

    def poisoned(self, micro, totals, terms):
        chosen.append(self.sync_free)
        summed(self, micro, totals, terms)
        if self.objective.step in bad_steps:
            next(p for p in self.model.parameters() if p.grad is not None).grad.view(-1)[0] = float("nan")

    monkeypatch.setattr(stepper_module.Stepper, "summed_backward", poisoned)
    reads = []  # how many steps' values each read-back of the training loop carried
    settle = stepper_module.settle

    def counted(results):
        reads.append(sum(r.pending is not None for r in results))
        return settle(results)

    monkeypatch.setattr("minbert.multitask.train.settle", counted)
    code = main(["train", str(QUICKSTART), *TINY, "log_every=4", f"checkpoint={encoder}", *extra, f"out={run}"])
    assert set(chosen) == {sync_free}
    return code, [n for n in reads if n]


def records(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if "dev/overall" not in x]


@pytest.mark.parametrize(
    "bad_steps, extra",
    [((), []), ((2, 7), []), ((2, 7), ["max_grad_norm=0.5", "grad_accum=2"])],
    ids=["finite", "two-skipped", "clipped-accumulated"],
)
def test_sync_free_training_equals_the_ordinary_step(tmp_path, monkeypatch, tiny_encoder, bad_steps, extra):
    a, b = tmp_path / "ordinary", tmp_path / "sync-free"
    code_a, reads_a = train(a, monkeypatch, tiny_encoder, False, bad_steps, extra)
    code_b, reads_b = train(b, monkeypatch, tiny_encoder, True, bad_steps, extra)
    assert code_a == code_b == 0
    wa, wb = (load_file(str(snapshot_folder(r, "last") / "model.safetensors")) for r in (a, b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert records(a) == records(b)  # the same losses and skipped-step counts, written at the same steps
    if bad_steps:
        assert records(b)[-1]["train/skipped_steps"] == 2
    assert reads_a == []  # the ordinary step read its values itself
    # the sync-free loop reads a log window (4 steps) at a time, and at the epoch's end (6 steps an epoch)
    assert reads_b == [4, 2, 2, 4], reads_b


def test_a_sync_free_run_that_keeps_diverging_stops_with_the_ordinary_line(tmp_path, monkeypatch, tiny_encoder, capsys):
    bad = tuple(range(1, 12))
    assert train(tmp_path / "a", monkeypatch, tiny_encoder, False, bad, ["max_bad_steps=3"])[0] == 2
    ordinary = capsys.readouterr().err.splitlines()[-1]
    assert train(tmp_path / "b", monkeypatch, tiny_encoder, True, bad, ["max_bad_steps=3"])[0] == 2
    sync_free = capsys.readouterr().err.splitlines()[-1]
    assert "step 4: the loss or gradient is not finite for 3 steps in a row" in ordinary
    assert sync_free == ordinary.replace(str(tmp_path / "a"), str(tmp_path / "b"))


def test_only_the_plain_summed_step_goes_sync_free(monkeypatch):
    from minbert.config import load_config
    from minbert.multitask.config import TrainConfig
    from minbert.multitask.run import build
    from minbert.multitask.techniques import Techniques

    monkeypatch.setattr(stepper_module, "SYNC_FREE_DEVICES", {"cpu"})
    cpu = torch.device("cpu")

    for overrides, expected in [
        ([], True),
        (["combiner=pcgrad"], False),
        (["weighting=uw"], False),
        (["ema_decay=0.99"], False),
        (["precision=fp16"], False),
        (["regularizers={smart: {weight: 1}}"], False),
    ]:
        cfg = load_config(TrainConfig, QUICKSTART, ["precision=fp32", *overrides]).validate()
        model, _ = build(cfg, cpu)
        assert Techniques(cfg, model, cpu).stepper.sync_free is expected, overrides


def test_a_sync_free_run_resumes_to_the_ordinary_runs_weights(tmp_path, monkeypatch, tiny_encoder):
    """AdamW's step counts, on the device in a sync-free step, go through a checkpoint and back."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert train(whole, monkeypatch, tiny_encoder, False, (2,))[0] == 0
    summed = stepper_module.Stepper.summed_backward

    def dies_at_step_9(self, micro, totals, terms):
        if self.objective.step == 9:
            raise KeyboardInterrupt  # a kill after the checkpoint of step 8
        summed(self, micro, totals, terms)

    monkeypatch.setattr(stepper_module.Stepper, "summed_backward", dies_at_step_9)
    assert train(killed, monkeypatch, tiny_encoder, True, (2,), ["checkpoint_every=4"])[0] == 130  # interrupted
    monkeypatch.setattr(stepper_module.Stepper, "summed_backward", summed)
    assert main(["train", "--resume", str(killed)]) == 0
    wa, wb = (load_file(str(snapshot_folder(r, "last") / "model.safetensors")) for r in (whole, killed))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
