"""Export a trained run for the tools its users already have: `minbert export RUN OUT --format F`.

- `hf`: OUT is the shared encoder as a Hugging Face BERT folder (`transformers.AutoModel`, `AutoTokenizer`), and
  OUT/<task>/ each task whose head reads one encoder input (a sentence head, a cross-encoder) as a sequence classifier
  with `num_labels`, `id2label` and `problem_type`. A head over BERT's tanh pooler is exactly a
  `BertForSequenceClassification`; over mean or [CLS] pooling - which that class cannot express - it is its subclass in
  the folder's modeling_minbert.py, loaded with `trust_remote_code=True` (without it the folder refuses to load, rather
  than silently pooling differently). A one-logit binary head becomes two logits [0, z], whose softmax is sigmoid(z).
  Bi-encoder heads (concat, cosine) need two encoder passes: use `sentence-transformers` or `onnx` for them.
- `sentence-transformers`: OUT loads with `SentenceTransformer(OUT)` and gives `minbert.load(RUN).embed(..., task)`'s
  embeddings: the task's pooling (BERT's pooler is a tanh Dense after [CLS]), then a cosine head's learnable layers
  (ReLU Dense layers); a model card in README.md.
- `onnx`: OUT/<task>.onnx for every task (a bi-encoder's takes both sentences) and OUT/embed.onnx (sentence embeddings
  with `--task`'s pooling), with the tokenizer and minbert_export.json naming inputs, outputs and how outputs become
  predictions. Exported with `torch.onnx.export` from the static graph (`Speed.static_graph`: no branch on the
  data) and checked against PyTorch with onnxruntime when it is installed.

PALs make each task's encoder different: runs with PALs export only as `onnx`. Per-task LoRA adapters do too, but
merge: with `hf` the top folder stays the shared encoder and OUT/adapters/<task>/ is each task's adapter as a PEFT
folder (`peft.PeftModel.from_pretrained(AutoModel.from_pretrained(OUT), OUT/adapters/<task>)`), while each task's
classifier folder and the `sentence-transformers` folder hold that task's encoder with its adapters merged in.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from minbert.data import data_dir, pad, split_file
from minbert.errors import MinbertError
from minbert.files import check_output, staged
from minbert.model import resolve_checkpoint
from minbert.model.heads import HEADS, CosinePairHead, SentenceHead
from minbert.multitask.run import LoadedRun
from minbert.multitask.state import write_adapter
from minbert.runs import atomic_write_text, save_tensors

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
QUORA_NOTE = (
    "The embedded starting checkpoint (all-MiniLM-L6-v2) was trained on sentence pairs that include Quora "
    "duplicates: its Quora numbers are optimistic."
)


def export(run: LoadedRun, out: Path, fmt: str, task: str | None = None, overwrite: bool = False) -> list[Path]:
    """Write the run in format `fmt` under `out` (new or empty, or --overwrite); the paths written. Everything is
    written into a temporary sibling first and moved into `out` at the end: a refusal or a failure leaves `out` as
    it was."""
    if fmt not in EXPORTERS:
        raise MinbertError(f"--format {fmt!r}: valid are {', '.join(EXPORTERS)}")
    if task is not None and task not in run.cfg.tasks:
        raise MinbertError(f"--task {task}: this run was trained on {', '.join(run.cfg.tasks)}")
    check_output(out, overwrite, "export")
    if run.model.pals is not None and fmt != "onnx":
        raise MinbertError(
            "this run has PALs, which make each task's encoder different from the shared one: export --format onnx"
        )
    if task is not None and fmt == "hf" and classifier_refusal(run, task):
        raise MinbertError(f"{task}: {classifier_refusal(run, task)}")
    run.model.eval()
    with staged(out) as tmp:
        written = EXPORTERS[fmt](run, tmp, task)
    return [out / p.relative_to(tmp) for p in written]


# -- hf -------------------------------------------------------------------------------------------------------------


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
        shutil.copyfile(Path(__file__).with_name("export_modeling.py"), out / "modeling_minbert.py")
    more = {"classifier.weight": w, "classifier.bias": b}
    return write_encoder(run, out, extra, prefix="bert.", more=more, task=task)


def write_encoder(
    run: LoadedRun, out: Path, config: dict, prefix: str = "", more: dict | None = None, task: str | None = None
) -> Path:
    """The shared encoder's weights (Hugging Face names; with `task`, its LoRA adapters merged in), config.json and
    the tokenizer files."""
    out.mkdir(parents=True, exist_ok=True)
    state = {prefix + k: v.detach().float().contiguous() for k, v in run.model.encoder_state(task).items()}
    save_tensors(out / "model.safetensors", {**state, **(more or {})}, {"format": "pt"})
    write_json(out / "config.json", {**json.loads(run.model.bert.config.to_json()), **config})
    copy_tokenizer(run, out)
    return out


def copy_tokenizer(run: LoadedRun, out: Path) -> None:
    source = resolve_checkpoint(run.cfg.checkpoint)
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)


# -- sentence-transformers ------------------------------------------------------------------------------------------


def export_sentence_transformers(run: LoadedRun, out: Path, task: str | None) -> list[Path]:
    task = task or default_embedding_task(run)
    tcfg, hidden = run.cfg.task(task), run.model.bert.config.hidden_size
    write_encoder(run, out, {"architectures": ["BertModel"]}, task=task)
    modules = [("", "sentence_transformers.models.Transformer")]
    pooling = {f"pooling_mode_{m}": False for m in ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens")}
    pooling["pooling_mode_mean_tokens" if tcfg.pooling == "mean" else "pooling_mode_cls_token"] = True
    write_json(out / "1_Pooling" / "config.json", {"word_embedding_dimension": hidden, **pooling})
    modules.append(("1_Pooling", "sentence_transformers.models.Pooling"))
    dense: list[tuple[nn.Linear, str]] = []
    if tcfg.pooling == "pooler":
        dense.append((run.model.bert.pooler.dense, "torch.nn.modules.activation.Tanh"))
    head = run.model.heads[task]
    if isinstance(head, CosinePairHead):  # its learnable layers (linear, ReLU, dropout) come before the cosine
        dense += [(m, "torch.nn.modules.activation.ReLU") for m in head.layers if isinstance(m, nn.Linear)]
    for linear, activation in dense:
        path = f"{len(modules)}_Dense"
        write_json(
            out / path / "config.json",
            {
                "in_features": linear.in_features,
                "out_features": linear.out_features,
                "bias": True,
                "activation_function": activation,
            },
        )
        weights = {"linear.weight": linear.weight.detach().float(), "linear.bias": linear.bias.detach().float()}
        save_tensors(out / path / "model.safetensors", {k: v.contiguous() for k, v in weights.items()})
        modules.append((path, "sentence_transformers.models.Dense"))
    write_json(
        out / "modules.json",
        [{"idx": i, "name": str(i), "path": p, "type": t} for i, (p, t) in enumerate(modules)],
    )
    write_json(out / "sentence_bert_config.json", {"max_seq_length": tcfg.max_length, "do_lower_case": False})
    write_json(out / "config_sentence_transformers.json", {"similarity_fn_name": "cosine"})
    atomic_write_text(out / "README.md", model_card(run, task))
    return [out]


def default_embedding_task(run: LoadedRun) -> str:
    """The task whose embeddings were trained for similarity (a cosine head), else a bi-encoder, else the first."""
    tasks = list(run.cfg.tasks)
    for want in ("similarity", "bi_encoder"):
        found = [t for t in tasks if getattr(HEADS[run.cfg.task(t).head], want)]
        if found:
            return found[0]
    return tasks[0]


def model_card(run: LoadedRun, task: str) -> str:
    dev, cfg = run.best.get("dev", {}), run.cfg
    specs = cfg.specs
    found = {t: split_file(specs[t].dataset, "train", data_dir(cfg.data_dir)) for t in cfg.tasks}
    train_files = [f"`{found[t].name if found[t] else specs[t].dataset.files['train'][0]}`" for t in cfg.tasks]
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in dev.items() if isinstance(v, float))
    lines = [
        f"# minbert multitask encoder ({', '.join(cfg.tasks)})",
        "",
        f"Exported with `minbert export {run.dir} OUT --format sentence-transformers --task {task}` from the best "
        f"epoch ({run.best.get('epoch', '?')}) of a minbert multitask run. Embeddings use the `{task}` task's pooling "
        f"({cfg.task(task).pooling}){' and its head layers' if cfg.task(task).extra_layers else ''}.",
        "",
        f"- starting checkpoint: `{cfg.checkpoint}`",
        f"- tasks and heads: {', '.join(f'{t} ({cfg.task(t).head}, {cfg.task(t).loss})' for t in cfg.tasks)}",
        f"- training data: {', '.join(train_files)} in `{cfg.data_dir or '../shared/data'}`",
        f"- training: {cfg.epochs} epochs of {cfg.steps_per_epoch or 'natural'} steps, {cfg.schedule} sampling, "
        f"lr {cfg.lr:g}, seed {cfg.seed}",
        "",
        "## Dev metrics of the exported epoch",
        "",
        "| metric | value |",
        "|---|---|",
        rows,
        "",
    ]
    if "quora" in cfg.tasks and cfg.checkpoint in ("default", "", "embedded"):
        lines += [QUORA_NOTE, ""]
    lines += [
        "## Use",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "model = SentenceTransformer('OUT')",
        "emb = model.encode(['a man plays guitar', 'a person plays a guitar'])",
        "```",
        "",
    ]
    return "\n".join(lines)


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


# -- onnx -----------------------------------------------------------------------------------------------------------


class TaskGraph(nn.Module):
    """One task's head output from the token ids of a sentence or a cross-encoded pair."""

    def __init__(self, run: LoadedRun, task: str):
        super().__init__()
        self.model, self.task = run.model, task

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.model.heads[self.task](self.model.embed(self.task, input_ids, attention_mask, token_type_ids))
        return out.output


class PairGraph(TaskGraph):
    """A bi-encoder task's head output from the token ids of both sentences, each encoded alone."""

    def forward(self, input_ids_a, attention_mask_a, input_ids_b, attention_mask_b):
        m, t = self.model, self.task
        out = m.heads[t](m.embed(t, input_ids_a, attention_mask_a), m.embed(t, input_ids_b, attention_mask_b))
        return out.output


class EmbedGraph(nn.Module):
    """(input_ids, attention_mask) -> (B, H) sentence embeddings with a task's pooling (and PALs)."""

    def __init__(self, run: LoadedRun, task: str):
        super().__init__()
        self.model, self.task = run.model, task

    def forward(self, ids, mask):
        return self.model.embed(self.task, ids, mask)


def export_onnx(run: LoadedRun, out: Path, task: str | None) -> list[Path]:
    bert, written, manifest = run.model.bert, [], {"tasks": {}}
    bert.configured(static_graph=True)
    try:
        for name in [task] if task else list(run.cfg.tasks):
            bi_encoder = HEADS[run.cfg.task(name).head].bi_encoder
            graph = (PairGraph if bi_encoder else TaskGraph)(run, name)
            inputs = sample_inputs(run, "pair" if bi_encoder else "joint")
            output = "logits" if getattr(run.model.heads[name], "num_labels", 1) > 1 else "score"
            written.append(onnx_file(graph, inputs, out / f"{name}.onnx", output))
            manifest["tasks"][name] = {
                "file": f"{name}.onnx",
                "inputs": list(inputs),
                "output": output,
                "prediction": prediction_rule(run, name, output),
                "max_length": run.cfg.task(name).max_length,
            }
        embed_task = task or default_embedding_task(run)
        graph = EmbedGraph(run, embed_task)
        written.append(onnx_file(graph, sample_inputs(run, "sentences"), out / "embed.onnx", "sentence_embedding"))
        manifest["embed"] = {"file": "embed.onnx", "task": embed_task, "pooling": run.cfg.task(embed_task).pooling}
    finally:
        bert.configured(static_graph=False)
    copy_tokenizer(run, out)
    write_json(out / "minbert_export.json", manifest)
    return written


def prediction_rule(run: LoadedRun, task: str, output: str) -> str:
    spec, scale = run.model.specs[task], run.model.cosine_scale(task)
    if output == "logits":
        return "argmax of the logits (softmax: class probabilities)"
    if spec.regression:
        return f"the score itself, on the label scale 0..{spec.label_max:g}"
    return f"score / {scale:g} > 0.5" if scale else "sigmoid(score) > 0.5"


def sample_inputs(run: LoadedRun, kind: str) -> dict[str, torch.Tensor]:
    """Token ids of two real sentences of different lengths (one padded), to trace and to check against PyTorch:
    `kind` "joint" (ids, mask, token types), "pair" (two sides of a bi-encoder) or "sentences" (ids, mask)."""
    t, mask = pad(run.tok.encode(["a gorgeous, witty, seductive movie.", "a tedious mess"], 32), run.tok.pad_id)
    if kind == "pair":
        return {
            "input_ids_a": t,
            "attention_mask_a": mask,
            "input_ids_b": t.flip(0),
            "attention_mask_b": mask.flip(0),
        }
    if kind == "sentences":
        return {"input_ids": t, "attention_mask": mask}
    return {"input_ids": t, "attention_mask": mask, "token_type_ids": torch.zeros_like(t)}


def onnx_file(graph: nn.Module, inputs: dict[str, torch.Tensor], path: Path, output: str) -> Path:
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", max=512)
    shapes = {k: {0: batch, 1: seq if not k.endswith("_b") else torch.export.Dim("seq_b", max=512)} for k in inputs}
    graph.eval()
    try:
        with warnings.catch_warnings():  # the exporter's notes on axis names and deprecations: not the user's concern
            warnings.simplefilter("ignore")
            torch.onnx.export(
                graph,
                tuple(inputs.values()),
                str(path),
                input_names=list(inputs),
                output_names=[output],
                dynamic_shapes=tuple(shapes.values()),
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    except ImportError as e:
        raise MinbertError(
            f"--format onnx needs the onnx and onnxscript packages ({e}): pip install 'minbert[export]'"
        ) from None
    check_onnx(graph, inputs, path)
    return path


def check_onnx(graph: nn.Module, inputs: dict[str, torch.Tensor], path: Path, tol: float = 1e-4) -> float | None:
    """Max |onnxruntime - PyTorch| on the sample inputs; refuses the export beyond `tol`. None without onnxruntime."""
    try:
        import onnxruntime
    except ImportError:
        log.warning("%s not checked against PyTorch: onnxruntime is not installed", path.name)
        return None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {k: v.numpy() for k, v in inputs.items()})[0])
    with torch.inference_mode():
        want = graph(*inputs.values()).float()
    diff = float((got - want).abs().max())
    if diff > tol:
        raise MinbertError(f"{path}: onnxruntime differs from PyTorch by {diff:.2e} (> {tol:g}); please report this")
    return diff


EXPORTERS: dict[str, Callable[[LoadedRun, Path, str | None], list[Path]]] = {
    "hf": export_hf,
    "sentence-transformers": export_sentence_transformers,
    "onnx": export_onnx,
}
