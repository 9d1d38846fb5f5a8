"""The seam between the textbook BERT (model/bert.py) and the ways it runs faster on a device.

`install(module, device_type)` is called once, when a model is built for a device (multitask/run.py; a script that
builds a BertModel itself calls it the same way). It replaces modules of the textbook model by subclasses from this
package that compute the same values faster on that device, as transformers picks an attention class by name and
PEFT replaces layers: each module found in the device's table changes class in place - the same object, its
parameters and their Hugging Face names unchanged (as `torch.nn.utils.parametrize` does), so checkpoints, optimizers
and state dicts never notice. `install(module, None)` puts the textbook classes back. Only what a pass computes
faster changes, never what it computes: tests/test_fast_paths.py compares every path with the textbook model,
outputs and gradients.

- cpu: BertSelfAttention, BertEncoder, nn.Dropout and the word embedding table, by cpu.py's classes (built on
  varlen.py, dropout.py, embedding_grad.py);
- any other device: BertSelfAttention and BertEncoder by varlen.py's, the textbook modules that also take the fused
  multitask pass's flat tokens.

Inference copies (`inference_copy`: a bf16 copy of the weights, oneDNN's linear op) are this package's too.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from minbert.model.bert import BertEncoder, BertSelfAttention
from minbert.model.fast import cpu, onednn, varlen
from minbert.model.fast.cast import CastCopy, InferenceCopy

# per device type: {textbook class: its replacement}, and {a module's own name: replacement} for one module of a
# class used elsewhere too (the word table is an nn.Embedding like the position table)
BACKENDS: dict[str, tuple[dict[type[nn.Module], type[nn.Module]], dict[str, type[nn.Module]]]] = {
    "cpu": (
        {BertSelfAttention: cpu.SelfAttention, BertEncoder: cpu.Encoder, nn.Dropout: cpu.Dropout},
        {"word_embeddings": cpu.WordEmbedding},
    ),
    "other": ({BertSelfAttention: varlen.SelfAttention, BertEncoder: varlen.Encoder}, {}),
}
# every replacement -> the textbook class it replaces
TEXTBOOK = {new: old for by_class, _ in BACKENDS.values() for old, new in by_class.items()}
TEXTBOOK.update({new: nn.Embedding for _, by_name in BACKENDS.values() for new in by_name.values()})


def install(module: nn.Module, device_type: str | None, without: frozenset[type] = frozenset()) -> nn.Module:
    """`module` (and every module under it) with the fast paths of this device type (None: the textbook modules),
    except the replacements named in `without` (tests and benchmarks/bench_paths.py take them one at a time);
    returns it."""
    for name, m in module.named_modules():
        if type(m) in TEXTBOOK:
            m.__class__ = TEXTBOOK[type(m)]
        if device_type is None:
            continue
        by_class, by_name = BACKENDS["cpu" if device_type == "cpu" else "other"]
        new = by_name.get(name.rpartition(".")[2]) or by_class.get(type(m))
        if new is not None and TEXTBOOK[new] is type(m) and new not in without:
            m.__class__ = new
            getattr(m, "prepare", lambda: None)()  # a replacement's own state (cpu.WordEmbedding's buffer)
    return module


@contextlib.contextmanager
def textbook(module: nn.Module):
    """Within this context, `module` runs as the textbook model (export traces it: no branch on the data); its fast
    paths are put back after."""
    kinds = {m: type(m) for m in module.modules()}
    install(module, None)
    try:
        yield module
    finally:
        for m, kind in kinds.items():
            m.__class__ = kind


def takes_flat(module: nn.Module) -> bool:
    """Whether this encoder runs flat tokens with a Varlen layout (the fused multitask pass)."""
    return isinstance(module.encoder, varlen.Encoder)


def inference_copy(model: nn.Module, device: torch.device, dtype: torch.dtype | None) -> InferenceCopy | None:
    """The copy of `model` (its encoder, PALs and LoRA adapters) that CPU inference runs fastest from, or None for
    the model itself: in bf16 a copy of the weights in bf16 (cast.py), packed for oneDNN where bf16 is native; in
    fp32, on CPUs where MKL's fp32 GEMM is slow, the linear layers through oneDNN (onednn.py)."""
    if device.type != "cpu":
        return None
    if dtype is torch.bfloat16:
        return (onednn.PackedCopy if onednn.packs_bf16() else CastCopy)(model, ("bert", "pals", "lora"), dtype)
    if dtype is None and onednn.faster_here():
        return onednn.OneDNNCopy(model, ("bert", "pals"))
    return None
