"""The seam (model/fast): each CPU fast path computes what the textbook model computes, outputs and gradients; it
changes no parameter or name; with every private PyTorch API forced off the parity tests still pass; and the
textbook model stays a textbook."""

import ast
import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minbert import torch_private
from minbert.model import BertModel, fast
from minbert.model.bert import BertEncoder, BertSelfAttention
from minbert.model.fast import cpu, varlen
from minbert.model.fast.embedding_grad import GradBuffer
from minbert.optim import AdamW
from tests.helpers import QUIET_BERT, TINY_BERT
from tests.test_adamw import train_both

ROOT = Path(__file__).parents[1]
SRC = ROOT / "src" / "minbert"
REPLACEMENTS = [cpu.SelfAttention, cpu.Encoder, cpu.Dropout, cpu.WordEmbedding]
NEEDS = {cpu.Encoder: {cpu.SelfAttention}}  # the unpadding encoder hands flat tokens to attention


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, QUIET_BERT.vocab_size, (6, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[1:, 4:] = 0  # 35 padding tokens: enough for the CPU path to run them flat
    return ids, mask, torch.randn(6, 11, QUIET_BERT.hidden_size, generator=g)


def outputs_and_grads(model, ids, mask, up):
    model.zero_grad(set_to_none=True)
    out = model(ids, mask)
    real = mask.bool()
    ((out.last_hidden_state * up)[real].sum() + out.pooler_output.sum()).backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return out.last_hidden_state.detach()[real], grads


@pytest.mark.parametrize("only", [None, *REPLACEMENTS], ids=["all", *(c.__name__ for c in REPLACEMENTS)])
def test_each_cpu_path_gives_the_textbook_outputs_and_gradients(only):
    """Without dropout (the cheaper dropout draws its own masks: tests/test_dropout.py checks its distribution)."""
    torch.manual_seed(0)
    textbook = BertModel(QUIET_BERT).train()
    faster = copy.deepcopy(textbook)
    chosen = set(REPLACEMENTS) if only is None else {only, *NEEDS.get(only, ())}
    fast.install(faster, "cpu", without=frozenset(REPLACEMENTS) - chosen)
    assert {type(m) for m in faster.modules()} & set(REPLACEMENTS) == chosen
    for step in range(2):  # the second step: the reused gradient buffer's second use
        ids, mask, up = batch(step)
        a, ga = outputs_and_grads(textbook, ids, mask, up)
        b, gb = outputs_and_grads(faster, ids, mask, up)
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
        assert ga.keys() == gb.keys()
        for k in ga:
            assert torch.allclose(ga[k], gb[k], atol=1e-5), k


def test_installing_changes_no_parameter_and_textbook_puts_every_class_back():
    model = BertModel(TINY_BERT)
    params = dict(model.named_parameters())
    classes = {n: type(m) for n, m in model.named_modules()}
    fast.install(model, "cpu")
    assert dict(model.named_parameters()) == params  # the same objects under the same Hugging Face names
    assert type(model.encoder.layer[0].attention.self) is cpu.SelfAttention and type(model.encoder) is cpu.Encoder
    assert type(model.embeddings.word_embeddings) is cpu.WordEmbedding
    assert type(model.embeddings.position_embeddings) is torch.nn.Embedding  # by name: the word table only
    with fast.textbook(model):
        assert {n: type(m) for n, m in model.named_modules()} == classes
    assert type(model.encoder) is cpu.Encoder  # back after the context
    fast.install(model, "cuda")
    assert type(model.encoder) is varlen.Encoder and type(model.embeddings.dropout) is torch.nn.Dropout
    fast.install(model, None)
    assert {n: type(m) for n, m in model.named_modules()} == classes
    assert type(model.encoder) is BertEncoder and type(model.encoder.layer[0].attention.self) is BertSelfAttention


def test_adamw_and_the_gradient_buffer_without_private_apis():
    """Forced off: AdamW takes its public loop (the same step as torch.optim.AdamW) and the embedding backward
    allocates afresh (it cannot count its buffer's holders)."""
    w = torch.nn.Linear(8, 4).weight
    with torch_private.enabled(False):
        assert not torch_private.has_fused_adamw() and torch_private.storage_holders(w) == -1
        assert not AdamW([w]).param_groups[0]["fused"]
        kw = dict(lr=1e-3, eps=1e-6, weight_decay=0.01)
        assert train_both(kw, kw, 200) <= 1e-6
        pool = GradBuffer()
        first = pool.take(w)
        assert pool.take(w) is not first  # no reuse without a reference count
    assert torch_private.storage_holders(w) > 0 or not hasattr(torch._C, "_storage_Use_Count")


def test_the_parity_tests_pass_with_every_private_api_forced_off():
    env = {**os.environ, "MINBERT_PRIVATE_APIS": "off"}
    files = ["tests/test_model_parity.py", "tests/test_adamw.py", "tests/test_fused.py"]
    probe = "from minbert import torch_private as p; assert not p._ENABLED and not p.has_onednn_linear()"
    subprocess.run([sys.executable, "-c", probe], env=env, check=True)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider", *files],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def test_private_pytorch_apis_are_used_in_one_module_only():
    pattern = re.compile(r"torch\._(?!_)|torch\.ops\.|\b_C\._|/proc/cpuinfo")
    users = {p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py") if pattern.search(_code(p))}
    assert users == {"torch_private.py"}, users


def test_the_textbook_model_names_no_fast_path_and_reads_in_250_lines():
    text = (SRC / "model" / "bert.py").read_text()
    assert len(text.splitlines()) <= 250
    assert not re.search(r"varlen|onednn|SpeedPaths|packed|grad_buffer|is_grad_enabled|lora", text)


def test_no_function_in_the_package_is_over_60_lines():
    long = [
        f"{p.relative_to(SRC)}:{n.name} ({n.end_lineno - n.lineno + 1})"
        for p in SRC.rglob("*.py")
        for n in ast.walk(ast.parse(p.read_text()))
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 60
    ]
    assert not long, long


def _code(path: Path) -> str:
    """The file without its comments and docstrings (which may name what they avoid)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
        ):
            body[0] = ast.Pass()
    return ast.unparse(tree)
