"""`minbert export RUN OUT --format sentence-transformers`: a folder `SentenceTransformer(OUT)` loads, giving
`minbert.load(RUN).embed(..., task)`'s embeddings, with a model card (see minbert.export)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from minbert.data import data_dir, split_file
from minbert.export.common import QUORA_NOTE, default_embedding_task, write_encoder, write_json
from minbert.model.heads import CosinePairHead
from minbert.multitask.run import LoadedRun
from minbert.runs import atomic_write_text, save_tensors


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
