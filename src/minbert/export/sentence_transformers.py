"""`minbert export RUN OUT --format sentence-transformers`: a folder `SentenceTransformer(OUT)` loads, giving
`minbert.load(RUN).embed(..., task)`'s embeddings, with a model card (see minbert.export)."""

from __future__ import annotations

import shutil
from pathlib import Path

from torch import nn

from minbert.data import data_dir, split_file
from minbert.errors import MinbertError
from minbert.export.common import QUORA_NOTE, default_embedding_task, write_encoder
from minbert.model.heads import CosinePairHead
from minbert.multitask.run import LoadedRun
from minbert.runs import atomic_write_text


def export_sentence_transformers(run: LoadedRun, out: Path, task: str | None) -> list[Path]:
    """Build the SentenceTransformer from sentence-transformers' own modules - a Transformer over the encoder folder
    the hf export writes, the task's Pooling, Dense layers for BERT's pooler and a cosine head's layers - and let
    the library save it, so its files are the ones the installed version writes and reads."""
    try:  # the module classes moved to sentence_transformer.modules in 5.4; `models` is its deprecated alias
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer
    except ModuleNotFoundError as e:
        if e.name != "sentence_transformers.sentence_transformer":
            raise MinbertError(
                "--format sentence-transformers needs the sentence-transformers package: pip install "
                "sentence-transformers"
            ) from None
        from sentence_transformers.models import Dense, Pooling, Transformer
    task = task or default_embedding_task(run)
    tcfg, hidden = run.cfg.task(task), run.model.bert.config.hidden_size
    encoder = write_encoder(run, out / ".encoder", {"architectures": ["BertModel"]}, task=task)
    modules: list[nn.Module] = [Transformer(str(encoder), max_seq_length=tcfg.max_length, do_lower_case=False)]
    modules.append(Pooling(hidden, pooling_mode="mean" if tcfg.pooling == "mean" else "cls"))
    dense: list[tuple[nn.Linear, nn.Module]] = []
    if tcfg.pooling == "pooler":
        dense.append((run.model.bert.pooler.dense, nn.Tanh()))
    head = run.model.heads[task]
    if isinstance(head, CosinePairHead):  # its learnable layers (linear, ReLU, dropout) come before the cosine
        dense += [(m, nn.ReLU()) for m in head.layers if isinstance(m, nn.Linear)]
    for linear, activation in dense:
        modules.append(
            Dense(
                linear.in_features,
                linear.out_features,
                activation_function=activation,
                init_weight=linear.weight.detach().float().clone(),
                init_bias=linear.bias.detach().float().clone(),
            )
        )
    model = SentenceTransformer(modules=modules, device="cpu", similarity_fn_name="cosine")
    model.save(str(out), create_model_card=False)
    shutil.rmtree(encoder)
    atomic_write_text(out / "README.md", model_card(run, task))
    return [out]


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
