"""`compile: <backend>`: torch.compile each encoder layer, falling back to eager execution when compiling fails.

Layers rather than the whole model: the fused multitask pass, per-task passes and SMART's perturbed passes all
call the layers, so all of them get the compiled code; shapes vary with every length-bucketed batch, so the
layers are compiled with dynamic shapes. A backend that cannot be set up (unknown name, no C++ compiler for
inductor) logs a warning and leaves the layers eager; a graph that fails later runs eagerly too (dynamo's
suppress_errors), so a run never dies of compilation.
"""

from __future__ import annotations

import logging
import shutil

import torch

from minbert.torch_private import compile_falls_back_to_eager

log = logging.getLogger(__name__)


def compile_layers(bert, backend: str) -> bool:
    """True when the layers were handed to torch.compile."""
    if backend == "inductor" and not (shutil.which("c++") or shutil.which("g++")):
        log.warning("compile: inductor needs a C++ compiler on CPU and none is on PATH; running eagerly")
        return False
    if backend not in torch.compiler.list_backends(exclude_tags=()):
        log.warning(
            "compile: unknown backend %r (known: %s); running eagerly",
            backend,
            ", ".join(torch.compiler.list_backends()),
        )
        return False
    if not compile_falls_back_to_eager():
        log.warning("compile: this PyTorch cannot fall back to eager execution where a graph fails to compile")
    for layer in bert.encoder.layer:
        layer.compile(backend=backend, dynamic=True)
    log.info("compile: encoder layers compiled with %s", backend)
    return True
