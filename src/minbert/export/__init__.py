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
  predictions. Exported with `torch.onnx.export` from the textbook model (`fast.textbook`: no branch on the
  data) and checked against PyTorch with onnxruntime when it is installed.

PALs make each task's encoder different: runs with PALs export only as `onnx`. Per-task LoRA adapters do too, but
merge: with `hf` the top folder stays the shared encoder and OUT/adapters/<task>/ is each task's adapter as a PEFT
folder (`peft.PeftModel.from_pretrained(AutoModel.from_pretrained(OUT), OUT/adapters/<task>)`), while each task's
classifier folder and the `sentence-transformers` folder hold that task's encoder with its adapters merged in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from minbert.errors import MinbertError
from minbert.export.hf import classifier_refusal, export_hf
from minbert.export.onnx_files import check_int8_support, export_onnx
from minbert.export.sentence_transformers import export_sentence_transformers
from minbert.files import check_output, staged
from minbert.multitask.run import LoadedRun


def export(
    run: LoadedRun, out: Path, fmt: str, task: str | None = None, overwrite: bool = False, int8: bool = False
) -> list[Path]:
    """Write the run in format `fmt` under `out` (new or empty, or --overwrite); the paths written; `int8`: also
    ONNX Runtime int8 models (onnx only). Everything is written into a temporary sibling first and moved into `out`
    at the end: a refusal or a failure leaves `out` as it was."""
    if fmt not in EXPORTERS:
        raise MinbertError(f"--format {fmt!r}: valid are {', '.join(EXPORTERS)}")
    if int8 and fmt != "onnx":
        raise MinbertError(
            f"--int8 with --format {fmt}: only --format onnx writes int8 models (ONNX Runtime's); for int8 in "
            "PyTorch, give --precision int8 to predict or evaluate"
        )
    if task is not None and task not in run.cfg.tasks:
        raise MinbertError(f"--task {task}: this run was trained on {', '.join(run.cfg.tasks)}")
    if int8:
        check_int8_support()
    check_output(out, overwrite, "export")
    if run.model.pals is not None and fmt != "onnx":
        raise MinbertError(
            "this run has PALs, which make each task's encoder different from the shared one: export --format onnx"
        )
    if task is not None and fmt == "hf" and classifier_refusal(run, task):
        raise MinbertError(f"{task}: {classifier_refusal(run, task)}")
    run.model.eval()
    with staged(out) as tmp:
        written = export_onnx(run, tmp, task, int8=True) if int8 else EXPORTERS[fmt](run, tmp, task)
    return [out / p.relative_to(tmp) for p in written]


EXPORTERS: dict[str, Callable[[LoadedRun, Path, str | None], list[Path]]] = {
    "hf": export_hf,
    "sentence-transformers": export_sentence_transformers,
    "onnx": export_onnx,
}
