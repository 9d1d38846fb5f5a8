"""Knowledge distillation (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network") from finished runs.

`distill.teachers` names run directories (typically the seeds of one recipe: their ensemble is the teacher). Before
training, every training example of every task is run once through each teacher's best checkpoint, with the
teacher's own tokenizer and task settings, and the teachers' soft outputs (`Task.soft`: class probabilities, P(1)
for a binary task, the score for a regression task) are averaged - what `minbert ensemble` averages - and cached in
the run folder (`teacher.safetensors`), so a resumed run does not recompute them. Each training batch then carries
its examples' targets, and a task's loss becomes

    (1 - weight) * gold loss + weight * distillation term

with the term, for a task with C > 2 classes, T^2 KL(softmax(log p_teacher / T) || softmax(logits / T)) (the
temperature T softens both sides; T^2 keeps the gradient's scale as T changes, as in the paper); for a binary task
whose head gives a logit z, the same with two classes, T^2 KL(Bern(sigmoid(logit(p) / T)) || Bern(sigmoid(z / T)));
for a regression task, or a similarity head's score, the squared error between the student's soft output and the
teacher's. Tasks no teacher was trained on keep their gold loss alone.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from minbert.errors import MinbertError
from minbert.model.outputs import HeadOutput

log = logging.getLogger(__name__)


def distill_loss(
    out: HeadOutput, teacher: torch.Tensor, regression: bool, scale: float | None, temperature: float
) -> torch.Tensor:
    """The distillation term of one batch: `out` the student's head output, `teacher` (B, C) or (B,) the targets;
    `regression` whether the task's label is a real value (Task.regression)."""
    t = temperature
    teacher = teacher.float()
    if out.logits is not None:  # (B, C): KL between the tempered distributions, times T^2
        target = F.log_softmax(teacher.clamp_min(1e-12).log() / t, -1)
        student = F.log_softmax(out.logits.float() / t, -1)
        return F.kl_div(student, target, log_target=True, reduction="batchmean") * t * t
    score = out.score.float()
    if regression or scale:  # a score, or a similarity head's score on its scale: squared error
        return F.mse_loss(score / scale if scale and not regression else score, teacher)
    p = teacher.clamp(1e-6, 1 - 1e-6)
    q = torch.sigmoid(torch.logit(p) / t)  # the teacher's tempered P(1)
    entropy = F.binary_cross_entropy(q, q, reduction="none")
    return (F.binary_cross_entropy_with_logits(score / t, q, reduction="none") - entropy).mean() * t * t


def fingerprint(teachers: tuple[str, ...], train: dict) -> str:
    """What the targets are computed from: each teacher run (where it is, and its best.json, which changes whenever
    its best checkpoint does) and every training example of every task, in order. Stored beside the cached targets
    and checked when a resumed run reads them."""
    h = hashlib.sha256()
    for run in teachers:
        best = Path(run) / "best.json"
        h.update(str(Path(run).resolve()).encode() + b"\0" + (best.read_bytes() if best.is_file() else b"") + b"\0")
    for t in sorted(train):
        h.update(f"{t}:{len(train[t])}\0".encode())
        for ex in train[t].examples:
            h.update(repr(ex).encode())
    return h.hexdigest()


def cached_targets(path: Path, expected: str, train: dict) -> dict[str, torch.Tensor] | None:
    """The targets a resumed run saved, if they are what this run would compute: written for the same teachers
    and data (the fingerprint), one finite row per training example. Otherwise None, with a warning saying why, and
    the caller computes them again: a cache is never trusted over its sources."""
    from safetensors import safe_open

    from minbert.runs import load_tensors

    reason = ""
    try:
        with safe_open(str(path), framework="pt") as f:
            stored = (f.metadata() or {}).get("fingerprint")
        targets = load_tensors(path)
    except Exception:  # noqa: BLE001 - whatever a damaged file raises, the answer is to recompute it
        reason, targets, stored = "it is truncated or damaged", {}, None
    if not reason and stored != expected:
        reason = "it was computed from other teachers or other data" if stored else "it carries no fingerprint"
    for t, target in targets.items():
        if reason:
            break
        if t not in train or target.shape[0] != len(train[t]):
            reason = f"its {t} rows do not match this run's {t} training examples"
        elif not bool(torch.isfinite(target).all()):
            reason = f"its {t} targets are not all finite"
    if reason:
        log.warning("%s: %s; computing the teachers' targets again", path, reason)
        return None
    return targets


def teacher_targets(teachers: tuple[str, ...], train: dict, device) -> dict[str, torch.Tensor]:
    """{task: (N, C) or (N,)} the teachers' averaged soft outputs on each training example, in example order. A
    problem with a teacher run is reported as the key that names it: `distill.teachers[i]: RUN: ...`."""
    from minbert.multitask.data import encode_task
    from minbert.multitask.run import load_run, load_run_config

    parts: dict[str, list[torch.Tensor]] = {}
    for i, run in enumerate(teachers):
        where = f"distill.teachers[{i}]: {run}"
        fix = f"finish it (minbert train --resume {run}) or train it again, or leave it out of distill.teachers"
        try:
            cfg = load_run_config(Path(run))
        except MinbertError as e:
            raise MinbertError(
                f"{where}: {_strip(str(e), run)}; name a folder `minbert train` made, or leave it out of "
                "distill.teachers"
            ) from None
        shared = [t for t in train if t in cfg.tasks]
        if not shared:
            raise MinbertError(f"{where}: was trained on {', '.join(cfg.tasks)}, none of this run's tasks")
        if not (Path(run) / "best.json").is_file():
            raise MinbertError(f"{where}: has no best checkpoint yet (it never finished an epoch); {fix}")
        try:
            r = load_run(Path(run), device=str(device), cfg=cfg)
        except MinbertError as e:
            raise MinbertError(f"{where}: {_strip(str(e), run)}; {fix}") from None
        for t in shared:
            data = encode_task(r.model.specs[t], train[t].examples, r.tok, r.cfg.task(t))
            parts.setdefault(t, []).append(r.runner.soft(t, data))
        log.info("distillation: %s's soft outputs on %s", run, ", ".join(f"{t} ({len(train[t])})" for t in shared))
        del r
    for t in train:
        if t not in parts:
            log.warning("distillation: no teacher was trained on %s; it trains on its labels alone", t)
    return {t: torch.stack(p).mean(0) for t, p in parts.items()}


def _strip(message: str, run: str) -> str:
    """A message about the run without its own path in front (the key's prefix names it) nor its own advice, which
    was written for someone running that run, not for someone pointing at it."""
    message = message.removeprefix(f"{run}: ").removeprefix(f"{str(run).rstrip('/')}: ")
    return message.split("; ")[0]
