"""`minbert export RUN OUT --format onnx [--int8]`: OUT/<task>.onnx for every task and OUT/embed.onnx, from the
static graph, checked against PyTorch with onnxruntime (see minbert.export).

`--int8` adds OUT/<task>.int8.onnx and OUT/embed.int8.onnx for ONNX Runtime: its BERT fusions first
(onnxruntime.transformers.optimizer, where its patterns match: the residual adds and LayerNorms become
SkipLayerNormalization; our written-out attention is not one of its patterns and stays as it is), then its dynamic
quantizer with int8 weights per output channel (activations quantized per batch at run time) - per channel, as in
minbert's own `--precision int8`, where a single scale per matrix cost the best recipe's dev 0.0072 overall against
0.0044 (benchmarks/RESULTS.md, "int8"; the ONNX Runtime files cost 0.0009-0.0024 there, by batching). The int8
files use ONNX Runtime's own operators (com.microsoft domain); each one's largest difference from PyTorch's fp32
outputs on the sample sentences is in minbert_export.json.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from minbert.data import pad
from minbert.errors import MinbertError
from minbert.export.common import copy_tokenizer, default_embedding_task, write_json
from minbert.model import fast
from minbert.model.heads import HEADS
from minbert.multitask.run import LoadedRun

log = logging.getLogger(__name__)


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


def export_onnx(run: LoadedRun, out: Path, task: str | None, int8: bool = False) -> list[Path]:
    written, manifest = [], {"tasks": {}}
    with fast.textbook(run.model):  # the reference modules: no branch on the data for the tracer to freeze
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
            if int8:
                manifest["tasks"][name]["int8"] = int8_file(graph, inputs, written[-1], run, written)
        embed_task = task or default_embedding_task(run)
        graph, inputs = EmbedGraph(run, embed_task), sample_inputs(run, "sentences")
        written.append(onnx_file(graph, inputs, out / "embed.onnx", "sentence_embedding"))
        manifest["embed"] = {"file": "embed.onnx", "task": embed_task, "pooling": run.cfg.task(embed_task).pooling}
        if int8:
            manifest["embed"]["int8"] = int8_file(graph, inputs, written[-1], run, written)
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


def check_int8_support() -> None:
    """Before anything is exported: --int8 needs the fp32 export's onnx and onnxscript and onnxruntime's fusions
    and quantizer, so a missing package is found before the fp32 files are written, not after."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
        from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: F401
        from onnxruntime.transformers.optimizer import optimize_model  # noqa: F401
    except ImportError as e:
        raise MinbertError(
            f"--int8 needs onnx, onnxscript and onnxruntime ({e}): pip install 'minbert[export]'"
        ) from None


def int8_file(graph: nn.Module, inputs: dict[str, torch.Tensor], path: Path, run: LoadedRun, written: list) -> dict:
    """`path` (an fp32 .onnx) fused and quantized into <name>.int8.onnx beside it (appended to `written`); its manifest
    entry: the file and its largest difference from PyTorch's fp32 output on the sample inputs."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.transformers.optimizer import optimize_model
    except ImportError as e:
        raise MinbertError(f"--int8 needs onnxruntime ({e}): pip install 'minbert[export]'") from None
    cfg = run.model.bert.config
    fused, q = path.with_suffix(".fused.onnx"), path.with_suffix(".int8.onnx")
    with quiet_onnxruntime():
        optimize_model(str(path), "bert", cfg.num_attention_heads, cfg.hidden_size).save_model_to_file(str(fused))
        quantize_dynamic(str(fused), str(q), weight_type=QuantType.QInt8, per_channel=True)
    fused.unlink()
    written.append(q)
    diff = check_onnx(graph, inputs, q, tol=None)
    log.info("%s: largest difference from PyTorch's fp32 output on the sample sentences %.3g", q.name, diff)
    return {"file": q.name, "max_abs_diff_on_samples": diff}


@contextlib.contextmanager
def quiet_onnxruntime():
    """onnxruntime's tools log their advice as warnings and print a note when their shape inference gives up (the
    fusions still run): neither is the user's concern."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


def check_onnx(graph: nn.Module, inputs: dict[str, torch.Tensor], path: Path, tol: float | None = 1e-4) -> float | None:
    """Max |onnxruntime - PyTorch| on the sample inputs; refuses the export beyond `tol` (None: only measures). None
    without onnxruntime."""
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
    if tol is not None and diff > tol:
        raise MinbertError(f"{path}: onnxruntime differs from PyTorch by {diff:.2e} (> {tol:g}); please report this")
    return diff
