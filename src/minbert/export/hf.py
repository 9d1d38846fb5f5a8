"""`minbert export RUN OUT --format hf`: the shared encoder as a Hugging Face BERT folder, and each task whose head
reads one encoder input as a sequence classifier (see minbert.export)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch

from minbert.errors import MinbertError
from minbert.export.common import write_encoder
from minbert.model.heads import HEADS, SentenceHead
from minbert.multitask.run import LoadedRun
from minbert.multitask.state import write_adapter

log = logging.getLogger(__name__)


def export_hf(run: LoadedRun, out: Path, task: str | None) -> list[Path]:
    written = [write_encoder(run, out, {"architectures": ["BertModel"]})]
    for name in [task] if task else list(run.cfg.tasks):  # the tasks with LoRA adapters: PEFT folders
        if run.model.lora is not None and name in run.model.lora:
            written.append(write_adapter(run.model, name, out / "adapters" / name, base="../.."))
    for name in [task] if task else list(run.cfg.tasks):
        why = classifier_refusal(run, name)
        if why:
            if task:
                raise MinbertError(f"{name}: {why}")
            log.warning("%s not exported as a classifier: %s", name, why)
            continue
        written.append(write_classifier(run, name, out / name))
    return written


def classifier_refusal(run: LoadedRun, task: str) -> str:
    """Why a task's head cannot be a sequence classifier, or "" when it can."""
    head = run.model.heads[task]
    kind = HEADS[run.cfg.task(task).head]
    if kind.bi_encoder:
        return f"its {run.cfg.task(task).head} head reads two separately encoded sentences; use --format onnx"
    if not isinstance(head, SentenceHead) or len(head.layers):
        return "its head has learnable layers before the output, which a sequence classifier lacks; use --format onnx"
    return ""


def classifier_weights(run: LoadedRun, task: str) -> tuple[torch.Tensor, torch.Tensor, dict, str]:
    """(weight (C, H), bias (C,), id2label, problem_type) of the task's output layer in transformers' terms."""
    spec, out = run.model.specs[task], run.model.heads[task].out
    w, b = out.weight.detach().float(), out.bias.detach().float()
    if spec.regression:
        return w, b, {0: "score"}, "regression"
    if w.shape[0] == 1:  # one logit z for P(1): logits [0, z] give softmax [1 - sigmoid(z), sigmoid(z)]
        w, b = torch.cat([torch.zeros_like(w), w]), torch.cat([torch.zeros_like(b), b])  # (2, H), (2,)
    names = spec.dataset.label_names or tuple(str(i) for i in range(w.shape[0]))
    return w, b, dict(enumerate(names)), "single_label_classification"


def write_classifier(run: LoadedRun, task: str, out: Path) -> Path:
    w, b, id2label, problem = classifier_weights(run, task)
    pooling = run.cfg.task(task).pooling
    extra = {
        "num_labels": len(id2label),
        "id2label": {str(i): n for i, n in id2label.items()},
        "label2id": {n: i for i, n in id2label.items()},
        "problem_type": problem,
        "minbert_task": task,
        "minbert_pair_input": run.model.specs[task].pair,
    }
    if pooling == "pooler":
        extra["architectures"] = ["BertForSequenceClassification"]
    else:  # transformers' class reads the tanh pooler: our subclass pools as the run did
        extra.update(
            model_type="minbert",
            pooling=pooling,
            architectures=["MinbertForSequenceClassification"],
            auto_map={
                "AutoConfig": "modeling_minbert.MinbertConfig",
                "AutoModelForSequenceClassification": "modeling_minbert.MinbertForSequenceClassification",
            },
        )
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(__file__).with_name("modeling_minbert.py"), out / "modeling_minbert.py")
    more = {"classifier.weight": w, "classifier.bias": b}
    return write_encoder(run, out, extra, prefix="bert.", more=more, task=task)
